"""Site QA metrics (qmri/qa.py) on analytic arrays, the ISMRM 2020 human T1s and phantom images.

Seeds: analytic images 7 and 8 (no threshold was set on them). The thresholds themselves were set
on the sample dataset (seed 2020) and are checked on other phantoms in benchmarks/bench_qa.py.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from bids_agquant.interfaces import geometry as G
from bids_agquant.interfaces.registration import registration_quality
from bids_agquant.qmri import geometry as PG
from bids_agquant.qmri import qa
from bids_agquant.qmri.spgr import spgr_signal
from bids_agquant.qmri.uncertainty import image_noise_sd
from bids_agquant.qmri.vfa import VFAModel
from evaldata import REPO, require_eval


def _grid(shape):
    return np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")


def _ismrm_wm_medians(name):
    path = require_eval("ismrm2020_t1_challenge", name)
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for col in row:
                if "(WM)" in col:
                    v = np.array(row[col].strip("[] ").split(), dtype=float)
                    if v.size:
                        out.append(float(np.median(v)) / 1000.0)
    return np.array(out)


def test_ismrm_2020_human_white_matter_t1_lies_in_the_3t_range():
    meds = _ismrm_wm_medians("3T_human_T1maps_database.csv")
    assert meds.size > 20
    t = qa.threshold_for("nawm_t1_s", 3.0)
    inside = np.mean([not qa.flagged(m, t) for m in meds])
    # every site's genu/splenium median is a correct measurement: none may be flagged
    assert inside == 1.0, (np.sort(meds)[:3], np.sort(meds)[-3:])
    # the range is not so wide that it cannot flag: T1 of grey matter / CSF at 3 T are flagged
    assert qa.flagged(1.6, t) and qa.flagged(4.0, t) and qa.flagged(0.4, t)
    lo, hi = qa.threshold_for("nawm_t1_s", 1.5), t
    assert lo.low < hi.low and lo.high < hi.high          # T1 grows with the field
    assert qa.threshold_for("nawm_t1_s", 1.4).high == lo.high
    assert qa.threshold_for("nawm_t1_s", 2.89).high == hi.high


def test_nawm_is_pure_white_matter_away_from_lesions():
    shape = (40, 40, 30)
    z, y, x = _grid(shape)
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    brain = r < 0.9
    wm_prob = np.clip((0.6 - np.abs(r - 0.45)) * 6, 0, 1)      # pure WM in a shell
    lesion = np.zeros(shape, bool)
    lesion[20, 30, 15] = True
    nawm = qa.nawm_mask(wm_prob, brain, lesion, spacing_mm=(1.0, 1.0, 1.0))
    assert nawm.sum() > 500
    assert wm_prob[nawm].min() >= qa.NAWM_MIN_PROBABILITY
    d = ndimage.distance_transform_edt(~lesion)
    assert d[nawm].min() > qa.LESION_MARGIN_MM
    # anisotropic voxels: the margin is in mm
    nawm2 = qa.nawm_mask(wm_prob, brain, lesion, spacing_mm=(1.0, 1.0, 3.0))
    d2 = ndimage.distance_transform_edt(~lesion, sampling=(1.0, 1.0, 3.0))
    assert d2[nawm2].min() > qa.LESION_MARGIN_MM
    t1 = np.where(nawm, 0.85, 3.0)
    assert qa.nawm_t1_median(t1, nawm) == pytest.approx(0.85)
    assert math.isnan(qa.nawm_t1_median(t1, np.zeros(shape, bool)))


def test_r1_change_and_pattern_separate_a_global_shift_from_a_b1_pattern():
    shape = (48, 48, 32)
    z, y, x = _grid(shape)
    nawm = (np.sqrt(x ** 2 + y ** 2 + z ** 2) < 0.8)
    rng = np.random.default_rng(7)
    r0 = 1.15 * (1 + rng.normal(0, 0.05, shape))
    noisy = 1.15 * (1 + rng.normal(0, 0.05, shape))
    sp = (2.0, 2.0, 3.0)
    assert abs(qa.r1_change(noisy, r0, nawm)) < 0.005
    clean_pattern = qa.r1_pattern(noisy, r0, nawm, sp)
    # a uniform 10 % rise (blood pool after contrast) changes R1 but leaves no pattern
    shifted = 1.10 * noisy
    assert qa.r1_change(shifted, r0, nawm) == pytest.approx(0.10, abs=0.01)
    assert qa.r1_pattern(shifted, r0, nawm, sp) == pytest.approx(clean_pattern, rel=1e-6)
    # a B1 error of +/-5 % (R1 ~ B1^2 error of +/-10 %) along x leaves a pattern
    b1_err = 1 + 0.05 * x
    patterned = noisy * b1_err ** 2
    assert qa.r1_pattern(patterned, r0, nawm, sp) > 3 * clean_pattern
    assert qa.flagged(qa.r1_pattern(patterned, r0, nawm, sp), qa.THRESHOLDS["nawm_r1_pattern"])
    assert abs(qa.r1_change(patterned, r0, nawm)) < 0.01        # no global shift
    assert math.isnan(qa.r1_pattern(noisy, r0, np.zeros(shape, bool), sp))


def test_r1_pattern_takes_off_the_noise_of_a_coarse_noisy_map():
    """Spatially correlated noise (a coarse VFA map resampled onto a finer grid) makes the raw
    quadratic wander; the metric takes the noise's own spread off, and still sees a pattern."""
    shape = (56, 56, 40)
    z, y, x = _grid(shape)
    nawm = (np.sqrt(x ** 2 + y ** 2 + z ** 2) < 0.8)
    sp = (3.0, 3.0, 3.0)
    t = qa.THRESHOLDS["nawm_r1_pattern"]
    rng = np.random.default_rng(11)

    def coarse_noise(sd):      # noise on a grid 2 x coarser per axis, repeated onto this one
        n = rng.normal(0, sd, tuple(s // 2 for s in shape))
        return np.repeat(np.repeat(np.repeat(n, 2, 0), 2, 1), 2, 2)

    r0 = 1.15 * (1 + coarse_noise(0.15))
    noisy = 1.15 * (1 + coarse_noise(0.15))
    ratio, ok = qa._ratio(noisy, r0, nawm)
    terms = qa._quadratic_terms(np.argwhere(ok) * np.asarray(sp))
    raw = qa._half_spread(terms @ np.linalg.lstsq(terms, ratio[ok], rcond=None)[0],
                          np.median(ratio[ok]))
    got = qa.r1_pattern(noisy, r0, nawm, sp)
    assert got < raw and not qa.flagged(got, t), (raw, got)
    # a B1 error of +/-4 % along x (R1 +/-8 %) in the same noise: flagged, and close to the
    # noiseless pattern's spread
    pattern = (1 + 0.04 * x) ** 2
    clean = qa.r1_pattern(1.15 * pattern, np.full(shape, 1.15), nawm, sp)
    with_noise = qa.r1_pattern(noisy * pattern, r0, nawm, sp)
    assert qa.flagged(with_noise, t) and with_noise == pytest.approx(clean, rel=0.25)


def test_b1_statistics_smooth_noisy_anatomical_and_out_of_range():
    shape = (40, 40, 24)
    z, y, x = _grid(shape)
    head = (x ** 2 + y ** 2 + z ** 2) < 0.8
    smooth = 1.0 + 0.15 * x - 0.1 * y ** 2
    rng = np.random.default_rng(8)
    # an "anatomy": blobs of tissue contrast at the scale of a few voxels
    anatomy = 1000 * (1 + 0.3 * np.sign(np.sin(9 * x) * np.sin(7 * y) * np.sin(11 * z)))
    anatomy_seen = anatomy + rng.normal(0, 20, shape)
    m = qa.b1_statistics(smooth, head, anatomy_seen)
    assert set(m) == {"b1_p01", "b1_p99", "b1_noise_sd", "b1_anatomy_correlation"}
    assert not any(qa.flagged(m[k], qa.THRESHOLDS[k]) for k in m), m
    assert m["b1_p01"] == pytest.approx(np.percentile(smooth[head], 1))
    assert m["b1_noise_sd"] < 0.005
    # the noise estimate is the factor's voxel noise SD (white noise of known SD)
    for sd in (0.01, 0.03, 0.08):
        got = qa.b1_statistics(smooth + rng.normal(0, sd, shape), head)["b1_noise_sd"]
        assert got == pytest.approx(sd, rel=0.1), (sd, got)
    very_noisy = qa.b1_statistics(smooth + rng.normal(0, 0.08, shape), head, anatomy_seen)
    assert qa.flagged(very_noisy["b1_noise_sd"], qa.THRESHOLDS["b1_noise_sd"])
    # noise, however strong, does not follow the anatomy
    assert not qa.flagged(very_noisy["b1_anatomy_correlation"],
                          qa.THRESHOLDS["b1_anatomy_correlation"])
    # an anatomical image given as the B1 map (scaled to a plausible range), or a map that
    # carries the anatomy: flagged by the correlation, whatever its sign
    for wrong in (1 + 0.2 * (anatomy / 1000 - 1), 1 - 0.2 * (anatomy / 1000 - 1),
                  smooth + 0.1 * (anatomy / 1000 - 1)):
        got = qa.b1_statistics(wrong, head, anatomy_seen)
        assert qa.flagged(got["b1_anatomy_correlation"],
                          qa.THRESHOLDS["b1_anatomy_correlation"]), got
    percent_by_mistake = qa.b1_statistics(smooth * 100, head)
    assert qa.flagged(percent_by_mistake["b1_p99"], qa.THRESHOLDS["b1_p99"])
    assert qa.flagged(qa.b1_statistics(smooth * 0.5, head)["b1_p01"], qa.THRESHOLDS["b1_p01"])
    assert "b1_anatomy_correlation" not in qa.b1_statistics(smooth, head)


def _vfa(fa, seed, snr=40.0, shape=(20, 20, 10)):
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(0.7, 1.6, shape)
    s = spgr_signal(np.full(shape, 1000.0), t1, fa, 0.006)
    return s + rng.normal(0, s.max() / snr, s.shape)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_vfa_systematic_residual_flags_one_flip_angle_20_percent_off(k):
    fa = np.array([2.0, 5.0, 10.0, 15.0])
    s = _vfa(fa, seed=7)
    ok = np.ones(s.shape[:3], bool)
    t = qa.THRESHOLDS["vfa_systematic_residual"]
    fit = VFAModel(fa, 0.006).fit(s)
    clean = qa.vfa_systematic_residual(s, fit.predict(), fit.valid & ok)
    assert not qa.flagged(clean, t), clean
    wrong = fa.copy()
    wrong[k] *= 1.2
    fit = VFAModel(wrong, 0.006).fit(s)
    faulty = qa.vfa_systematic_residual(s, fit.predict(), fit.valid & ok)
    assert qa.flagged(faulty, t), (clean, faulty)


def test_vfa_systematic_residual_ignores_noise_level():
    fa = np.array([2.0, 5.0, 10.0, 15.0])
    t = qa.THRESHOLDS["vfa_systematic_residual"]
    for snr in (15.0, 40.0, 200.0):
        s = _vfa(fa, seed=8, snr=snr)
        fit = VFAModel(fa, 0.006).fit(s)
        assert not qa.flagged(qa.vfa_systematic_residual(s, fit.predict(), fit.valid), t), snr


def test_snr_of_an_image_and_its_halving():
    shape = (40, 40, 30)
    z, y, x = _grid(shape)
    head = (x ** 2 + y ** 2 + z ** 2) < 0.8
    clean = np.where(head, np.where(x > 0, 400.0, 250.0), 0.0)
    rng = np.random.default_rng(7)
    a = clean + rng.normal(0, 10.0, shape)
    b = clean + rng.normal(0, 20.0, shape)
    bright = head & (x > 0.1)
    sa = qa.snr(a, bright, image_noise_sd(a, head))
    sb = qa.snr(b, bright, image_noise_sd(b, head))
    assert sa == pytest.approx(40.0, rel=0.1)
    assert sb / sa == pytest.approx(0.5, rel=0.1)
    assert qa.flagged(sb / np.median([sa, sa, sb]), qa.THRESHOLDS["snr_t1w_relative"])
    assert not qa.flagged(sa / np.median([sa, sa, sb]), qa.THRESHOLDS["snr_t1w_relative"])
    assert math.isnan(qa.snr(a, bright, 0.0))


def test_registration_ncc_of_phantom_t1w_images_flags_15_degrees():
    """The sample dataset's post-contrast T1w of ses-D1 against the reference, through the
    transform ANTs finds and through that transform 15 deg off (about each axis)."""
    from bids_agquant.interfaces.registration import register_rigid
    anat = REPO / "data" / "sample_bids" / "sub-02"
    ref, r_aff, _ = G.load(anat / "ses-D0" / "anat" / "sub-02_ses-D0_T1w.nii.gz")
    mov, m_aff, _ = G.load(anat / "ses-D8" / "anat" / "sub-02_ses-D8_ce-AGuIX_T1w.nii.gz")
    matrix = register_rigid(ref, r_aff, mov, m_aff, seed=42)
    t = qa.THRESHOLDS["registration_ncc"]
    good = registration_quality(ref, r_aff, mov, m_aff, matrix)
    assert not qa.flagged(good, t), good
    head = qa.head_mask_for_registration(ref)
    centre = PG.voxel_to_world(np.argwhere(head).mean(axis=0), r_aff) * [-1, -1, 1]
    for axis in range(3):
        bad = registration_quality(ref, r_aff, mov, m_aff,
                                   matrix @ PG.rotation_about(15.0, axis, centre))
        assert qa.flagged(bad, t), (axis, bad)
    identical = qa.registration_ncc(ref, ref)
    assert identical == pytest.approx(1.0)


def test_docs_qa_table_is_generated_from_the_thresholds():
    doc = (REPO / "docs" / "qa.md").read_text()
    assert qa.thresholds_markdown() in doc


def test_flagged_treats_missing_as_flagged():
    t = qa.THRESHOLDS["snr_t1w"]
    assert qa.flagged(None, t) and qa.flagged(float("nan"), t)
    assert not qa.flagged(1e6, t)               # no upper limit
    assert json.dumps(qa.thresholds_markdown())
