"""Uncertainty of region means (qmri/uncertainty.py): analytic variances against Monte Carlo."""
from __future__ import annotations

import numpy as np
import pytest

from bids_agquant.qmri import geometry as G
from bids_agquant.qmri import uncertainty as U
from bids_agquant.qmri.spgr import spgr_signal
from bids_agquant.qmri.vfa import VFAModel

FA = [2.0, 5.0, 10.0, 15.0]
TR = 0.006


@pytest.mark.parametrize("t1,b1", [(0.8, 1.0), (1.4, 0.85), (0.35, 1.15)])
def test_r1_variance_factor_matches_monte_carlo_of_the_fit(t1, b1):
    """The analytic var(R1) of the least-squares fit equals the spread of fitted R1 over noise."""
    rng = np.random.default_rng(3)
    n, m0, sigma = 40000, 1000.0, 1.5        # peak SNR 30-60, the clinical protocol's
    clean = spgr_signal(m0, t1, FA, TR, b1)
    noisy = clean + sigma * rng.standard_normal((n, len(FA)))
    fit = VFAModel(FA, TR).fit(noisy, b1=np.full(n, b1))
    empirical = np.nanvar(fit.r1)
    predicted = sigma ** 2 * float(U.r1_variance_factor(m0, t1, FA, TR, b1))
    # 40000 draws: the sample variance has a relative SD of about 1 %; the first-order
    # propagation is exact to within 2 % here (at a peak SNR of 12 it is 5-11 % low)
    assert empirical == pytest.approx(predicted, rel=0.04)


def test_r1_variance_factor_is_nan_for_unphysical_parameters():
    out = U.r1_variance_factor(np.array([1.0, np.nan, 1.0]), np.array([1.0, 1.0, np.nan]), FA, TR)
    assert np.isfinite(out[0]) and np.isnan(out[1:]).all()


def test_pooled_residual_variance_recovers_the_noise_of_a_fit():
    """E[rss] = sigma^2 (n - 2): the pooled residual variance of fits on pure noise is sigma^2."""
    rng = np.random.default_rng(5)
    shape, sigma = (20, 20, 12), 3.0
    t1 = rng.uniform(0.6, 1.6, shape)
    signal = spgr_signal(800.0, t1, FA, TR) + sigma * rng.standard_normal(shape + (len(FA),))
    fit = VFAModel(FA, TR).fit(signal)
    var = U.pooled_residual_variance(fit.residual, len(FA), (2.0, 2.0, 3.0), valid=fit.valid)
    centre = var[5:15, 5:15, 3:9]
    assert np.nanmedian(centre) == pytest.approx(sigma ** 2, rel=0.08)
    assert np.isnan(U.pooled_residual_variance(np.full((3, 3, 3), np.nan), 4, (1, 1, 1))).all()


def _rotation(deg, axis=2):
    th = np.deg2rad(deg)
    c, s = np.cos(th), np.sin(th)
    r = np.eye(4)
    i, j = [a for a in range(3) if a != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_mean_weights_reproduce_the_resampled_mean_and_its_variance():
    """The weighted sum equals the mean of the NaN-aware resampled map, and sum w^2 sigma^2 the
    variance of that mean over iid noise realisations (coarse source, fine oblique target)."""
    rng = np.random.default_rng(11)
    src_aff = np.diag([2.0, 2.0, 3.0, 1.0])
    src_aff[:3, 3] = [-30, -30, -30]
    src_shape = (30, 30, 20)
    tgt_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    tgt_aff[:3, 3] = [-20, -20, -20]
    tgt_shape = (40, 40, 40)
    xfm = _rotation(7.0)
    xfm[:3, 3] = [1.3, -0.7, 0.4]
    vox = G.voxel_map(tgt_aff, src_aff, xfm)
    grid = np.indices(tgt_shape).reshape(3, -1).T
    centre = np.array(tgt_shape) / 2
    roi = np.linalg.norm(grid - centre, axis=1) <= 4.5          # 9 mm sphere
    voxels = grid[roi]
    finite = np.ones(src_shape, bool)
    finite[14, 15, 10] = False                                  # one NaN voxel inside
    idx, w, kept = U.mean_weights(voxels, vox, src_shape, finite)
    assert w.sum() == pytest.approx(1.0)
    means = []
    for _ in range(400):
        field = rng.standard_normal(src_shape)
        field[~finite] = np.nan
        res = G.resample_many([field], src_aff, tgt_shape, tgt_aff, xfm, dtype=np.float64)[0]
        vals = res.reshape(-1)[roi]
        assert np.isfinite(vals).sum() == kept
        mean = np.nanmean(vals)
        assert mean == pytest.approx(float(np.sum(w * field.ravel()[idx])), abs=1e-9)
        means.append(mean)
    predicted = U.variance_of_mean(np.ones(src_shape), idx, w)
    # 400 draws: relative SD of the sample variance about 7 %
    assert np.var(means) == pytest.approx(predicted, rel=0.25)
    naive = 1.0 / kept
    assert predicted > 5 * naive          # the correlation the resampling introduces matters


def test_image_noise_sd_ignores_smooth_anatomy():
    rng = np.random.default_rng(2)
    shape = (64, 64, 30)
    x, y, z = np.indices(shape)
    anatomy = 500 + 200 * np.sin(x / 7.0) * np.cos(y / 9.0) + 3 * z
    anatomy[20:40, 20:40, :] += 150                              # a sharp-edged block
    sigma = 7.0
    image = anatomy + sigma * rng.standard_normal(shape)
    est = U.image_noise_sd(image, np.ones(shape, bool), (1.0, 1.0, 1.0))
    assert est == pytest.approx(sigma, rel=0.06)
    assert np.isnan(U.image_noise_sd(image, np.zeros(shape, bool)))
    # a subset of the planes (the filter is in-plane): the same statistic on fewer samples
    assert U.image_noise_sd(image, np.ones(shape, bool), (1.0, 1.0, 1.0),
                            max_planes=8) == pytest.approx(sigma, rel=0.1)


def test_detection_limits_follow_currie():
    lim = U.detection_limits(0.05, 0.003, tau2=0.004 ** 2)
    assert lim.sigma0 == pytest.approx(0.005)
    assert lim.critical_level == pytest.approx(1.6448536 * 0.005)
    assert lim.lod == pytest.approx(3.2897072 * 0.005)
    assert lim.loq == pytest.approx(0.05)
    assert lim.detected is True and lim.quantifiable is True
    low = U.detection_limits(0.006, 0.003)
    assert low.detected is True and low.quantifiable is False
    assert U.detection_limits(0.004, 0.003).detected is False
    assert U.detection_limits(float("nan"), 0.003).detected is None
    assert np.isnan(U.detection_limits(0.1, float("nan")).lod)


def test_between_session_variance_is_the_excess_over_own_noise():
    assert U.between_session_variance([0.01, -0.01, 0.01], [0.0, 0.0, 0.0]) == pytest.approx(1e-4)
    assert U.between_session_variance([0.001, -0.001], [0.002, 0.002]) == 0.0
    assert U.between_session_variance([np.nan], [np.nan]) == 0.0
