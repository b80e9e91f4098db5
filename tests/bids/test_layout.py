"""The input plan: pybids queries -> ParticipantPlan (baseline, states, pairs, B1, masks, covariates).

Small datasets written with nibabel (tests/cli/tinybids.py); pybids and nibabel run for real.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
import tinybids as tb  # noqa: E402

from bids_agquant.bids.layout import build_plans, format_plan  # noqa: E402
from bids_agquant.errors import BadDataError, MissingInputError  # noqa: E402
from bids_agquant.config import Config  # noqa: E402


def plans_of(ds: Path, **options):
    config = Config(bids_dir=ds, output_dir=ds.parent / "out", analysis_level="participant",
                    work_dir=ds.parent / "work", **options)
    return {p.participant: p for p in build_plans(config)}


def summary(plan):
    """[(session, agent, pre_session, has T1w, n flip angles)] in plan order."""
    return [(s.session, s.agent, s.pre_session, s.t1w is not None,
             len(s.vfa.files) if s.vfa else 0) for s in plan.states]


def test_trial_dataset_plan(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", participants=("01", "02"))
    plans = plans_of(ds)
    assert sorted(plans) == ["01", "02"]
    plan = plans["01"]
    assert plan.baseline_session == "D0"
    assert plan.reference_t1w == ds / "sub-01/ses-D0/anat/sub-01_ses-D0_T1w.nii.gz"
    assert summary(plan) == [
        ("D0", None, None, True, 3), ("D0", "Dotarem", "D0", True, 3),
        ("D1", "AGuIX", "D0", True, 3), ("D8", "AGuIX", "D0", True, 3),
        ("D28", "Dotarem", "D0", True, 3)]
    assert plan.sessions == ("D0", "D1", "D8", "D28")          # chronological, not alphabetical
    vfa = plan.state("D1", "AGuIX").vfa
    assert vfa.flip_angles_deg == tb.FLIP_ANGLES and vfa.tr_s == tb.TR_S
    assert vfa.field_strength_t == 3.0 and vfa.b1_scale == 1.0
    assert vfa.b1map == ds / "sub-01/ses-D1/fmap/sub-01_ses-D1_TB1map.nii.gz"
    assert plan.lesion_mask.kind == "mask" and plan.lesion_mask.session == "D0"
    assert plan.lesion_mask.drawn_on == plan.reference_t1w
    assert plan.covariates == {"dose_mg_per_kg": 50.0, "weight_kg": 70.5, "primary_tumor": "NSCLC"}
    assert plans["02"].covariates["primary_tumor"] == "melanoma"
    # distractors (FLAIR, T2starw, DWI) never enter the plan
    every = [str(f) for s in plan.states for f in ([s.t1w] + list(s.vfa.files if s.vfa else []))]
    assert not [f for f in every if "FLAIR" in f or "T2starw" in f or "dwi" in f]
    assert plan.warnings == ()
    text = format_plan(plan, ds)
    assert "ses-D8 AGuIX (agent AGuIX; pre: ses-D0)" in text and "TR 15 ms" in text


def test_free_text_session_labels_and_acq_time_order(tmp_path):
    sessions = {  # labels that sort the wrong way alphabetically
        "week1": (False, ["AGuIX"], "2021-03-10T10:00:00"),
        "screening": (True, ["Dotarem"], "2021-03-01T08:00:00"),
        "injection": (False, ["AGuIX"], "2021-03-02T14:00:00"),
    }
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions)
    plan = plans_of(ds)["01"]
    assert plan.baseline_session == "screening"
    assert plan.sessions == ("screening", "injection", "week1")
    assert plan.state("week1", "AGuIX").pre_session == "screening"


def test_earliest_pre_contrast_session_is_the_baseline(tmp_path):
    sessions = {"A": (True, ["AGuIX"], "2021-05-02T10:00:00"),
                "B": (True, ["Dotarem"], "2021-05-01T10:00:00")}
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions)
    assert plans_of(ds)["01"].baseline_session == "B"
    plan = plans_of(ds, baseline_session="A")["01"]
    assert plan.baseline_session == "A"
    assert plan.reference_t1w.name == "sub-01_ses-A_T1w.nii.gz"
    assert plan.sessions[0] == "A"


def test_without_acq_time_the_first_label_wins_with_a_warning(tmp_path):
    sessions = {"v10": (True, ["AGuIX"], ""), "v2": (True, ["Dotarem"], "")}
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions, sessions_tsv=False)
    plan = plans_of(ds)["01"]
    assert plan.baseline_session == "v2"                      # natural order: v2 < v10
    assert any("--baseline-session" in w for w in plan.warnings)


def test_same_session_pre_first_else_baseline_pre(tmp_path):
    sessions = {"D0": (True, ["Dotarem"], "2020-01-06T09:00:00"),
                "D1": (True, ["AGuIX"], "2020-01-07T11:00:00"),      # phase 2: pre in session
                "D8": (False, ["AGuIX"], "2020-01-14T10:00:00")}
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions)
    plan = plans_of(ds)["01"]
    assert plan.state("D1", "AGuIX").pre_session == "D1"
    assert plan.pre_state_for(plan.state("D1", "AGuIX")) == plan.state("D1", None)
    assert plan.state("D8", "AGuIX").pre_session == "D0"
    assert plan.state("D0", "Dotarem").pre_session == "D0"


def test_same_session_pre_without_vfa_falls_back_to_baseline(tmp_path):
    sessions = {"D0": (True, ["Dotarem"], "2020-01-06T09:00:00"),
                "D1": (False, ["AGuIX"], "2020-01-07T11:00:00")}
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions)
    tb.write_state(ds, "01", "D1", None, vfa=False, seed=40)       # a pre T1w only
    plan = plans_of(ds)["01"]
    assert plan.state("D1", None).vfa is None
    assert plan.state("D1", "AGuIX").pre_session == "D0"          # the baseline has the VFA


def test_missing_session_is_skipped_with_a_warning(tmp_path):
    sessions = dict(tb.TRIAL_SESSIONS)
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions)
    import shutil
    shutil.rmtree(ds / "sub-01" / "ses-D8")                        # the patient skipped D8
    plan = plans_of(ds)["01"]
    assert plan.sessions == ("D0", "D1", "D28")
    assert any("ses-D8 is listed in sub-01_sessions.tsv but has no folder" in w
               for w in plan.warnings)


def test_session_without_images_is_skipped(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions=dict(tb.TRIAL_SESSIONS))
    for f in (ds / "sub-01/ses-D8/anat").iterdir():
        if "_T1w" in f.name or "_VFA" in f.name:
            f.unlink()
    plan = plans_of(ds)["01"]
    assert "D8" not in plan.sessions
    assert any("ses-D8 has no T1w or VFA image; skipped" in w for w in plan.warnings)


def test_agent_synonyms_and_sidecar_agents(tmp_path):
    sessions = {"D0": (True, [], "2020-01-06T09:00:00"), "D1": (False, [], "2020-01-07T09:00:00")}
    ds = tb.make_dataset(tmp_path / "bids", sessions=sessions)
    tb.write_state(ds, "01", "D0", "gadoterate", seed=50)          # a synonym of Dotarem
    tb.write_state(ds, "01", "D1", "GdDOTA", seed=60, vfa=False)
    # a post-contrast T1w without ce- whose sidecar names the agent (heudiconv-style run-2)
    f = tb.write_nifti(ds / "sub-01/ses-D1/anat/sub-01_ses-D1_acq-post_T1w.nii.gz",
                       tb.textured(tb.T1W_SHAPE, 70))
    tb.write_json(tb.sidecar(f), {"ContrastBolusAgent": "AGuIX", "MagneticFieldStrength": 3})
    plan = plans_of(ds)["01"]
    st = plan.state("D0", "Dotarem")
    assert st is not None and st.agent_label == "gadoterate"
    assert plan.state("D1", "Dotarem").agent_label == "GdDOTA"
    aguix = plan.state("D1", "AGuIX")
    assert aguix.t1w == f and aguix.vfa is None and aguix.agent_label == "AGuIX"


def test_unknown_agent_resolved_by_relaxivity_option(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Gadovist"], "")})
    with pytest.raises(BadDataError, match="unknown contrast agent 'Gadovist'") as info:
        plans_of(ds)
    assert info.value.exit_code == 65
    plan = plans_of(ds, relaxivity_overrides={"gadovist": 4.5})["01"]   # case-insensitive
    assert plan.state("D0", "gadovist").agent_label == "Gadovist"


def test_b1_intended_for_and_off(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")}, b1=False)
    fmap = ds / "sub-01/ses-D0/fmap"
    for name, target in (("acq-pre", "ses-D0/anat/sub-01_ses-D0_flip-1_VFA.nii.gz"),
                         ("acq-post", "bids::sub-01/ses-D0/anat/sub-01_ses-D0_ce-Dotarem_flip-2_VFA.nii.gz")):
        f = tb.write_nifti(fmap / f"sub-01_ses-D0_{name}_TB1map.nii.gz",
                           np.full(tb.VFA_SHAPE, 1.0, np.float32), tb.vfa_affine())
        tb.write_json(tb.sidecar(f), {"IntendedFor": [target]})
    plan = plans_of(ds)["01"]
    assert plan.state("D0", None).vfa.b1map.name == "sub-01_ses-D0_acq-pre_TB1map.nii.gz"
    assert plan.state("D0", "Dotarem").vfa.b1map.name == "sub-01_ses-D0_acq-post_TB1map.nii.gz"
    plan = plans_of(ds, b1_correction="off")["01"]
    assert all(s.vfa.b1map is None for s in plan.states)


def test_vfa_sorted_by_flip_angle_not_by_index(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")})
    tb.write_state(ds, "01", "D0", None, flip_angles=(15.0, 2.0, 8.0))
    vfa = plans_of(ds)["01"].state("D0", None).vfa
    assert vfa.flip_angles_deg == (2.0, 8.0, 15.0)
    assert [f.name for f in vfa.files] == [f"sub-01_ses-D0_flip-{i}_VFA.nii.gz" for i in (2, 3, 1)]


def test_several_runs_of_one_state_are_refused(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")})
    anat = ds / "sub-01/ses-D0/anat"
    for run in (1, 2):
        f = tb.write_nifti(anat / f"sub-01_ses-D0_run-{run}_T1w.nii.gz", tb.textured(tb.T1W_SHAPE, run))
        tb.write_json(tb.sidecar(f), {})
    for f in anat.glob("sub-01_ses-D0_T1w.*"):
        f.unlink()
    with pytest.raises(BadDataError, match="several runs of one image for one state") as info:
        plans_of(ds)
    assert "sub-01_ses-D0_run-1_T1w.nii.gz, sub-01_ses-D0_run-2_T1w.nii.gz" in str(info.value)
    assert "ce-<agent>" in str(info.value) and info.value.exit_code == 65


def test_lesion_mask_sources(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")})
    # a dseg beside the binary mask is preferred (explicit lesion labels)
    tb.write_lesion_mask(ds / "derivatives" / "masks", "01", "D0", kind="dseg")
    plan = plans_of(ds)["01"]
    assert plan.lesion_mask.kind == "dseg"
    assert any("several lesion masks" in w for w in plan.warnings)
    # an explicit --lesion-masks folder elsewhere
    other = tb.write_lesion_mask(tmp_path / "elsewhere", "01", "D0")
    plan = plans_of(ds, lesion_masks_dir=tmp_path / "elsewhere")["01"]
    assert plan.lesion_mask.path == other


def test_our_own_outputs_are_never_read_as_lesion_masks(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")}, lesion_mask=False)
    ours = ds / "derivatives" / "agquant"
    tb.write_lesion_mask(ours, "01", "D0")
    tb.write_json(ours / "dataset_description.json",
                  {"Name": "x", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                   "GeneratedBy": [{"Name": "bids_agquant"}]})
    plan = plans_of(ds)["01"]
    assert plan.lesion_mask is None
    assert any("no lesion mask" in w for w in plan.warnings)


def test_mask_named_for_another_session_but_on_the_baseline_grid(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, [], "2020-01-01"),
                                                     "D1": (False, ["AGuIX"], "2020-01-02")},
                         lesion_mask=False)
    odd = tb.t1w_affine()
    odd[:3, 3] += 3.0
    tb.write_state(ds, "01", "D1", "AGuIX", seed=9)
    tb.write_nifti(ds / "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_T1w.nii.gz",
                   tb.textured(tb.T1W_SHAPE, 9), odd)                   # D1 on its own grid
    tb.write_lesion_mask(ds / "derivatives" / "m", "01", "D1")         # on the D0 grid
    plan = plans_of(ds)["01"]
    assert plan.lesion_mask.session == "D0"
    assert plan.lesion_mask.drawn_on == plan.reference_t1w
    assert any("named for ses-D1 but on the grid of" in w for w in plan.warnings)


def test_covariates_are_an_allow_list(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")})
    (ds / "participants.tsv").write_text(
        "participant_id\tPatientName\tdose_mg_per_kg\tweight_kg\tage\tsex\tprimary_tumor\n"
        "sub-01\tDoe^John\t30\t80\t61\tM\tbreast\n")
    cov = plans_of(ds)["01"].covariates
    assert cov == {"dose_mg_per_kg": 30.0, "weight_kg": 80.0, "age": 61.0,
                   "primary_tumor": "breast", "sex": "M"}


def test_participant_and_session_filters(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", participants=("01", "02"), distractors=False)
    plans = plans_of(ds, participant_labels=("02",), session_labels=("D8",))
    assert list(plans) == ["02"]
    # the baseline pre-contrast state is kept as the reference; only D8 is quantified
    assert summary(plans["02"]) == [("D0", None, None, True, 3), ("D8", "AGuIX", "D0", True, 3)]


def test_dataset_without_sessions_is_refused(tmp_path):
    ds = tmp_path / "bids"
    tb.write_json(ds / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    tb.write_nifti(ds / "sub-01/anat/sub-01_T1w.nii.gz", tb.textured(tb.T1W_SHAPE))
    with pytest.raises(MissingInputError, match="not inside ses-<label> folders"):
        plans_of(ds)


def test_uncompressed_nifti_and_inherited_sidecars(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["Dotarem"], "")}, b1=False)
    anat = ds / "sub-01/ses-D0/anat"
    for f in anat.glob("*_VFA.nii.gz"):                 # .nii instead of .nii.gz
        tb.write_nifti(f.with_name(f.name[:-3]), tb.textured(tb.VFA_SHAPE), tb.vfa_affine())
        f.unlink()
    for f in anat.glob("*_VFA.json"):                   # TR inherited from a top-level sidecar
        tb.edit_json(f, RepetitionTimeExcitation=None)
    tb.write_json(ds / "VFA.json", {"RepetitionTimeExcitation": 0.02})
    vfa = plans_of(ds)["01"].state("D0", None).vfa
    assert vfa.tr_s == 0.02 and all(f.suffix == ".nii" for f in vfa.files)


def test_plans_are_frozen_contracts(tmp_path):
    ds = tb.make_dataset(tmp_path / "bids", sessions={"D0": (True, ["AGuIX"], "")})
    plan = plans_of(ds)["01"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.baseline_session = "x"
    assert [s.key for s in plan.states] == ["D0_pre", "D0_AGuIX"]


def test_participant_without_usable_images_is_skipped_with_a_warning(tmp_path, caplog):
    ds = tb.make_dataset(tmp_path / "bids", participants=("01",), sessions={"D0": (True, ["Dotarem"], "")})
    flair = tb.write_nifti(ds / "sub-03/ses-D0/anat/sub-03_ses-D0_FLAIR.nii.gz",
                           tb.textured(tb.T1W_SHAPE))
    assert flair.exists()
    assert list(plans_of(ds)) == ["01"]
    assert "sub-03 has no T1w or VFA image" in caplog.text
    with pytest.raises(MissingInputError, match="sub-03: no T1w or VFA image in any session"):
        plans_of(ds, participant_labels=("03",))
