"""Concentration: delta R1, mM, mg/L, %ID/g, the SE bound, and the OSIPI SPGR
signal-to-concentration reference curves."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_agquant.qmri.concentration import (concentration_mM, delta_r1, mg_per_L_from_mM,
                                             percent_injected_dose_per_gram,
                                             se_upper_bound_concentration, spgr_m0_from_baseline,
                                             spgr_signal_to_concentration, spgr_signal_to_r1)
from bids_agquant.qmri.relaxivity import Relaxivity, get_relaxivity
from bids_agquant.qmri.spgr import spgr_signal
from evaldata import require_eval


# --------------------------------------------------------------------------- OSIPI reference

def _osipi_curves():
    path = require_eval("osipi_conc", "SI2Conc_data.csv")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5, f"{path}: expected 5 curves, found {len(rows)}"
    return rows


@pytest.mark.parametrize("index", range(5))
def test_osipi_signal_to_concentration_curves(index):
    row = _osipi_curves()[index]
    signal = np.array(row["s"].split(), dtype=float)
    expected = np.array(row["conc"].split(), dtype=float)
    conc = spgr_signal_to_concentration(
        signal, flip_angle_deg=float(row["FA"]), tr_s=float(row["TR"]),
        t1_base_s=float(row["T1base"]), r1_per_mM_s=float(row["r1"]),
        n_baseline=int(row["numbaselinepts"]))       # default n_skip=1, OSIPI's method
    assert conc.shape == signal.shape == (150,)
    # OSIPI does not assess the first point; tolerance atol = rtol = 1e-5 (mM)
    np.testing.assert_allclose(conc[1:], expected[1:], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- SPGR round trips

@settings(max_examples=60, deadline=None)
@given(t1=st.floats(0.05, 5.0), fa=st.floats(2.0, 60.0), tr=st.floats(0.002, 0.02),
       b1=st.floats(0.7, 1.3), m0=st.floats(1e1, 1e7))
def test_spgr_signal_to_r1_inverts_the_spgr_equation(t1, fa, tr, b1, m0):
    s = spgr_signal(m0, t1, [fa], tr, b1=b1)[..., 0]
    r1 = spgr_signal_to_r1(s, m0, fa, tr, b1=b1)
    assert r1 == pytest.approx(1.0 / t1, rel=1e-7)


@settings(max_examples=40, deadline=None)
@given(t1_pre=st.floats(0.3, 4.0), r1_gd=st.floats(3.0, 12.0), peak_mM=st.floats(0.0, 3.0),
       fa=st.floats(5.0, 40.0), m0=st.floats(1e2, 1e6))
def test_round_trip_signal_r1_concentration(t1_pre, r1_gd, peak_mM, fa, m0):
    tr = 0.004
    conc_true = np.concatenate([np.zeros(5), peak_mM * np.exp(-np.linspace(0, 3, 20))])
    r1_t = 1.0 / t1_pre + r1_gd * conc_true
    signal = spgr_signal(m0, 1.0 / r1_t, [fa], tr)[..., 0]
    conc = spgr_signal_to_concentration(signal, fa, tr, t1_pre, r1_gd, n_baseline=5, n_skip=0)
    np.testing.assert_allclose(conc, conc_true, atol=1e-9 * max(1.0, peak_mM), rtol=1e-7)


def test_round_trip_with_b1_map_and_spatial_axes():
    rng = np.random.default_rng(3)
    shape = (4, 3)
    t1 = rng.uniform(0.6, 2.0, shape)
    b1 = rng.uniform(0.8, 1.2, shape)
    conc_true = np.concatenate([np.zeros(shape + (3,)), rng.uniform(0, 1, shape + (6,))], axis=-1)
    r1_t = 1.0 / t1[..., None] + 8.9 * conc_true
    signal = spgr_signal(1000.0, 1.0 / r1_t, [15.0], 0.005, b1=b1[..., None])[..., 0]
    conc = spgr_signal_to_concentration(signal, 15.0, 0.005, t1, 8.9, 3, n_skip=0, b1=b1)
    np.testing.assert_allclose(conc, conc_true, atol=1e-9)
    # ignoring the B1 map biases the concentration: the map is really used
    biased = spgr_signal_to_concentration(signal, 15.0, 0.005, t1, 8.9, 3, n_skip=0)
    assert np.nanmax(np.abs(biased - conc_true)) > 1e-3


def test_m0_from_baseline_matches_spgr():
    m0 = spgr_m0_from_baseline(spgr_signal(250.0, 1.2, [12.0], 0.003)[0], 1.2, 12.0, 0.003)
    assert m0 == pytest.approx(250.0, rel=1e-12)
    assert math.isnan(spgr_m0_from_baseline(100.0, 0.0, 12.0, 0.003))
    assert math.isnan(spgr_m0_from_baseline(100.0, -1.0, 12.0, 0.003))


def test_signal_outside_the_model_gives_nan_not_a_clipped_rate():
    m0, fa, tr = 1000.0, 20.0, 0.005
    ceiling = m0 * math.sin(math.radians(fa))       # signal at T1 -> 0
    r1 = spgr_signal_to_r1([ceiling, 1.01 * ceiling, 0.0, -5.0, np.nan, 0.5 * ceiling],
                           m0, fa, tr)
    assert np.isnan(r1[:5]).all()
    assert np.isfinite(r1[5]) and r1[5] > 0
    assert np.isnan(spgr_signal_to_r1(10.0, 0.0, fa, tr))      # no M0
    assert np.isnan(spgr_signal_to_r1(10.0, 100.0, fa, tr, b1=0.0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(flip_angle_deg=0.0), "flip angle"),
    (dict(flip_angle_deg=180.0), "flip angle"),
    (dict(tr_s=0.0), "repetition time"),
    (dict(tr_s=float("nan")), "repetition time"),
    (dict(n_baseline=1), "baseline points"),            # [1:1] is empty with n_skip=1
    (dict(n_baseline=200), "baseline points"),
    (dict(r1_per_mM_s=0.0), "relaxivity"),
])
def test_bad_acquisition_parameters_raise_clear_errors(kwargs, message):
    args = dict(signal=np.ones(10) * 5, flip_angle_deg=15.0, tr_s=0.004, t1_base_s=1.0,
                r1_per_mM_s=4.5, n_baseline=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        spgr_signal_to_concentration(**args)


# --------------------------------------------------------------------------- analytic values

def test_delta_r1_and_concentration_analytic():
    assert delta_r1(1.5, 1.0) == pytest.approx(0.5)
    assert delta_r1(0.9, 1.0) == pytest.approx(-0.1)           # noise: kept, not clipped
    d = delta_r1([2.0, np.nan, 1.0, -1.0, np.inf], [1.0, 1.0, 0.0, 1.0, 1.0])
    assert d[0] == pytest.approx(1.0) and np.isnan(d[1:]).all()
    assert concentration_mM(0.089, 8.9) == pytest.approx(0.01)
    assert concentration_mM(-0.089, 8.9) == pytest.approx(-0.01)
    assert np.isnan(concentration_mM(np.nan, 8.9))
    aguix = get_relaxivity("AGuIX", 3.0)
    assert concentration_mM(0.89, aguix) == pytest.approx(0.1)   # a Relaxivity works too
    with pytest.raises(ValueError, match="--relaxivity"):
        concentration_mM(1.0, -3.0)


def test_aguix_one_mg_per_L_is_about_one_micromolar_gd():
    aguix = get_relaxivity("aguix", 3.0)
    assert mg_per_L_from_mM(1e-3, aguix) == pytest.approx(1.0)           # 1 uM Gd -> 1 mg/L
    # the paper's own conversion: 8 to 63 mg/L <-> 8 to 63 uM of Gd
    np.testing.assert_allclose(mg_per_L_from_mM(np.array([8e-3, 63e-3]), aguix), [8.0, 63.0])
    # the whole chain: delta R1 = 8.9e-3 /s at r1 = 8.9 -> 1 uM Gd -> 1 mg/L
    assert mg_per_L_from_mM(concentration_mM(8.9e-3, aguix), aguix) == pytest.approx(1.0)


def test_mg_per_L_of_dotarem_and_of_an_agent_without_molar_mass():
    dotarem = get_relaxivity("gadoterate", 3.0)
    assert mg_per_L_from_mM(1.0, dotarem) == pytest.approx(558.64)
    assert mg_per_L_from_mM(2.0, 500.0) == pytest.approx(1000.0)          # factor given directly
    unknown = Relaxivity("Mystery", None, 4.0, 1.0, float("nan"), "user override")
    assert np.isnan(mg_per_L_from_mM(1.0, unknown))
    assert np.isnan(mg_per_L_from_mM(np.ones(3), unknown)).all()


def test_percent_injected_dose_per_gram_paper_example():
    # paper: 60 mg/L in a 60 kg patient given 100 mg/kg -> 0.001 %ID/g (density 1 kg/L)
    assert percent_injected_dose_per_gram(60.0, 100.0, 60.0) == pytest.approx(0.001)
    # proportional to concentration, inverse in dose and weight; density scales it down
    assert percent_injected_dose_per_gram(120.0, 50.0, 60.0) == pytest.approx(0.004)
    assert percent_injected_dose_per_gram(60.0, 100.0, 60.0, 1.05) == pytest.approx(0.001 / 1.05)
    out = percent_injected_dose_per_gram([60.0, 60.0, 60.0], [100.0, np.nan, 0.0], 60.0)
    assert out[0] == pytest.approx(0.001) and np.isnan(out[1:]).all()


def test_se_upper_bound_matches_the_papers_day8_bound():
    # paper: day-8 SE 32.4, 14.0, 26.3 % with SE-vs-concentration slopes 3.31, 1.69, 3.95 %/(mg/L)
    # -> "an upper limit of 10 uM" (1 mg/L ~ 1 uM Gd for AGuIX)
    bounds = se_upper_bound_concentration([32.4, 14.0, 26.3], [3.31, 1.69, 3.95])
    np.testing.assert_allclose(bounds, [32.4 / 3.31, 14.0 / 1.69, 26.3 / 3.95])
    assert bounds.max() <= 10.0 and round(bounds.max()) == 10
    assert np.isnan(se_upper_bound_concentration(20.0, 0.0))
    assert np.isnan(se_upper_bound_concentration(20.0, -1.0))
    assert np.isnan(se_upper_bound_concentration(np.nan, 2.0))
