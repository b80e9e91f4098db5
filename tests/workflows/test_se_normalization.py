"""SE across sessions with different receiver gains (``--se-normalization``).

A small phantom whose sessions have receiver gains from 0.8 to 1.25 (its AGuIX sessions have no
pre-contrast scan of their own, so their SE compares T1w images of two sessions).  With the
default ('auto') the post-contrast T1w of a cross-session pair is scaled to the pre-contrast one
in healthy brain: control regions show no SE, lesion SE matches the truth, and the scale found
is the phantom's gain ratio.  With 'off' the controls show the gain ratio as enhancement, which
is why the normalisation exists.  The concentration does not depend on it (M0 absorbs gain).
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_agquant.qmri.enhancement import intensity_scale
from bids_agquant.qmri.spgr import spgr_signal
from bids_agquant.workflows.participant import se_normalization_for

pytestmark = pytest.mark.slow

SEED = 31
ROOT = {}           # the fixture's folder (the truth, inputs and outputs of the runs)


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "sub-01" / "sub-01_desc-lesions_stats.tsv", sep="\t",
                       na_values="n/a", keep_default_na=False)


@pytest.fixture(scope="module")
def gain_runs(tmp_path_factory):
    from bids_agquant.bids.layout import build_plans
    from bids_agquant.cli.plugin import run_workflow
    from bids_agquant.config import Config
    from bids_agquant.simulate import load_truth, simulate_dataset
    from bids_agquant.workflows.participant import init_participant_wf

    root = tmp_path_factory.mktemp("gain")
    ROOT["dir"] = root
    simulate_dataset(root / "bids", truth_dir=root / "truth", preset="small", seed=SEED,
                     n_participants=1, gain_range=(0.8, 1.25))
    truth = load_truth(root / "truth")
    tables = {}
    for mode in ("auto", "off"):              # one work dir: the second run reuses the fits
        config = Config(bids_dir=root / "bids", output_dir=root / f"out_{mode}",
                        analysis_level="participant", work_dir=root / "work", nprocs=2,
                        se_normalization=mode)
        (plan,) = build_plans(config)
        run_workflow(init_participant_wf(plan, config), "MultiProc",
                     {"n_procs": 2, "poll_sleep_duration": 0.1, "raise_insufficient": False},
                     config.work_dir)
        tables[mode] = _table(root / f"out_{mode}")
    return truth, tables


def _gain(truth, session_id):
    return truth.participant("01")["sessions"][session_id.removeprefix("ses-")]["gain"]


def test_the_phantom_has_gains_that_differ_between_sessions(gain_runs):
    truth, _ = gain_runs
    gains = [s["gain"] for s in truth.participant("01")["sessions"].values()]
    assert max(gains) / min(gains) > 1.1


def test_scale_is_the_gain_ratio_across_sessions_and_one_within(gain_runs):
    truth, tables = gain_runs
    t = tables["auto"]
    for _, r in t.drop_duplicates("session_id").iterrows():
        if r.pre_session_id == r.session_id:
            assert r.se_intensity_scale == 1.0
        else:
            # the gain ratio, up to the T1w signal change of the sessions' B1 fields
            ratio = _gain(truth, r.session_id) / _gain(truth, r.pre_session_id)
            assert r.se_intensity_scale == pytest.approx(ratio, rel=0.01), r.session_id
    assert (tables["off"].se_intensity_scale == 1.0).all()


def _expected_control_se(root, truth, row, controls) -> float:
    """SE the phantom's physics gives a control region: the T1w signal of healthy tissue
    (truth T1, M0) under each session's gain and B1 field, the post divided by the scale the
    app found. Not 0: the sessions' B1 fields differ, and one scale cannot undo that
    everywhere (up to about 2 % at the edge of the brain in this phantom)."""
    roi = controls == int(row.lesion_id.split("-")[1])
    t1 = nib.load(root / "truth" / "sub-01" / "sub-01_T1map.nii.gz").get_fdata()[roi]
    m0 = nib.load(root / "truth" / "sub-01" / "sub-01_M0map.nii.gz").get_fdata()[roi]
    side = json.loads(next((root / "bids" / "sub-01" / "ses-D0" / "anat").glob("*_T1w.json"))
                      .read_text())
    mean = {}
    for key, ses in (("post", row.session_id), ("pre", row.pre_session_id)):
        b1 = nib.load(root / "truth" / "sub-01" / f"sub-01_{ses}_B1map.nii.gz").get_fdata()[roi]
        mean[key] = _gain(truth, ses) * spgr_signal(m0, t1, [side["FlipAngle"]],
                                                    side["RepetitionTime"], b1).mean()
    return 100.0 * (mean["post"] / row.se_intensity_scale - mean["pre"]) / mean["pre"]


def test_controls_show_no_enhancement_once_normalised(gain_runs):
    truth, tables = gain_runs
    auto, off = (tables[m][tables[m].region_type == "control"] for m in ("auto", "off"))
    assert (auto[auto.pre_session_id == auto.session_id].se_mean_percent.abs() < 1.0).all()
    cross_auto = auto[auto.pre_session_id != auto.session_id]
    assert len(cross_auto) >= 3
    controls = nib.load(next((ROOT["dir"] / "out_auto" / "sub-01" / "anat").glob(
        "*desc-controls_dseg.nii.gz"))).get_fdata()
    for _, r in cross_auto.iterrows():
        expected = _expected_control_se(ROOT["dir"], truth, r, controls)
        assert abs(expected) < 3.0
        assert r.se_mean_percent == pytest.approx(expected, abs=0.5), (r.session_id, r.lesion_id)
    # without the normalisation the controls show the gain ratio (and the same B1 effect)
    cross = off[off.pre_session_id != off.session_id]
    gains = [100 * (_gain(truth, s) / _gain(truth, p) - 1)
             for s, p in zip(cross.session_id, cross.pre_session_id)]
    expected = [_expected_control_se(ROOT["dir"], truth, r, controls)
                for _, r in cross.iterrows()]
    np.testing.assert_allclose(cross.se_mean_percent, expected, atol=0.5)
    np.testing.assert_allclose(expected, gains, atol=3.0)
    assert np.abs(gains).max() > 5.0


def test_lesion_se_matches_the_truth_and_concentration_ignores_the_mode(gain_runs):
    truth, tables = gain_runs
    t = tables["auto"]
    les = t[t.region_type == "lesion"].copy()
    les["truth_id"] = truth.match_lesions(
        "01", les[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy())
    m = les.merge(truth.lesion_table("01"), left_on=["truth_id", "session_id"],
                  right_on=["lesion_id", "session_id"], suffixes=("", "_true"))
    assert len(m) == len(truth.lesion_table("01"))
    big = m[m.measurable_true.astype(bool) & (m.se_percent >= 10.0)]
    assert len(big) >= 4 and (big.pre_session_id != big.session_id).any()
    err = 100 * (big.se_mean_percent - big.se_percent) / big.se_percent
    assert err.abs().max() < 10.0, big[["session_id", "lesion_id", "se_percent",
                                        "se_mean_percent"]]
    np.testing.assert_array_equal(tables["auto"].conc_mean_mM.to_numpy(),
                                  tables["off"].conc_mean_mM.to_numpy())


def test_intensity_scale_is_exact_for_a_gain_and_robust_to_enhancing_voxels():
    rng = np.random.default_rng(0)
    pre = rng.uniform(50, 500, size=(20, 20, 20))
    roi = np.ones(pre.shape, bool)
    assert intensity_scale(1.23 * pre, pre, roi) == pytest.approx(1.23, rel=1e-12)
    post = 1.23 * pre
    post.flat[rng.choice(post.size, post.size // 10, replace=False)] *= 3.0  # 10 % enhance
    assert intensity_scale(post, pre, roi) == pytest.approx(1.23, rel=0.1)
    small = np.zeros(pre.shape, bool)
    small.flat[:50] = True
    assert np.isnan(intensity_scale(post, pre, small))
    with pytest.raises(ValueError, match="resample"):
        intensity_scale(post, pre, roi[:-1])


def test_auto_scales_only_pairs_from_two_sessions():
    class S:
        def __init__(self, session):
            self.session = session
    assert se_normalization_for("auto", S("D1"), S("D0")) == "brain"
    assert se_normalization_for("auto", S("D0"), S("D0")) == "off"
    assert se_normalization_for("brain", S("D0"), S("D0")) == "brain"
    assert se_normalization_for("off", S("D1"), S("D0")) == "off"
    assert se_normalization_for("auto", S("D1"), None) == "off"
