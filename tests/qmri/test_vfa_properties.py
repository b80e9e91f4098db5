"""Property-based tests (hypothesis) of the VFA fit: any input is handled without exception,
results are either NaN or physical, and the fit is invariant to the signal scale."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from bids_agquant.qmri.spgr import spgr_signal
from bids_agquant.qmri.vfa import VFAModel

FA = np.array([3.0, 8.0, 15.0, 25.0])
TR = 0.006

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
finite_float = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)


def _check_physical(fit):
    v = fit.valid
    assert v.dtype == bool
    for a in (fit.t1, fit.m0, fit.r2, fit.residual):
        assert np.all(np.isnan(a[~v]))
    assert np.all(np.isfinite(fit.t1[v]) & (fit.t1[v] > 0))
    assert np.all(np.isfinite(fit.m0[v]) & (fit.m0[v] > 0))
    assert np.all(fit.residual[v] >= 0)
    assert np.all(~(fit.r2[v] > 1 + 1e-9))      # r2 <= 1 (NaN when the signal is constant)


@settings(max_examples=150, deadline=None)
@given(sig=arrays(np.float64, st.tuples(st.integers(0, 6), st.just(4)), elements=any_float),
       b1=st.one_of(st.none(), any_float),
       method=st.sampled_from(["nonlinear", "linear"]))
def test_arbitrary_input_never_raises_and_is_nan_or_physical(sig, b1, method):
    fit = VFAModel(FA, TR, method).fit(sig, b1=b1)
    assert fit.t1.shape == sig.shape[:-1]
    _check_physical(fit)
    # non-finite everywhere, or all zero: necessarily NaN
    dead = ~np.isfinite(sig).any(axis=-1) | np.all(sig == 0, axis=-1)
    assert not fit.valid[dead].any()
    if b1 is not None and not (np.isfinite(b1) and b1 > 0):
        assert not fit.valid.any()


@settings(max_examples=100, deadline=None)
@given(sig=arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=finite_float),
       b1=arrays(np.float64, st.just((1,)), elements=st.floats(0.5, 1.5)))
def test_arbitrary_finite_input_with_b1_map(sig, b1):
    b1map = np.broadcast_to(b1, sig.shape[:-1])
    fit = VFAModel(FA, TR).fit(sig, b1=b1map)
    _check_physical(fit)


@settings(max_examples=100, deadline=None)
@given(t1=st.floats(0.01, 10.0), m0=st.floats(1e-3, 1e9), b1=st.floats(0.6, 1.4),
       log_scale=st.floats(-6, 6), noise=st.floats(0.0, 0.05), seed=st.integers(0, 2**31 - 1))
def test_scale_invariance_and_noiseless_recovery(t1, m0, b1, log_scale, noise, seed):
    rng = np.random.default_rng(seed)
    clean = spgr_signal(m0, t1, FA, TR, b1)
    sig = clean * (1.0 + noise * rng.standard_normal(FA.size))
    base = VFAModel(FA, TR).fit(sig, b1=b1)
    scaled = VFAModel(FA, TR).fit(sig * 10.0 ** log_scale, b1=b1)
    assert bool(base.valid) == bool(scaled.valid)
    if base.valid:
        np.testing.assert_allclose(scaled.t1, base.t1, rtol=1e-7)
        np.testing.assert_allclose(scaled.m0, base.m0 * 10.0 ** log_scale, rtol=1e-7)
    if noise == 0.0:
        assert base.valid
        np.testing.assert_allclose(base.t1, t1, rtol=1e-7)


@settings(max_examples=60, deadline=None)
@given(t1=st.floats(0.02, 8.0), b1=st.floats(0.7, 1.3), drop=st.integers(0, 3))
def test_dropping_one_angle_keeps_noiseless_recovery(t1, b1, drop):
    sig = spgr_signal(100.0, t1, FA, TR, b1)
    sig[drop] = np.nan
    for method in ("nonlinear", "linear"):
        fit = VFAModel(FA, TR, method).fit(sig, b1=b1)
        assert fit.valid
        np.testing.assert_allclose(fit.t1, t1, rtol=1e-6)
