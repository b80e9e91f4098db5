"""Signal enhancement: voxelwise map and the ROI form the lesion table uses."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_agquant.qmri.enhancement import (roi_signal_enhancement_percent,
                                           signal_enhancement_percent)
from bids_agquant.qmri.lesions import roi_stats


def test_voxelwise_se_analytic_values():
    se = signal_enhancement_percent([200.0, 100.0, 50.0, 0.0], [100.0, 100.0, 100.0, 100.0])
    np.testing.assert_allclose(se, [100.0, 0.0, -50.0, -100.0])
    assert signal_enhancement_percent(282.9, 100.0) == pytest.approx(182.9)   # Dotarem-like


def test_voxelwise_se_is_nan_where_pre_is_not_positive_or_input_not_finite():
    pre = np.array([0.0, -1.0, np.nan, np.inf, 10.0, 10.0, 10.0])
    post = np.array([5.0, 5.0, 5.0, 5.0, np.nan, np.inf, 15.0])
    se = signal_enhancement_percent(post, pre)
    assert np.isnan(se[:6]).all()
    assert se[6] == pytest.approx(50.0)


def test_voxelwise_se_broadcasts_and_rejects_mismatched_shapes():
    se = signal_enhancement_percent(np.full((2, 3), 150.0), 100.0)
    assert se.shape == (2, 3) and np.allclose(se, 50.0)
    with pytest.raises(ValueError, match="reference space"):
        signal_enhancement_percent(np.ones((2, 3)), np.ones((3, 2)))


@settings(max_examples=50, deadline=None)
@given(pre=st.floats(1e-3, 1e7), ratio=st.floats(0.0, 10.0))
def test_voxelwise_se_is_scale_free(pre, ratio):
    assert signal_enhancement_percent(pre * ratio, pre) == pytest.approx(100 * (ratio - 1),
                                                                          abs=1e-9, rel=1e-9)


def test_roi_se_is_the_se_of_mean_signals_not_the_mean_of_voxel_se():
    pre = np.array([1.0, 3.0, 5.0])
    post = np.array([2.0, 3.0, 99.0])
    roi = np.array([True, True, False])
    # ROI means 2.5 / 2.0 -> 25 %; the mean of voxel SE (100 %, 0 %) would be 50 %
    assert roi_signal_enhancement_percent(post, pre, roi) == pytest.approx(25.0)
    assert roi_stats(signal_enhancement_percent(post, pre), roi).mean == pytest.approx(50.0)


def test_roi_se_ignores_non_finite_voxels_but_keeps_zero_signal():
    pre = np.array([0.0, 4.0, np.nan, 2.0])
    post = np.array([1.0, 5.0, 100.0, np.inf])
    roi = np.ones(4, bool)
    # voxels 0 and 1 count (a zero pre signal is a real value here): means 3.0 / 2.0 -> 50 %
    assert roi_signal_enhancement_percent(post, pre, roi) == pytest.approx(50.0)


def test_roi_se_nan_cases_and_shape_check():
    pre, post = np.ones((2, 2)), np.ones((2, 2))
    assert math.isnan(roi_signal_enhancement_percent(post, pre, np.zeros((2, 2), bool)))
    assert math.isnan(roi_signal_enhancement_percent(post, -pre, np.ones((2, 2), bool)))
    with pytest.raises(ValueError, match="ROI"):
        roi_signal_enhancement_percent(post, pre, np.ones(4, bool))


def test_roi_se_on_a_uniform_lesion_equals_its_voxel_se():
    rng = np.random.default_rng(0)
    pre = rng.uniform(200, 400, (8, 8, 8))
    post = pre * 2.758            # 175.8 % enhancement everywhere (paper, patient 13, day 1)
    roi = np.zeros(pre.shape, bool)
    roi[2:6, 2:6, 2:6] = True
    assert roi_signal_enhancement_percent(post, pre, roi) == pytest.approx(175.8)
    stats = roi_stats(signal_enhancement_percent(post, pre), roi)
    assert stats.mean == pytest.approx(175.8) and stats.sd == pytest.approx(0.0, abs=1e-9)
    assert stats.n == 64
