"""Robust numerics (issue 6, part 4): the core fed arbitrary finite and non-finite numbers.

Property-based (hypothesis) tests of the qmri functions the VFA property tests do not cover:
signal enhancement, delta R1 / concentration / mass concentration / %ID/g / SE bound / SPGR
inversion, lesion labelling, diameters, ROI statistics, control regions and the cohort statistics.
Inputs are any float64 (NaN, +-Inf, subnormals, +-1.8e308), so the properties are:

- no exception (except the documented configuration errors: a non-positive relaxivity, a flip
  angle outside (0, 180), no room for a control region);
- NaN exactly where the quantity is undefined (documented in each function);
- where it is defined and the inputs lie in the range images hold (float32: |x| < 3.4e38, no
  subnormals), the value is finite and equals the formula computed independently here.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bids_agquant.qmri import cohort as K
from bids_agquant.qmri import concentration as C
from bids_agquant.qmri import enhancement as E
from bids_agquant.qmri import lesions as L
from bids_agquant.qmri.relaxivity import get_relaxivity

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ANY = st.floats(allow_nan=True, allow_infinity=True)
#: what a float32 image can hold (zero, or |x| in [1e-30, 3e38]), plus NaN and +-Inf
IMAGE = st.one_of(st.just(0.0), st.floats(1e-30, 3e38), st.floats(-3e38, -1e-30),
                  st.sampled_from([np.nan, np.inf, -np.inf]))
SIZE = st.integers(0, 12)


def arrays(n, elements=ANY):
    return hnp.arrays(np.float64, n, elements=elements)


def image_range(*xs) -> bool:
    """All finite values of the inputs are zero or of float32 magnitude."""
    for x in xs:
        a = np.abs(np.asarray(x, float))
        a = a[np.isfinite(a) & (a > 0)]
        if a.size and (a.min() < 1e-30 or a.max() > 3e38):
            return False
    return True


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with floating-point warnings silenced: overflow on extreme inputs is not what
    these properties are about (exceptions and a wrong NaN/non-NaN pattern are)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def same_nan(a, b):
    """Equal, NaN where the other is NaN (relative tolerance for the arithmetic order)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-12, atol=0)


# ------------------------------------------------------------------------- enhancement

@SETTINGS
@given(n=SIZE, data=st.data())
def test_voxel_se_nan_exactly_where_undefined(n, data):
    post, pre = data.draw(arrays(n)), data.draw(arrays(n))
    se = quiet(E.signal_enhancement_percent, post, pre)
    assert se.shape == (n,) and se.dtype == np.float64
    undefined = ~(np.isfinite(post) & np.isfinite(pre) & (pre > 0))
    assert np.isnan(se[undefined]).all()
    if image_range(post, pre):
        with np.errstate(all="ignore"):
            expected = np.where(undefined, np.nan, 100.0 * (post - pre) / pre)
        same_nan(se, expected)
        assert np.isfinite(se[~undefined]).all()


@SETTINGS
@given(n=SIZE, data=st.data())
def test_roi_se_nan_exactly_where_undefined(n, data):
    post, pre = data.draw(arrays(n, IMAGE)), data.draw(arrays(n, IMAGE))
    roi = data.draw(hnp.arrays(np.bool_, n))
    se = quiet(E.roi_signal_enhancement_percent, post, pre, roi)
    assert isinstance(se, float)
    sel = roi & np.isfinite(post) & np.isfinite(pre)
    if not sel.any() or not pre[sel].mean() > 0:
        assert math.isnan(se)
    else:
        expected = 100.0 * (post[sel].mean() - pre[sel].mean()) / pre[sel].mean()
        assert math.isfinite(se) and se == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------- concentration

@SETTINGS
@given(n=SIZE, data=st.data())
def test_delta_r1_nan_where_a_rate_is_not_a_real_r1(n, data):
    post, pre = data.draw(arrays(n)), data.draw(arrays(n))
    d = quiet(C.delta_r1, post, pre)
    valid = np.isfinite(post) & np.isfinite(pre) & (post > 0) & (pre > 0)
    with np.errstate(all="ignore"):
        same_nan(d, np.where(valid, post - pre, np.nan))


@SETTINGS
@given(n=SIZE, data=st.data(), r1=st.floats(0.1, 100.0))
def test_concentration_and_mass_nan_only_where_delta_r1_is_not_finite(n, data, r1):
    d = data.draw(arrays(n, IMAGE))
    conc = quiet(C.concentration_mM, d, r1)
    same_nan(conc, np.where(np.isfinite(d), d / r1, np.nan))
    rel = get_relaxivity("AGuIX", 3.0)
    mass = quiet(C.mg_per_L_from_mM, conc, rel)
    same_nan(mass, np.where(np.isfinite(d), d / r1 * rel.mg_per_L_per_mM_gd, np.nan))


@pytest.mark.parametrize("r1", [0.0, -4.5, np.nan, np.inf, [1.0, 2.0]])
def test_concentration_with_a_relaxivity_that_is_not_positive_is_a_clear_error(r1):
    with pytest.raises(ValueError, match=r"relaxivity"):
        C.concentration_mM(np.ones(3), r1)


@SETTINGS
@given(n=SIZE, data=st.data())
def test_percent_injected_dose_nan_where_dose_weight_or_density_unusable(n, data):
    c = data.draw(arrays(n))
    dose, weight, rho = data.draw(ANY), data.draw(ANY), data.draw(ANY)
    out = quiet(C.percent_injected_dose_per_gram, c, dose, weight, rho)
    usable = all(math.isfinite(v) and v > 0 for v in (dose, weight, rho))
    valid = np.isfinite(c) & usable
    assert np.isnan(np.asarray(out)[~valid]).all()
    if usable and image_range(c) and image_range([dose, weight, rho]) and \
            1e-30 < dose * weight * rho < 1e30:
        same_nan(out, np.where(valid, 100.0 * c / 1000.0 / rho / (dose * weight), np.nan))


@SETTINGS
@given(n=SIZE, data=st.data())
def test_se_bound_nan_without_a_positive_slope(n, data):
    se = data.draw(arrays(n, IMAGE))
    slope = data.draw(IMAGE)
    out = quiet(C.se_upper_bound_concentration, se, slope)
    valid = np.isfinite(se) & math.isfinite(slope) & (slope > 0)
    with np.errstate(all="ignore"):
        same_nan(out, np.where(valid, se / slope, np.nan))


FLIP = st.floats(0.5, 89.0)
TR = st.floats(1e-3, 0.1)


@SETTINGS
@given(n=SIZE, data=st.data(), fa=FLIP, tr=TR)
def test_spgr_inversion_gives_a_positive_rate_or_nan(n, data, fa, tr):
    s, m0, b1 = data.draw(arrays(n)), data.draw(arrays(n)), data.draw(arrays(n))
    r1 = np.asarray(quiet(C.spgr_signal_to_r1, s, m0, fa, tr, b1))
    assert r1.shape == (n,)
    ok = ~np.isnan(r1)
    assert np.isfinite(r1[ok]).all() and (r1[ok] > 0).all()
    undefined = ~(np.isfinite(s) & np.isfinite(m0) & np.isfinite(b1)) | (s <= 0) | (m0 <= 0) \
        | (b1 <= 0)
    assert np.isnan(r1[undefined]).all()


@SETTINGS
@given(n=SIZE, data=st.data(), fa=FLIP, tr=TR)
def test_spgr_m0_nan_where_baseline_t1_or_b1_unusable(n, data, fa, tr):
    s0, t1, b1 = data.draw(arrays(n)), data.draw(arrays(n)), data.draw(arrays(n))
    m0 = np.asarray(quiet(C.spgr_m0_from_baseline, s0, t1, fa, tr, b1))
    assert m0.shape == (n,)
    undefined = ~(np.isfinite(s0) & np.isfinite(t1) & np.isfinite(b1)) | (t1 <= 0) | (b1 <= 0)
    assert np.isnan(m0[undefined]).all()
    assert np.isfinite(m0[~np.isnan(m0)]).all()


@SETTINGS
@given(t=st.integers(2, 6), data=st.data(), fa=FLIP, tr=TR)
def test_signal_to_concentration_on_arbitrary_time_courses(t, data, fa, tr):
    sig = data.draw(hnp.arrays(np.float64, (3, t), elements=ANY))
    t1 = data.draw(arrays(3))
    b1 = data.draw(arrays(3))
    n_baseline = data.draw(st.integers(1, t))
    n_skip = data.draw(st.integers(0, n_baseline - 1))
    conc = np.asarray(quiet(C.spgr_signal_to_concentration, sig, fa, tr, t1, 4.5, n_baseline,
                            n_skip=n_skip, b1=b1))
    assert conc.shape == (3, t)
    bad_voxel = ~np.isfinite(t1) | (t1 <= 0) | ~np.isfinite(b1) | (b1 <= 0)
    assert np.isnan(conc[bad_voxel]).all()
    assert np.isfinite(conc[~np.isnan(conc)]).all()


@pytest.mark.parametrize("fa, tr", [(0.0, 0.01), (180.0, 0.01), (np.nan, 0.01), (10.0, 0.0),
                                    (10.0, -1.0), (10.0, np.inf)])
def test_spgr_inversion_with_impossible_acquisition_is_a_clear_error(fa, tr):
    with pytest.raises(ValueError, match=r"flip angle|repetition time"):
        C.spgr_signal_to_r1(np.ones(2), np.ones(2), fa, tr)


# ------------------------------------------------------------------------- lesions

SHAPE3 = st.tuples(*[st.integers(1, 6)] * 3)


@SETTINGS
@given(shape=SHAPE3, data=st.data())
def test_label_lesions_on_arbitrary_masks(shape, data):
    img = data.draw(hnp.arrays(np.float64, shape, elements=ANY))
    labels, ids = L.label_lesions(img, "mask")
    assert labels.shape == shape
    with np.errstate(invalid="ignore"):
        assert np.array_equal(labels > 0, np.nan_to_num(img, nan=0.0) > 0.5)
    assert ids == tuple(range(1, len(ids) + 1))
    assert set(np.unique(labels)) - {0} == set(ids)


@SETTINGS
@given(shape=SHAPE3, data=st.data())
def test_dseg_with_non_finite_or_fractional_values_is_a_clear_error(shape, data):
    img = data.draw(hnp.arrays(np.float64, shape, elements=ANY))
    is_labels = (np.isfinite(img).all() and (img >= 0).all() and (img == np.round(img)).all()
                 and (img < 2.0 ** 53).all())
    if is_labels:
        labels, ids = L.label_lesions(img, "dseg")
        assert len(ids) == len(set(np.unique(img)) - {0})
    else:
        with pytest.raises(ValueError, match="dseg"):
            L.label_lesions(img, "dseg")


@SETTINGS
@given(shape=SHAPE3, data=st.data(), zooms=st.tuples(*[st.floats(0.2, 5.0)] * 3))
def test_lesion_sizes_on_arbitrary_label_images(shape, data, zooms):
    labels = data.draw(hnp.arrays(np.int16, shape, elements=st.integers(0, 3)))
    affine = np.diag(list(zooms) + [1.0])
    sizes = L.lesion_diameters(labels, affine)
    assert set(sizes) == set(np.unique(labels)) - {0}
    vox = float(np.prod(zooms))
    for k, s in sizes.items():
        n = int((labels == k).sum())
        assert s.n_voxels == n and s.volume_mm3 == pytest.approx(n * vox)
        assert math.isfinite(s.longest_axial_mm) and math.isfinite(s.longest_3d_mm)
        # a voxel spans at least its smallest in-plane side; the axial diameter is a 3D chord
        assert min(zooms[:2]) - 1e-9 <= s.longest_axial_mm <= s.longest_3d_mm + 1e-9


@SETTINGS
@given(shape=SIZE.map(lambda n: n + 1), data=st.data())
def test_roi_stats_ignore_non_finite_values(shape, data):
    values = data.draw(arrays(shape))
    roi = data.draw(hnp.arrays(np.bool_, shape))
    s = quiet(L.roi_stats, values, roi)
    v = values[roi & np.isfinite(values)]
    assert s.n == v.size
    assert math.isnan(s.mean) == (v.size == 0)
    assert math.isnan(s.sd) == (v.size < 2) or not image_range(v)
    if v.size and image_range(v):
        assert v.min() <= s.median <= v.max()
        assert v.min() * (1 + 1e-12) - 1e-300 <= s.mean or s.mean == pytest.approx(v.min())
        assert s.mean == pytest.approx(float(np.mean(v)), rel=1e-9)


@SETTINGS
@given(shape=st.tuples(*[st.integers(3, 9)] * 3), data=st.data())
def test_control_regions_on_degenerate_brains(shape, data):
    brain = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(
        [0.0, 1.0, 0.7, np.nan, np.inf, -np.inf, 0.5])))
    lesions = data.draw(hnp.arrays(np.int16, shape, elements=st.sampled_from([0, 0, 0, 1])))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # "only 1 of 2 control regions fit"
            regions = L.control_regions(brain, lesions, affine, n=2, diameter_mm=2.5,
                                         min_diameter_mm=2.5, margin_mm=0.0)
    except L.ControlRegionError as exc:
        assert "no room for a control sphere" in str(exc)
        return
    inside = np.nan_to_num(brain, nan=0.0) > 0.5
    assert regions.dtype == np.int16 and regions.shape == shape
    assert set(np.unique(regions)) - {0} <= {1, 2} and (regions > 0).any()
    assert inside[regions > 0].all()                 # only in brain
    assert not (regions[lesions != 0] > 0).any()     # never on a lesion


# ------------------------------------------------------------------------- cohort

LABELS = st.sampled_from(["NSCLC", "breast", "melanoma", None])


@SETTINGS
@given(n=st.integers(0, 10), data=st.data())
def test_linear_regression_never_raises(n, data):
    x, y = data.draw(arrays(n)), data.draw(arrays(n))
    fit = quiet(K.linear_regression, x, y)
    finite = np.isfinite(x) & np.isfinite(y)
    assert fit.n == int(finite.sum())
    if fit.n < 2 or np.ptp(x[finite]) == 0:
        assert math.isnan(fit.slope) and math.isnan(fit.p_value)
    for value in (fit.r2, fit.p_value):
        assert math.isnan(value) or 0.0 <= value <= 1.0
    if math.isnan(fit.slope):
        assert math.isnan(fit.p_value) and math.isnan(fit.r2)
    lo, hi = fit.confidence_band(np.array([0.0, 1.0]))
    assert lo.shape == hi.shape == (2,)


@SETTINGS
@given(n=st.integers(3, 10), data=st.data())
def test_linear_regression_in_image_range_matches_the_normal_equations(n, data):
    x = data.draw(arrays(n, st.floats(-1e3, 1e3)))
    y = data.draw(arrays(n, st.floats(-1e3, 1e3)))
    assume(np.ptp(x) > 1e-3 * max(1.0, np.abs(x).max()))
    fit = K.linear_regression(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-6, abs=1e-9)
    assert fit.intercept == pytest.approx(intercept, rel=1e-6, abs=1e-6)
    assert fit.slope_ci_low <= fit.slope <= fit.slope_ci_high


@pytest.mark.parametrize("x, y", [
    ([], []), ([1.0], [2.0]), ([np.nan] * 4, [1.0] * 4), ([2.0] * 5, [1.0, 2, 3, 4, 5]),
    ([1.0, 2.0], [3.0, 3.0]), ([1.0, np.inf, 3.0], [1.0, 2.0, np.nan]),
    ([4.4e-97, 0.0], [4.4e-97, 0.0]), ([1e200, -1e200, 3e200], [1.0, 2.0, 3.0]),
    ([1.0, 2.0, 3.0], [1e300, -1e300, 1e300]),
])
def test_linear_regression_degenerate_cohorts(x, y):
    fit = quiet(K.linear_regression, x, y)
    assert fit.n == sum(1 for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b))
    assert math.isnan(fit.p_value) or 0.0 <= fit.p_value <= 1.0
    if math.isnan(fit.slope):
        assert math.isnan(fit.p_value)


@SETTINGS
@given(n=st.integers(0, 12), data=st.data())
def test_group_statistics_never_raise(n, data):
    values = data.draw(arrays(n))
    labels = data.draw(st.lists(LABELS, min_size=n, max_size=n))
    for test in ("kruskal", "anova"):
        res = quiet(K.group_difference_test, values=values, labels=labels, test=test)
        assert math.isnan(res.p_value) or 0.0 <= res.p_value <= 1.0
        assert res.n == sum(1 for v, g in zip(values, labels) if g is not None and math.isfinite(v))
        if res.n_groups < 2:
            assert math.isnan(res.p_value) and res.note
    summaries = quiet(K.summarise_groups, values, labels)
    assert sum(s.n for s in summaries) == res.n
    for s in summaries:
        if s.n and image_range(values):
            assert s.minimum <= s.median <= s.maximum
    fits = quiet(K.regress_by_group, values, data.draw(arrays(n)), labels)
    assert set(fits) == {g for g in labels if g is not None}
    limit = quiet(K.detection_limit, values)
    assert math.isnan(limit) == (not np.isfinite(values).any())
    assert math.isnan(limit) or limit >= 0


@SETTINGS
@given(n=SIZE, data=st.data())
def test_ratios_nan_where_the_denominator_is_unusable(n, data):
    a, b = data.draw(arrays(n, IMAGE)), data.draw(arrays(n, IMAGE))
    unusable = ~np.isfinite(b) | (b <= 0)
    for fn in (K.sensitivity_percent, K.persistence_percent):
        out = quiet(fn, a, b)
        assert np.isnan(out[unusable]).all()
    dn = quiet(K.dose_normalised_se, a, b)
    assert np.isnan(dn[unusable]).all()
    with np.errstate(all="ignore"):
        same_nan(dn, np.where(unusable, np.nan, a * (K.REFERENCE_DOSE_MG_PER_KG / b)))


@SETTINGS
@given(n=SIZE, data=st.data())
def test_size_bins_accept_anything(n, data):
    d = data.draw(arrays(n))
    labels = K.size_bins(d)
    known = {K.OTHER_SIZE_BIN} | {f"{lo:g}-{hi:g} mm" for lo, hi in K.SIZE_BINS_MM}
    assert set(labels) <= known
    assert list(labels) == [K.size_bin(v) for v in d]
    assert all(lab == K.OTHER_SIZE_BIN for lab, v in zip(labels, d) if not math.isfinite(v))
