"""End to end on a small phantom: the participant workflow against the phantom's truth.

The phantom (``bids_agquant.simulate``) is made with settings the pipeline was not tuned on
(seed 2026, motion up to 5 deg / 8 mm, oblique grids, B1 0.85-1.15); its grids are coarser than
the clinical protocol (T1w 2 mm, VFA 3 x 3 x 4 mm) to keep the test short, and the VFA SNR is
scaled with the voxel volume (40 at 2 x 2 x 3 mm -> 120 at 3 x 3 x 4 mm) so that the noise per
mm^3 is the clinical one.

Checks (issue "participant app", Done-when): measurable-lesion mean concentration vs the truth
at the VFA resolution (>= 20 mm within 10 %, 10-20 mm within 20 %) where the concentration is
quantifiable (the tolerance is at least 3 standard errors of the lesion mean; every measurable
state, quantifiable or not, within 4 standard errors of the truth), control regions below 0.005 mM,
diameters within 1.5 mm, measurable flags, SE within 10 % (where the true SE is >= 10 %); two runs give identical arrays; a
rerun with the same work dir recomputes nothing; names pass the BIDS schema; pybids indexes it.
"""
from __future__ import annotations

import fnmatch
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

VFA_VOXEL_MM = (3.0, 3.0, 4.0)
SE_FLOOR_PERCENT = 10.0


def _run(plan, config):
    from bids_agquant.cli.plugin import run_workflow
    from bids_agquant.workflows.participant import init_participant_wf

    wf = init_participant_wf(plan, config)
    run_workflow(wf, "MultiProc", {"n_procs": 2, "poll_sleep_duration": 0.1,
                                   "raise_insufficient": False}, config.work_dir)
    return wf


@pytest.fixture(scope="module")
def phantom_runs(tmp_path_factory):
    from bids_agquant.bids.layout import build_plans
    from bids_agquant.config import Config
    from bids_agquant.simulate import load_truth, simulate_dataset

    root = tmp_path_factory.mktemp("e2e")
    simulate_dataset(root / "bids", truth_dir=root / "truth", preset="sample", anatomy="geometric",
                     seed=2026, n_participants=1, motion_deg=5.0, motion_mm=8.0,
                     vfa_voxel_mm=VFA_VOXEL_MM, vfa_snr=120.0, identifying_fields=True)
    truth = load_truth(root / "truth")
    runs = []
    for name in ("a", "b"):
        config = Config(bids_dir=root / "bids", output_dir=root / f"out_{name}",
                        analysis_level="participant", work_dir=root / f"work_{name}", nprocs=2)
        (plan,) = build_plans(config)
        _run(plan, config)
        runs.append((plan, config))
    return truth, runs


def _table(config, participant="01"):
    return pd.read_csv(Path(config.output_dir) / f"sub-{participant}" /
                       f"sub-{participant}_desc-lesions_stats.tsv", sep="\t", na_values="n/a",
                       keep_default_na=False)


def _matched(truth, table):
    lesions = table[table.region_type == "lesion"].copy()
    lesions["truth_id"] = truth.match_lesions(
        "01", lesions[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy())
    tt = truth.lesion_table("01")
    merged = lesions.merge(tt, left_on=["truth_id", "session_id"],
                           right_on=["lesion_id", "session_id"], suffixes=("", "_true"))
    return merged


def test_every_truth_lesion_and_state_is_in_the_table(phantom_runs):
    truth, [(plan, config), _] = phantom_runs
    table = _table(config)
    merged = _matched(truth, table)
    tt = truth.lesion_table("01")
    assert len(merged) == len(tt), "some lesions or post-contrast states are missing"
    assert set(table.session_id) == {f"ses-{s.session}" for s in plan.post_states}
    controls = table[table.region_type == "control"]
    assert sorted(controls.lesion_id.unique()) == ["control-1", "control-2", "control-3"]
    assert controls.measurable.isna().all() and controls.longest_diameter_mm.isna().all()


def test_diameters_and_measurable_flags(phantom_runs):
    truth, [(_, config), _] = phantom_runs
    m = _matched(truth, _table(config))
    err = (m.longest_diameter_mm - m.axial_diameter_mm).abs()
    assert err.max() <= 1.5, m[["lesion_id", "longest_diameter_mm", "axial_diameter_mm"]]
    assert (m.measurable.astype(str).str.lower() == m.measurable_true.astype(str).str.lower()).all()


def _sem(m):
    """Standard error of a lesion mean concentration: sd / sqrt(lesion volume in VFA voxels)."""
    n_vfa = m.volume_mm3 / float(np.prod(VFA_VOXEL_MM))
    return m.conc_sd_mM / np.sqrt(np.maximum(n_vfa, 1.0))


def _quantifiable(m):
    """The tolerance (10 % at >= 20 mm, 20 % below) is at least 3 standard errors of the mean:
    below, noise alone breaks it (benchmarks/bench_accuracy.py uses the same rule)."""
    tol = np.where(m.axial_diameter_mm >= 20, 0.10, 0.20)
    return tol * m.conc_vfa_mM >= 3.0 * _sem(m)


def test_lesion_concentration_against_truth(phantom_runs):
    truth, [(_, config), _] = phantom_runs
    m = _matched(truth, _table(config))
    meas = m[m.measurable_true.astype(bool) & _quantifiable(m)]
    assert len(meas) >= 6, "too few quantifiable measurable lesion-states to test"
    rel = (meas.conc_mean_mM - meas.conc_vfa_mM).abs() / meas.conc_vfa_mM
    big = meas.axial_diameter_mm >= 20
    assert rel[big].max() <= 0.10, meas[big][["session_id", "lesion_id", "conc_mean_mM",
                                              "conc_vfa_mM"]]
    assert rel[~big].max() <= 0.20, meas[~big][["session_id", "lesion_id", "conc_mean_mM",
                                                "conc_vfa_mM"]]
    # every measurable lesion-state, quantifiable or not: no bias beyond 4 standard errors
    every = m[m.measurable_true.astype(bool)]
    z = (every.conc_mean_mM - every.conc_vfa_mM) / _sem(every)
    assert z.abs().max() <= 4.0, every.assign(z=z)[["session_id", "lesion_id", "z"]]
    # mg/L follows from mM through the agent's molar mass per Gd
    aguix = meas[meas.contrast_agent == "AGuIX"]
    np.testing.assert_allclose(aguix.conc_mean_mg_per_L, aguix.conc_mean_mM * 1000.0, rtol=1e-9)


def test_controls_show_no_gadolinium_and_no_enhancement(phantom_runs):
    _, [(_, config), _] = phantom_runs
    t = _table(config)
    controls = t[t.region_type == "control"]
    assert controls.conc_mean_mM.abs().max() < 0.005
    assert controls.se_mean_percent.abs().max() < 5.0


def test_signal_enhancement_against_truth(phantom_runs):
    truth, [(_, config), _] = phantom_runs
    m = _matched(truth, _table(config))
    # where the SE is at least 10 %: below, 10 % of it is under a percentage point, less than
    # the T1w noise of a 10-20 mm lesion mean at SNR 40 (day-8 residual enhancement)
    meas = m[m.measurable_true.astype(bool) & (m.se_percent >= SE_FLOOR_PERCENT)]
    assert len(meas) >= 6
    rel = (meas.se_mean_percent - meas.se_percent).abs() / meas.se_percent
    assert rel.max() <= 0.10, meas[["session_id", "lesion_id", "se_mean_percent", "se_percent"]]


def _maps(config):
    return sorted(Path(config.output_dir).rglob("sub-*/**/*.nii.gz"))


def test_two_runs_give_identical_arrays(phantom_runs):
    _, [(_, a), (_, b)] = phantom_runs
    maps_a, maps_b = _maps(a), _maps(b)
    rel = lambda ps, c: [p.relative_to(c.output_dir) for p in ps]  # noqa: E731
    assert rel(maps_a, a) == rel(maps_b, b) and len(maps_a) > 30
    for pa, pb in zip(maps_a, maps_b):
        da, db = np.asarray(nib.load(pa).dataobj), np.asarray(nib.load(pb).dataobj)
        assert np.array_equal(da, db, equal_nan=True), pa.name
    assert _table(a).equals(_table(b))
    for xa in Path(a.output_dir).rglob("*_xfm.mat"):
        assert xa.read_bytes() == (Path(b.output_dir) / xa.relative_to(a.output_dir)).read_bytes()


def test_rerun_with_the_same_work_dir_recomputes_nothing(phantom_runs):
    _, [(plan, config), _] = phantom_runs
    work = Path(config.work_dir)
    results = {p: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz")
               if "/ds_" not in str(p) and "lesion_table" not in str(p)}
    outputs = {p: p.stat().st_mtime_ns for p in _maps(config)}
    time.sleep(0.05)
    _run(plan, config)
    assert {p: p.stat().st_mtime_ns for p in results} == results   # cached nodes untouched
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs   # outputs up to date


def _schema_regexes():
    from bidsschematools import rules, schema

    sch = schema.load_schema()
    out = []
    for group in (sch.rules.files.common, sch.rules.files.raw, sch.rules.files.deriv):
        out += [re.compile(r"(?:.*/)?" + r["regex"])
                for r in rules.regexify_filename_rules(group, sch, level=2)]
    return out


def test_output_names_pass_the_schema_or_are_bidsignored(phantom_runs):
    pytest.importorskip("bidsschematools")
    _, [(_, config), _] = phantom_runs
    out = Path(config.output_dir)
    ignore = (out / ".bidsignore").read_text().split()
    regexes = _schema_regexes()
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files
    for p in files:
        rel = p.relative_to(out).as_posix()
        if any(fnmatch.fnmatch(p.name, pat) or rel.startswith(pat.rstrip("/") + "/")
               for pat in ignore):
            continue
        assert any(r.match("/" + rel) for r in regexes), rel


def test_pybids_indexes_the_output_as_derivatives_and_sidecars_are_clean(phantom_runs):
    from bids import BIDSLayout

    _, [(plan, config), _] = phantom_runs
    layout = BIDSLayout(config.bids_dir, derivatives=config.output_dir, validate=False)
    deriv = layout.derivatives.get_pipeline("bids_agquant")
    t1maps = deriv.get(suffix="T1map", space="T1w", extension=".nii.gz")
    assert len(t1maps) == sum(1 for s in plan.states if s.vfa is not None)
    conc = deriv.get(suffix="Conc", extension=".nii.gz")
    assert len(conc) == len(plan.post_states)
    meta = conc[0].get_metadata()
    assert meta["Units"] == "mM" and meta["Relaxivity"]["r1"] > 0
    assert meta["SpatialReference"].startswith("bids:raw:sub-01/")
    planted = [w for w in ("PatientName", "PatientBirthDate", "InstitutionName")
               if w in Path(str(plan.states[0].vfa.files[0]).replace(".nii.gz", ".json")).read_text()]
    assert planted, "the phantom should plant identifying fields in the input sidecars"
    for f in Path(config.output_dir).rglob("*.json"):
        text = f.read_text()
        for word in planted + ["AcquisitionDateTime"]:
            assert word not in text, f
    ref = nib.load(plan.reference_t1w)
    img = nib.load(t1maps[0].path)
    assert img.shape == ref.shape and np.allclose(img.affine, ref.affine, atol=1e-4)


def test_transforms_recover_the_phantom_head_motion(phantom_runs):
    """Every written transform (T1w -> reference, VFA -> T1w -> reference) matches the known
    head pose of its session: within 0.5 mm over a sphere of 60 mm radius around the head."""
    from bids_agquant.interfaces import geometry as G

    truth, [(plan, config), _] = phantom_runs
    ref = nib.load(plan.reference_t1w)
    centre = ref.affine[:3, :3] @ ((np.array(ref.shape[:3]) - 1) / 2) + ref.affine[:3, 3]
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((400, 3))
    pts = centre + 60.0 * pts / np.linalg.norm(pts, axis=1)[:, None]
    pts = np.c_[pts, np.ones(len(pts))]
    files = sorted(Path(config.output_dir).rglob("*_xfm.mat"))
    assert len(files) == sum(1 for s in plan.states if s.vfa is not None) + \
        sum(1 for s in plan.states if s.t1w is not None and s.t1w != plan.reference_t1w)
    for f in files:
        session = re.search(r"_ses-([A-Za-z0-9]+)_", f.name).group(1)
        est = G.ras_to_lps_matrix(G.read_transform(f))     # reference point -> native point
        pose = truth.pose("01", session)                    # world(session) = pose @ world(ref)
        err = np.linalg.norm((pts @ est.T - pts @ pose.T)[:, :3], axis=1)
        assert err.max() < 0.5, (f.name, err.max())


# ------------------------------------------------------ validator-clean, portable outputs

def test_the_bids_validator_finds_no_error_in_the_outputs(phantom_runs):
    from bids_agquant.bids import derivatives as D
    from testkit import run_bids_validator, undocumented_warnings

    _, [(_, config), _] = phantom_runs
    out = Path(config.output_dir)
    res = run_bids_validator(out)
    assert res.errors == [], res.errors
    assert res.code == 0
    assert undocumented_warnings(res) == [], "list them in docs/outputs.md with why they are left"
    # what the validator sees is the app's: README, the lines of .bidsignore, no stray folder
    assert (out / D.README_NAME).is_file()
    top = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert top - set(D.NON_BIDS_FOLDERS) == {"sub-01"}, top
    print("validator warnings:", res.warning_codes())


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n.startswith(".") and
                                             n not in (".bidsignore",)])
    return dst


def test_moving_the_outputs_keeps_every_link_resolvable(phantom_runs, tmp_path):
    """Every BIDS URI of every JSON sidecar (Sources, SpatialReference, PreContrastSources ...)
    names an existing file after the study folder (input + output) moves elsewhere, resolved the
    way the BIDS spec says (DatasetLinks relative to the dataset root); after the output folder
    alone moves, its own ``bids::`` links still resolve and the ``bids:raw:`` ones resolve once
    the input is put back beside it, never to the place it was made in."""
    from testkit import bids_uris, resolve_bids_uri, unresolved_links

    _, [(plan, config), _] = phantom_runs
    out, raw = Path(config.output_dir), Path(config.bids_dir)
    uris = [u for f in out.rglob("*.json") for u in bids_uris(json.loads(f.read_text()))]
    assert any(u.startswith("bids:raw:") for u in uris) and any(u.startswith("bids::")
                                                                 for u in uris)
    assert unresolved_links(out) == []

    study = tmp_path / "moved" / "study"                       # input and output together
    moved_out = _copy(out, study / out.name)
    _copy(raw, study / raw.name)
    assert unresolved_links(moved_out) == []
    for f in moved_out.rglob("*.json"):
        for u in bids_uris(json.loads(f.read_text())):
            assert study in resolve_bids_uri(u, moved_out).parents, (f, u)

    alone = _copy(out, tmp_path / "elsewhere" / "deep" / out.name)   # the output alone
    missing = unresolved_links(alone)
    assert missing and all(": bids:raw:" in m for m in missing), missing
    _copy(raw, alone.parent / raw.name)
    assert unresolved_links(alone) == []


def test_no_absolute_host_path_in_any_output(phantom_runs):
    from testkit import host_paths

    _, [(plan, config), _] = phantom_runs
    out = Path(config.output_dir)
    root = Path(config.bids_dir).parent
    assert host_paths(out, [root, config.bids_dir, config.work_dir, out]) == []
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetLinks"] == {"raw": "../bids"}
    assert desc["SourceDatasets"] == [{"URL": "../bids"}]


def test_pybids_with_the_ignore_list_indexes_only_bids_files(phantom_runs):
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer
    from bids_agquant.bids import derivatives as D

    _, [(plan, config), _] = phantom_runs
    out = Path(config.output_dir)
    layout = BIDSLayout(config.bids_dir, derivatives=out, validate=False,
                        indexer=BIDSLayoutIndexer(validate=False, ignore=D.pybids_ignore()))
    files = layout.derivatives.get_pipeline("bids_agquant").get()
    assert files
    for f in files:
        rel = Path(f.path).relative_to(out)
        assert rel.parts[0] not in D.NON_BIDS_FOLDERS and rel.suffix != ".html", rel
        assert rel.parts[0].startswith("sub-") or rel.name in (
            "dataset_description.json", D.README_NAME), rel


# ------------------------------------------------------------------------------------ site QA

def _qa(config, participant="01"):
    return pd.read_csv(Path(config.output_dir) / f"sub-{participant}" /
                       f"sub-{participant}_desc-qa_stats.tsv", sep="\t", na_values="n/a",
                       keep_default_na=False, dtype={"qa_flag": str})


def test_qa_table_of_a_clean_phantom_is_complete_and_raises_no_flag(phantom_runs):
    from bids_agquant.bids import columns as C
    from bids_agquant.qmri import qa

    _, [(plan, config), _] = phantom_runs
    df = _qa(config)
    assert list(df.columns) == list(C.columns(C.QA_TABLE))
    flagged = df[df.qa_flag == "true"]
    assert flagged.empty, flagged.to_dict("records")
    states = {(f"ses-{s.session}", s.agent_label or "pre") for s in plan.states}
    assert set(zip(df.session_id, df.contrast_state)) == states
    for ses, state in states:                       # every state has its T1, fit and SNR rows
        got = set(df[(df.session_id == ses) & (df.contrast_state == state)].metric)
        assert {"nawm_t1_s", "vfa_systematic_residual", "snr_t1w", "registration_ncc",
                "b1_p01", "b1_p99", "b1_noise_sd",
                "b1_anatomy_correlation"} <= got, (ses, state, got)
    base = f"ses-{plan.baseline_session}"
    assert set(df[df.metric == "nawm_r1_change"].session_id) == {
        f"ses-{s.session}" for s in plan.states if not s.is_post} - {base}
    # every registration of the run is scored: one vfa_to_t1w per state, one t1w_to_reference
    # per state whose T1w is not the reference
    n_reg = sum(1 for s in plan.states if s.vfa) + sum(
        1 for s in plan.states if s.t1w is not None and s.t1w != plan.reference_t1w)
    assert (df.metric == "registration_ncc").sum() == n_reg
    # the NAWM T1 is the phantom's white matter T1 (analytic head: 0.85-0.9 s at 3 T)
    assert df[df.metric == "nawm_t1_s"].value.between(0.8, 0.95).all()
    side = json.loads((Path(config.output_dir) / "sub-01" /
                       "sub-01_desc-qa_stats.json").read_text())
    assert side["FlaggedMetrics"] == []
    assert set(side["Thresholds"]) == set(qa.THRESHOLDS)
    assert {k: side[k] for k in C.columns(C.QA_TABLE)} == C.dictionary(C.QA_TABLE)


def test_qa_flags_planted_faults_on_their_sessions_only(phantom_runs, tmp_path):
    """One copy of the clean phantom with three faults in three sessions: the B1 map of the
    follow-up replaced by the baseline's, one flip angle of the AGuIX 2 h session 20 % off in
    its sidecar, and the AGuIX residual session's T1w with its noise SD doubled."""
    import shutil

    from bids_agquant.bids.layout import build_plans
    from bids_agquant.config import Config

    truth, [(plan, clean_config), _] = phantom_runs
    bids = tmp_path / "bids"
    shutil.copytree(clean_config.bids_dir, bids)
    sub = bids / "sub-01"
    sessions = [f"ses-{s}" for s in dict.fromkeys(s.session for s in plan.states)]
    base, h2, residual, follow = sessions
    shutil.copyfile(next((sub / base / "fmap").glob("*_TB1map.nii.gz")),
                    next((sub / follow / "fmap").glob("*_TB1map.nii.gz")))
    side = sorted((sub / h2 / "anat").glob("*_flip-2_VFA.json"))[0]
    meta = json.loads(side.read_text())
    meta["FlipAngle"] = 1.2 * float(meta["FlipAngle"])
    side.write_text(json.dumps(meta))
    t1w = next((sub / residual / "anat").glob("*_T1w.nii.gz"))
    img = nib.load(str(t1w))
    data = np.asarray(img.dataobj, dtype=np.float64)
    cfg = truth.meta["config"]
    sigma = float(cfg["signal_wm_counts"]) / float(cfg["snr"])
    noisy = np.abs(data + np.random.default_rng(3).normal(0, np.sqrt(3) * sigma, data.shape))
    t1w.unlink()
    nib.save(nib.Nifti1Image(np.round(noisy).astype(img.get_data_dtype()), img.affine,
                             img.header), str(t1w))
    config = Config(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                    work_dir=tmp_path / "work", nprocs=2)
    (faulty_plan,) = build_plans(config)
    _run(faulty_plan, config)
    df = _qa(config)
    flagged = df[df.qa_flag == "true"]
    hits = set(zip(flagged.session_id, flagged.metric))
    assert (follow, "nawm_r1_pattern") in hits, df[df.metric == "nawm_r1_pattern"]
    assert (h2, "vfa_systematic_residual") in hits
    assert (residual, "snr_t1w_relative") in hits
    assert set(flagged.session_id) <= {follow, h2, residual}, flagged.to_dict("records")
    clean = _qa(clean_config)
    assert clean[clean.qa_flag == "true"].empty
