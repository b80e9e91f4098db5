"""Contrast state and session order from evidence, never from its absence (issue 13, items 2-3).

The traps a tester found converting real DICOM (dcm2niix + dcm2bids with one configuration for
every visit): no ``ce-``, no ``ContrastBolusAgent``, pre/post as ``run-01``/``run-02``, an agent in
free text, no ``acq_time`` in sessions.tsv. Each is a tiny dataset (tinybids.py) run through the
real CLI in-process (exit code, the one line naming the file and the fix, BIDS_DIR untouched) and
through ``build_plans``. Letter **E** in docs/robustness.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tinybids as tb  # noqa: E402
from testkit import run_checked  # noqa: E402

from bids_agquant.bids import evidence as E  # noqa: E402
from bids_agquant.bids.layout import build_plans, format_plan  # noqa: E402
from bids_agquant.config import Config  # noqa: E402
from bids_agquant.errors import BadDataError, MissingInputError  # noqa: E402

SHORT = {"D0": (True, ["Dotarem"], "2020-01-06T09:00:00"),
         "D1": (False, ["AGuIX"], "2020-01-07T11:00:00")}


def plans_of(ds: Path, **options):
    config = Config(bids_dir=ds, output_dir=ds.parent / "out", analysis_level="participant",
                    work_dir=ds.parent / "work", **options)
    return {p.participant: p for p in build_plans(config)}


def cli(run_cli, ds, *args, expect=0):
    """``--print-plan`` through the real CLI: exit code, no traceback, BIDS_DIR untouched."""
    return run_checked(run_cli, ds, "--print-plan", *args, expect=expect)


def strip_agent(ds, ses, agent, *, keep_sidecar=False):
    """As dcm2niix + one dcm2bids config: no ce- in the names, no agent in the sidecars."""
    anat = ds / "sub-01" / f"ses-{ses}" / "anat"
    for f in sorted(anat.iterdir()):
        if f"_ce-{agent}_" not in f.name:
            continue
        target = f.with_name(f.name.replace(f"_ce-{agent}_", "_"))
        f.rename(target)
        if target.suffix == ".json" and not keep_sidecar:
            tb.edit_json(target, ContrastBolusAgent=None, ContrastBolusIngredient=None)


def sessions_tsv(ds, rows, header=("session_id", "acq_time", "contrast_agent")):
    text = "\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    (ds / "sub-01" / "sub-01_sessions.tsv").write_text(text)


@pytest.fixture
def ds(tmp_path):
    return tb.make_dataset(tmp_path / "bids", sessions=SHORT, distractors=False)


# --- the agent from evidence ------------------------------------------------------------------

def test_unlabelled_aguix_visit_is_refused_not_read_as_pre_contrast(run_cli, ds):
    strip_agent(ds, "D1", "AGuIX")
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "sub-01/ses-D1: only pre-contrast images" in line and "nothing to quantify" in line
    assert "sub-01_ses-D1_T1w.nii.gz" in line
    assert "--session-agent D1=AGENT" in line and "contrast_agent" in line
    assert "--session-label" in line


def test_session_agent_option_labels_the_visit(run_cli, ds):
    strip_agent(ds, "D1", "AGuIX")
    res = cli(run_cli, ds, "--session-agent", "ses-D1=aguix")
    assert "ses-D1 AGuIX (agent AGuIX; pre: ses-D0)" in res.out
    assert "contrast evidence: --session-agent D1=aguix" in res.out
    plan = plans_of(ds, session_agents={"D1": "AGuIX"})["01"]
    st = plan.state("D1", "AGuIX")
    assert st.t1w.name == "sub-01_ses-D1_T1w.nii.gz" and len(st.vfa.files) == 3
    assert plan.state("D1", None) is None


def test_sessions_tsv_contrast_agent_column(ds):
    strip_agent(ds, "D1", "AGuIX")
    sessions_tsv(ds, [("ses-D0", "2020-01-06T09:00:00", "Dotarem"),
                      ("ses-D1", "2020-01-07T11:00:00", "AGuIX")])
    plan = plans_of(ds)["01"]
    # D0 keeps its pre-contrast state: an image of D0 names Dotarem (ce-Dotarem)
    assert [(s.session, s.agent) for s in plan.states] == [
        ("D0", None), ("D0", "Dotarem"), ("D1", "AGuIX")]
    assert "sub-01/sub-01_sessions.tsv contrast_agent 'AGuIX'" in plan.state("D1", "AGuIX").evidence
    # its outputs are named as post-contrast ones (ce-AGuIX), though its files carry no ce-
    from bids_agquant.workflows.participant import participant_outputs, state_label
    config = Config(bids_dir=ds, output_dir=ds.parent / "out", analysis_level="participant")
    names = participant_outputs(plan, config)[state_label(plan.state("D1", "AGuIX"))]
    assert names and all("_ce-AGuIX_" in p.name for p in names.values()), names


def test_sessions_tsv_and_option_that_disagree(run_cli, ds):
    strip_agent(ds, "D1", "AGuIX")
    sessions_tsv(ds, [("ses-D0", "2020-01-06T09:00:00", "Dotarem"),
                      ("ses-D1", "2020-01-07T11:00:00", "AGuIX")])
    line = cli(run_cli, ds, "--session-agent", "D1=Dotarem", expect=65).first_err_line
    assert "--session-agent D1=Dotarem contradicts" in line
    assert "sub-01_sessions.tsv contrast_agent 'AGuIX'" in line and "must agree" in line


def test_image_agent_contradicting_the_session(run_cli, ds):
    sessions_tsv(ds, [("ses-D0", "2020-01-06T09:00:00", "Dotarem"),
                      ("ses-D1", "2020-01-07T11:00:00", "n/a")])
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_" in line
    assert "ce-AGuIX names AGuIX but sub-01/sub-01_sessions.tsv contrast_agent 'n/a' says no agent" \
        in line


def test_unknown_agent_in_sessions_tsv(ds):
    sessions_tsv(ds, [("ses-D0", "", "Dotarem"), ("ses-D1", "", "Gadovist")])
    with pytest.raises(BadDataError, match=r"sessions.tsv \(ses-D1\): unknown contrast agent "
                                           r"'Gadovist'") as info:
        plans_of(ds)
    assert info.value.exit_code == 65 and "--relaxivity Gadovist=" in str(info.value)


def test_free_text_sidecar_agent_without_ce(run_cli, ds):
    strip_agent(ds, "D1", "AGuIX")
    for f in (ds / "sub-01/ses-D1/anat").glob("*.json"):
        tb.edit_json(f, ContrastBolusAgent="AGUIX 100 MG/KG IV")
    res = cli(run_cli, ds)
    assert "ses-D1 AGuIX (agent AGuIX; pre: ses-D0)" in res.out
    assert "contrast evidence: sidecar ContrastBolusAgent 'AGUIX 100 MG/KG IV'" in res.out


def test_sidecar_naming_an_unknown_agent(run_cli, ds):
    strip_agent(ds, "D1", "AGuIX")
    for f in (ds / "sub-01/ses-D1/anat").glob("*.json"):
        tb.edit_json(f, ContrastBolusAgent="GADOVIST 0.1 MMOL/KG")
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "sub-01/ses-D1/anat/sub-01_ses-D1_" in line
    image = line.split(".nii.gz:")[0].split()[-1]
    assert (f"ContrastBolusAgent 'GADOVIST 0.1 MMOL/KG' (in {image}.json) names no contrast agent "
            f"the registry knows") in line and "--relaxivity GADOVIST=" in line
    res = cli(run_cli, ds, "--relaxivity", "Gadovist=4.5")
    assert "(agent Gadovist; pre: ses-D0)" in res.out


def test_ce_and_sidecar_naming_different_agents(run_cli, ds):
    for f in (ds / "sub-01/ses-D1/anat").glob("*_ce-AGuIX_*.json"):
        tb.edit_json(f, ContrastBolusAgent="Dotarem")
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "ce-AGuIX is AGuIX but the sidecar's contrast fields name Dotarem" in line


def test_generic_ingredient_without_an_agent(run_cli, ds):
    strip_agent(ds, "D1", "AGuIX", keep_sidecar=True)
    for f in (ds / "sub-01/ses-D1/anat").glob("*.json"):
        tb.edit_json(f, ContrastBolusAgent=None)           # ContrastBolusIngredient GADOLINIUM
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "ContrastBolusIngredient 'GADOLINIUM' says post-contrast but names no agent" in line
    assert "--session-agent D1=AGENT" in line
    plan = plans_of(ds, session_agents={"D1": "AGuIX"})["01"]
    assert plan.state("D1", "AGuIX").vfa is not None and plan.state("D1", None) is None


def test_pre_and_post_as_runs_are_refused(run_cli, ds):
    """dcm2bids: the pre and post-Dotarem T1w of D0 as run-01 / run-02, neither labelled."""
    anat = ds / "sub-01/ses-D0/anat"
    for f in sorted(anat.iterdir()):
        run = "_run-02" if "_ce-Dotarem_" in f.name else "_run-01"
        target = f.with_name(f.name.replace("_ce-Dotarem_", "_").replace("sub-01_ses-D0_",
                                                                       f"sub-01_ses-D0{run}_"))
        f.rename(target)
        if target.suffix == ".json":
            tb.edit_json(target, ContrastBolusAgent=None, ContrastBolusIngredient=None)
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "several runs of one image for one state" in line
    assert "sub-01_ses-D0_run-01_T1w.nii.gz, sub-01_ses-D0_run-02_T1w.nii.gz" in line
    assert "ce-<agent>" in line
    # with sessions.tsv naming D0's agent, no D0 file names it: every D0 file is post-Dotarem,
    # none pre-contrast; refused (66), not guessed
    sessions_tsv(ds, [("ses-D0", "2020-01-06T09:00:00", "Dotarem"),
                      ("ses-D1", "2020-01-07T11:00:00", "AGuIX")])
    with pytest.raises(MissingInputError, match="no pre-contrast T1w or VFA in any session") as info:
        plans_of(ds)
    assert "files without ce- are post-contrast unless" in str(info.value)


def test_participant_without_post_contrast_state(run_cli, tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, [], "")}, distractors=False)
    line = cli(run_cli, ds, expect=66).first_err_line
    assert "sub-01: no post-contrast image in ses-D0" in line and "ce-<agent>" in line


def test_pre_and_post_in_one_session_keep_working(ds):
    """The baseline D0 pre + Dotarem and a D28 pre + Dotarem: unchanged by the new rules."""
    tb.write_state(ds, "01", "D28", None, seed=80)
    tb.write_state(ds, "01", "D28", "Dotarem", seed=90)
    sessions_tsv(ds, [("ses-D0", "2020-01-06T09:00:00", "Dotarem"),
                      ("ses-D1", "2020-01-07T11:00:00", "AGuIX"),
                      ("ses-D28", "2020-02-03T10:00:00", "Dotarem")])
    plan = plans_of(ds)["01"]
    assert [(s.session, s.agent, s.pre_session) for s in plan.states] == [
        ("D0", None, None), ("D0", "Dotarem", "D0"), ("D1", "AGuIX", "D0"),
        ("D28", None, None), ("D28", "Dotarem", "D28")]
    assert plan.state("D28", "Dotarem").evidence == "ce-Dotarem"


# --- baseline and order -----------------------------------------------------------------------

def two_baselines(tmp_path):
    """Two sessions with a pre-contrast T1w whose labels sort the wrong way, no sessions.tsv."""
    sessions = {"v2": (True, ["AGuIX"], ""), "v10": (True, ["Dotarem"], "")}
    return tb.make_dataset(tmp_path / "bids", sessions=sessions, sessions_tsv=False,
                           distractors=False)


def test_order_from_scans_tsv(tmp_path):
    ds = two_baselines(tmp_path)
    for ses, t in (("v2", "2021-05-09T10:00:00"), ("v10", "2021-05-01T10:00:00")):
        (ds / f"sub-01/ses-{ses}/sub-01_ses-{ses}_scans.tsv").write_text(
            f"filename\tacq_time\nanat/sub-01_ses-{ses}_T1w.nii.gz\t{t}\n")
    plan = plans_of(ds)["01"]
    assert plan.baseline_session == "v10" and plan.sessions == ("v10", "v2")
    assert plan.baseline_reason.endswith("acq_time in scans.tsv")
    assert plan.session_order == "acq_time in scans.tsv"
    assert not any("--baseline-session" in w for w in plan.warnings)


def test_order_from_sidecar_acquisition_datetime(run_cli, tmp_path):
    ds = two_baselines(tmp_path)
    for ses, day in (("v2", "2021-05-09"), ("v10", "2021-05-01")):
        for f in (ds / f"sub-01/ses-{ses}/anat").glob("*.json"):
            tb.edit_json(f, AcquisitionDate=day, AcquisitionTime="10:00:00.000000")
    for f in (ds / "sub-01/ses-v10/anat").glob("*.json"):           # DateTime wins
        tb.edit_json(f, AcquisitionDateTime="2021-05-02T08:00:00.000000")
    res = cli(run_cli, ds)
    assert "baseline ses-v10" in res.out
    assert f"session order: {E.SOURCE_SIDECARS}" in res.out
    assert "--baseline-session" not in res.out


def test_sessions_tsv_wins_over_scans_tsv_and_sidecars(tmp_path):
    ds = two_baselines(tmp_path)
    (ds / "sub-01/sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-v2\t2021-05-01T10:00:00\nses-v10\t2021-05-09T10:00:00\n")
    for f in (ds / "sub-01/ses-v2/anat").glob("*.json"):
        tb.edit_json(f, AcquisitionDateTime="2021-06-01T10:00:00")
    plan = plans_of(ds)["01"]
    assert plan.baseline_session == "v2" and plan.session_order == "acq_time in sessions.tsv"


def test_label_order_only_last_with_the_reason(run_cli, tmp_path):
    ds = two_baselines(tmp_path)
    for f in (ds / "sub-01/ses-v2/anat").glob("*.json"):   # a time without a date orders nothing
        tb.edit_json(f, AcquisitionTime="10:00:00.000000")
    res = cli(run_cli, ds)
    assert "baseline ses-v2" in res.out
    assert "none has an acquisition time (sessions.tsv or scans.tsv acq_time, sidecar " \
           "AcquisitionDateTime): baseline ses-v2 by label order; pass --baseline-session" in res.out
    assert "session order: session label order" in res.out


def test_trial_plan_text_says_why(ds):
    plan = plans_of(ds)["01"]
    text = format_plan(plan, ds)
    assert "  baseline: the only session with a pre-contrast T1w" in text
    assert "  session order: acq_time in sessions.tsv" in text
    assert "contrast evidence: ce-AGuIX" in text
    assert "contrast evidence: no ce- and no agent in the sidecar" in text


def test_missing_input_classes(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, [], "")}, distractors=False)
    with pytest.raises(MissingInputError) as info:
        plans_of(ds)
    assert info.value.exit_code == 66


def test_sample_dataset_plan_is_unchanged():
    """data/sample_bids (ce- entities, sidecar agents, sessions.tsv contrast_agent and acq_time):
    the same states, pairs and (no) warnings as before evidence was required."""
    ds = Path(__file__).resolve().parents[2] / "data" / "sample_bids"
    plans = plans_of(ds)
    for p in ("01", "02"):
        plan = plans[p]
        assert plan.baseline_session == "D0" and plan.warnings == ()
        assert [(s.session, s.agent, s.pre_session) for s in plan.states] == [
            ("D0", None, None), ("D0", "Dotarem", "D0"), ("D1", "AGuIX", "D0"),
            ("D8", "AGuIX", "D0"), ("D28", None, None), ("D28", "Dotarem", "D28")]
        assert plan.session_order == "acq_time in sessions.tsv"
        assert plan.state("D1", "AGuIX").evidence == "ce-AGuIX"
        assert plan.state("D0", None).evidence == (
            f"no ce- and no agent in the sidecar (sub-{p}/sub-{p}_sessions.tsv contrast_agent "
            f"'Dotarem': the agent of the other files of ses-D0)")


def test_sidecar_naming_two_agents(run_cli, ds):
    for f in (ds / "sub-01/ses-D1/anat").glob("*.json"):
        tb.edit_json(f, ContrastBolusAgent="AGuIX and Dotarem")
    line = cli(run_cli, ds, expect=65).first_err_line
    assert "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_" in line
    assert "the sidecar names several contrast agents (AGuIX, Dotarem)" in line


@pytest.mark.parametrize("args, words", [
    (("--session-agent", "D1"), "is not SES=AGENT"),
    (("--session-agent", "D1=AGuIX", "--session-agent", "ses-D1=Dotarem"),
     "--session-agent D1 given twice with different agents"),
    (("--session-agent", "../D1=AGuIX"), "BIDS labels hold letters and digits only")])
def test_session_agent_usage_errors(run_cli, ds, args, words):
    res = run_cli(ds, ds.parent / "out", "participant", "--print-plan", *args)
    assert res.code == 64 and words in res.err


def test_session_agent_for_a_session_that_does_not_exist(ds):
    plan = plans_of(ds, session_agents={"D5": "AGuIX"})["01"]
    assert any("--session-agent D5=...: sub-01 has no ses-D5; ignored" in w for w in plan.warnings)
