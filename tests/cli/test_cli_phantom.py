"""The CLI's plan on a dataset written by the digital phantom (bids_agquant.simulate).

Settings the app was not written against: free-text session labels, a skipped session, B1 maps in
percent on their own coarser grid, lesion masks with a ``space-orig`` entity, planted identifying
sidecar fields. The plan must match the phantom's truth, and no identifying value may reach the
console or the log.
"""
from __future__ import annotations


import pytest

import tinybids as tb
from testkit import read_tsv, tree_state

SESSIONS = ["base", "inj", "late"]
IDENTIFYING = ("DOE^JANE", "NANORAD-01", "19580312")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("phantom")
    truth = simulate.simulate_dataset(
        root / "bids", preset="small", n_participants=2, sessions=SESSIONS,
        drop_sessions={"02": ("late",)}, b1_units="percent", b1_voxel_mm=(6.0, 6.0, 6.0),
        mask_space="orig", identifying_fields=True, seed=11)
    return root / "bids", truth


def test_plan_matches_the_phantom_truth(phantom, run_cli):
    ds, truth = phantom
    before = tree_state(ds)
    res = run_cli(ds, ds.parent / "out", "participant", "--print-plan")
    assert res.code == 0, res.err
    assert tree_state(ds) == before
    assert not (ds.parent / "out").exists()

    from bids_agquant.bids.layout import build_plans
    from bids_agquant.config import Config
    plans = {p.participant: p for p in build_plans(
        Config(bids_dir=ds, output_dir=ds.parent / "out", analysis_level="participant",
               work_dir=ds.parent / "work"))}
    assert sorted(plans) == ["01", "02"]
    protocol = truth.protocol
    specs = {s["label"]: s for s in truth.meta["config"]["sessions"]}
    for sub, plan in plans.items():
        expected_sessions = [s for s in SESSIONS if not (sub == "02" and s == "late")]
        assert list(plan.sessions) == expected_sessions
        assert plan.baseline_session == "base"
        for ses in expected_sessions:
            spec = specs[ses]
            assert (plan.state(ses, None) is not None) == spec["pre"]
            post = plan.state(ses, spec["agent"])
            assert post is not None and post.pre_session == ("base" if not spec["pre"] else ses)
        for st in plan.states:
            assert st.vfa.flip_angles_deg == tuple(protocol["vfa"]["flip_angles_deg"])
            assert st.vfa.tr_s == pytest.approx(protocol["vfa"]["tr_s"])
            assert st.vfa.field_strength_t == protocol["field_strength_t"]
            assert st.vfa.b1map is not None and st.vfa.b1_scale == 0.01     # percent, converted
        assert "_space-orig_" in plan.lesion_mask.path.name
        assert plan.lesion_mask.drawn_on == plan.reference_t1w
        row = next(r for r in read_tsv(ds / "participants.tsv")
                   if r["participant_id"] == f"sub-{sub}")
        assert plan.covariates["dose_mg_per_kg"] == float(row["dose_mg_per_kg"])
        assert plan.covariates["primary_tumor"] == row["primary_tumor"]


def test_identifying_fields_reach_neither_console_nor_plan(phantom, run_cli):
    ds, _ = phantom
    res = run_cli(ds, ds.parent / "out", "participant", "--print-plan", "-vvv")
    assert res.code == 0, res.err
    for value in IDENTIFYING:
        assert value not in res.out + res.err


def test_group_level_without_participant_outputs(phantom, run_cli, tmp_path):
    ds, _ = phantom
    res = run_cli(ds, tmp_path / "missing", "group")
    assert res.code == 66 and "run the participant level first" in res.first_err_line
    (tmp_path / "empty").mkdir()
    res = run_cli(ds, tmp_path / "empty", "group")
    assert res.code == 66 and "participant level" in res.first_err_line
    assert "Traceback" not in res.err
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["logs"]
