"""B1+ factor maps of the other B1 mapping methods (qmri/b1methods.py): analytic values, the
published forms of each inversion, the signal models they invert, and undefined voxels."""
from __future__ import annotations

import numpy as np
import pytest

from bids_agquant.qmri import b1methods as B

B1 = np.linspace(0.6, 1.4, 41)
T1_S = (0.38, 0.85, 1.35, 4.0)         # fat, white and grey matter, CSF (the phantom's 3 T values)


def test_afi_analytic_value_with_n_5():
    # Yarnykh 2007: r = S2/S1 = (1 + n cos a) / (n + cos a) to first order in TR/T1
    n, alpha = 5.0, 60.0
    r = (1 + n * np.cos(np.radians(alpha))) / (n + np.cos(np.radians(alpha)))
    assert r == pytest.approx(3.5 / 5.5)
    assert B.afi_factor(1.0, r, 0.02, 0.1, 60.0) == pytest.approx(1.0, abs=1e-12)
    assert B.afi_factor(1.0, r, 0.02, 0.1, 50.0) == pytest.approx(1.2, abs=1e-12)
    assert B.afi_factor(2.0, 2 * r, 0.02, 0.1, 60.0) == pytest.approx(1.0, abs=1e-12)   # scale-free


def test_afi_inverts_the_published_first_order_ratio_over_the_range():
    for n in (3.0, 5.0, 8.0):
        alpha = np.radians(60.0 * B1)
        r = (1 + n * np.cos(alpha)) / (n + np.cos(alpha))
        assert np.allclose(B.afi_factor(np.ones_like(r), r, 1.0, n, 60.0), B1, atol=1e-12)


def test_afi_exact_steady_state_tends_to_the_formula_when_tr_is_short():
    errors = []
    for t1 in (0.5, 5.0, 500.0):
        s1, s2 = B.afi_signals(1.0, t1, 60.0, 0.02, 0.1, B1)
        errors.append(np.abs(B.afi_factor(s1, s2, 0.02, 0.1, 60.0) / B1 - 1).max())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4
    for t1 in T1_S[1:]:                   # the phantom protocol in tissue: under 1 %
        s1, s2 = B.afi_signals(1.0, t1, 60.0, 0.02, 0.1, B1)
        assert np.abs(B.afi_factor(s1, s2, 0.02, 0.1, 60.0) / B1 - 1).max() < 0.01


def test_double_angle_is_exact_with_full_relaxation_and_tends_to_it():
    a = np.radians(60.0 * B1)
    assert np.allclose(B.dam_factor(np.sin(a), np.sin(2 * a), 60.0)[B1 < 1.5], B1[B1 < 1.5])
    errors = [np.abs(B.dam_factor(*B.dam_signals(1.0, 4.0, 60.0, tr, B1), 60.0) / B1 - 1).max()
              for tr in (4.0, 8.0, 20.0)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01               # TR = 5 T1 of CSF


def test_tfl_famp_is_ten_times_the_actual_angle():
    famp = np.rint(B.tfl_famp(80.0, B1))  # Siemens stores integers
    assert B.tfl_famp(80.0, 1.0) == 800.0
    assert np.abs(B.tfl_factor(famp, 80.0) - B1).max() <= 0.5 / 800 + 1e-12


def test_rf_map_offset_and_scale_as_the_hmri_toolbox_reads_them():
    # actual angle (famp - 2048) * 180 / 2048 for a nominal 90 degrees (hMRI calc_rf_map)
    assert B.rfm_factor(np.array([2048 + 1024, 2048 + 512, 2048])).tolist()[:2] == [1.0, 0.5]
    assert np.isnan(B.rfm_factor(np.array([2048.0])))[0]
    assert np.allclose(B.rfm_factor(B.rfm_famp(B1)), B1)


def test_epi_recovers_b1_across_the_acos_ambiguity():
    fas = np.arange(115.0, 64.0, -5.0)
    error = {}
    for t1 in T1_S:
        se, ste = B.epi_signals(1.0, t1, fas, 0.0338, B1)
        error[t1] = np.abs(B.epi_factor(se, ste, fas, 0.0338) / B1 - 1).max()
    assert max(error[t1] for t1 in T1_S[1:]) < 0.015        # brain tissue and CSF
    # fat's T1 is far from the assumed 1.19 s: the mixing-time decay is off by 6 %
    assert error[0.38] > max(error[t1] for t1 in T1_S[1:]) and error[0.38] < 0.03
    # with T1 equal to the assumed one the ratio is exactly cos(alpha)
    se, ste = B.epi_signals(1.0, B.EPI_ASSUMED_T1_S, fas, 0.0338, B1)
    assert np.allclose(B.epi_factor(se, ste, fas, 0.0338), B1, atol=1e-9)
    assert fas.max() * B1.max() > 90 > fas.min() * B1.min()    # both branches were needed


def test_epi_ste_over_se_is_cos_alpha_times_the_mixing_decay():
    se, ste = B.epi_signals(2.0, 1.0, [60.0], 0.05, np.array([0.9]))
    assert (ste / se)[0, 0] == pytest.approx(np.cos(np.radians(54.0)) * np.exp(-0.05))
    assert se[0, 0] == pytest.approx(2.0 * np.sin(np.radians(54.0)) ** 3)


def test_undefined_voxels_are_nan():
    zero = np.zeros(3)
    assert np.isnan(B.afi_factor(zero, zero, 0.02, 0.1, 60)).all()
    assert np.isnan(B.afi_factor(np.ones(1), np.full(1, 1.2), 0.02, 0.1, 60)).all()  # r > 1
    assert np.isnan(B.dam_factor(np.ones(1), np.full(1, 2.5), 60)).all()          # ratio > 2
    assert np.isnan(B.dam_factor(np.ones(1), np.zeros(1), 60)).all()
    assert np.isnan(B.tfl_factor(np.array([0.0, -5.0, np.nan]), 80)).all()
    se = np.zeros((3, 2))
    assert np.isnan(B.epi_factor(se, se, [100, 80, 60], 0.03)).all()


def test_factor_map_and_images_by_role_follow_the_registry():
    assert set(B.METHODS) == set(B.COMPUTED_METHODS) == {"TB1AFI", "TB1DAM", "TB1TFL",
                                                          "TB1RFM", "TB1EPI"}
    fas = [100.0, 80.0, 60.0]
    se, ste = B.epi_signals(1.0, 1.0, fas, 0.03, np.full((2, 2, 2), 1.1))
    roles, arrays = [], []
    for i in range(3):
        roles += ["se", "ste"]
        arrays += [se[i], ste[i]]
    images = B.images_by_role("TB1EPI", roles, arrays)
    assert images["se"].shape == (3, 2, 2, 2)
    f = B.factor_map("TB1EPI", images, {"flip_angles_deg": fas, "mixing_time_s": 0.03})
    assert np.allclose(f, 1.1, atol=0.01)
    with pytest.raises(KeyError):
        B.factor_map("TB1map", {}, {})
    for method in B.METHODS.values():     # the BIDS qMRI appendix's entities
        assert set(method.entities) <= {"acquisition", "flip", "echo"}
