"""From relaxation rates and signals to gadolinium concentration, mass concentration and %ID/g.

Units are in the names: R1 in 1/s, relaxivity r1 in 1/(mM s) per Gd ion, concentrations in mM of
Gd or mg/L of the agent, doses in mg/kg, weights in kg.  Invalid input gives NaN, never a clipped
number; negative concentrations (noise around zero) are kept as they are.

    delta R1 = R1_post - R1_pre                                   (1/s)
    [Gd] (mM) = delta R1 / r1                                     (r1 per Gd, 1/(mM s))
    C (mg/L) = [Gd] (mM) * molar mass / Gd per particle           (Relaxivity.mg_per_L_per_mM_gd)
    %ID/g = 100 * (C_mg_per_L / 1000 / density_kg_per_L) / (dose_mg_per_kg * weight_kg)
    C_upper = SE / slope                                          (the paper's D8 bound)

The SPGR functions follow the OSIPI DCE-DSC-MRI CodeCollection's signal-to-concentration method
(Schabel & Parker 2008, eq. 6-7, "nonlinear"): M0 from the mean pre-contrast signal and the
baseline T1 through the SPGR equation (:func:`bids_agquant.qmri.spgr.spgr_signal`), then the
exact inversion of that equation for R1 at every time point.
"""
from __future__ import annotations

import numbers

import numpy as np

from .relaxivity import Relaxivity
from .spgr import effective_flip_rad, spgr_signal

__all__ = [
    "delta_r1",
    "concentration_mM",
    "mg_per_L_from_mM",
    "percent_injected_dose_per_gram",
    "se_upper_bound_concentration",
    "spgr_m0_from_baseline",
    "spgr_signal_to_r1",
    "spgr_signal_to_concentration",
]


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _scalar_or_nan(out):
    return float(out) if np.ndim(out) == 0 else out


def _r1_value(r1_per_mM_s) -> float:
    """Relaxivity as a positive finite float (accepts a :class:`Relaxivity`)."""
    if isinstance(r1_per_mM_s, Relaxivity):
        r1_per_mM_s = r1_per_mM_s.r1_per_mM_s
    if not isinstance(r1_per_mM_s, numbers.Real) and np.ndim(r1_per_mM_s) != 0:
        raise ValueError(f"relaxivity must be one number in 1/(mM s), got {r1_per_mM_s!r}")
    value = float(r1_per_mM_s)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"relaxivity r1 = {value!r} 1/(mM s) is not a positive number: pass "
                         f"--relaxivity AGENT=<r1 in 1/(mM s)>")
    return value


def delta_r1(r1_post, r1_pre):
    """``R1_post - R1_pre`` in 1/s; NaN where either rate is non-finite or <= 0 (no real R1)."""
    post, pre = _f64(r1_post), _f64(r1_pre)
    valid = np.isfinite(post) & np.isfinite(pre) & (post > 0) & (pre > 0)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(valid, post - pre, np.nan)
    return _scalar_or_nan(out)


def concentration_mM(delta_r1_per_s, r1_per_mM_s):
    """Gd concentration in mM, ``delta R1 / r1``.

    ``r1_per_mM_s`` is the relaxivity per Gd ion (a number or a :class:`Relaxivity`); a
    non-positive relaxivity is a configuration error (``ValueError``).  Non-finite delta R1 -> NaN.
    """
    r1 = _r1_value(r1_per_mM_s)
    d = _f64(delta_r1_per_s)
    out = np.where(np.isfinite(d), d / r1, np.nan)
    return _scalar_or_nan(out)


def mg_per_L_from_mM(conc_mM, relaxivity):
    """Mass concentration of the agent in mg/L from the Gd concentration in mM.

    ``relaxivity`` is a :class:`Relaxivity` (its ``molar_mass_g_per_mol / gd_per_particle``) or the
    factor itself in mg/L per mM of Gd.  For AGuIX (about 10 kDa, 10 Gd per particle) 1 uM of Gd is
    1 mg/L.  An agent of unknown molar mass (a user override for an agent the registry does not
    know) gives NaN: the mass cannot be known.
    """
    factor = relaxivity.mg_per_L_per_mM_gd if isinstance(relaxivity, Relaxivity) else relaxivity
    factor = float(factor)
    c = _f64(conc_mM)
    if not (np.isfinite(factor) and factor > 0):
        return _scalar_or_nan(np.full(c.shape, np.nan))
    out = np.where(np.isfinite(c), c * factor, np.nan)
    return _scalar_or_nan(out)


def percent_injected_dose_per_gram(conc_mg_per_L, dose_mg_per_kg, weight_kg,
                                   tissue_density_kg_per_L=1.0):
    """Percent of the injected dose per gram of tissue.

    ``100 * (C / 1000 / density) / (dose * weight)``: C mg/L of tissue is C/1000 mg per gram at
    1 kg/L; the injected dose is ``dose_mg_per_kg * weight_kg`` mg.  Paper: 60 mg/L in a 60 kg
    patient given 100 mg/kg -> 0.001 %ID/g.  NaN where a dose, weight or density is missing,
    non-finite or <= 0 (participants.tsv may lack them).
    """
    c, dose, w, rho = (_f64(v) for v in (conc_mg_per_L, dose_mg_per_kg, weight_kg,
                                           tissue_density_kg_per_L))
    valid = (np.isfinite(c) & np.isfinite(dose) & np.isfinite(w) & np.isfinite(rho)
             & (dose > 0) & (w > 0) & (rho > 0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = 100.0 * (c / 1000.0 / rho) / (dose * w)
    return _scalar_or_nan(np.where(valid, out, np.nan))


def se_upper_bound_concentration(se_percent, se_per_conc_slope):
    """Concentration bound from signal enhancement where delta R1 is too small (paper, day 8).

    ``C_upper = SE / slope`` with the per-patient slope of SE (%) against concentration; the result
    has the concentration unit of the slope (slope in %/(mg/L) -> mg/L, %/mM -> mM).  NaN where the
    slope is non-finite or <= 0 (no usable SE-concentration relation) or SE is non-finite.
    """
    se, slope = _f64(se_percent), _f64(se_per_conc_slope)
    valid = np.isfinite(se) & np.isfinite(slope) & (slope > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = se / slope
    return _scalar_or_nan(np.where(valid, out, np.nan))


# --------------------------------------------------------------------------- SPGR inversion

def _check_acquisition(flip_angle_deg, tr_s):
    fa = float(flip_angle_deg)
    tr = float(tr_s)
    if not (np.isfinite(fa) and 0 < fa < 180):
        raise ValueError(f"flip angle {flip_angle_deg!r} deg is not in (0, 180): check the "
                         f"FlipAngle of the sidecar")
    if not (np.isfinite(tr) and tr > 0):
        raise ValueError(f"repetition time {tr_s!r} s is not positive: check "
                         f"RepetitionTimeExcitation / RepetitionTime of the sidecar (in seconds)")
    return fa, tr


def spgr_m0_from_baseline(baseline_signal, t1_base_s, flip_angle_deg, tr_s, b1=None):
    """M0 (signal units) such that the SPGR equation gives ``baseline_signal`` at ``t1_base_s``.

    NaN where the baseline T1 is non-finite or <= 0, the baseline signal is non-finite, or the
    B1 factor is non-positive.
    """
    fa, tr = _check_acquisition(flip_angle_deg, tr_s)
    s0 = _f64(baseline_signal)
    t1 = _f64(t1_base_s)
    b1a = None if b1 is None else _f64(b1)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = spgr_signal(1.0, np.where(t1 > 0, t1, np.nan), [fa], tr, b1a)[..., 0]
        m0 = s0 / unit
    valid = np.isfinite(m0) & (unit > 0)
    if b1a is not None:
        valid &= b1a > 0
    return _scalar_or_nan(np.where(valid, m0, np.nan))


def spgr_signal_to_r1(signal, m0, flip_angle_deg, tr_s, b1=None):
    """R1 (1/s) by exact inversion of the SPGR equation for a known M0.

        E1 = (M0 sin a - S) / (M0 sin a - S cos a),   R1 = -ln(E1) / TR,   a = b1 * flip angle

    ``signal``, ``m0`` and ``b1`` broadcast against each other.  A signal outside the model's
    range (``S <= 0`` -> R1 <= 0, or ``S >= M0 sin a`` -> R1 infinite), a non-positive M0 or B1
    and non-finite input give NaN.
    """
    fa, tr = _check_acquisition(flip_angle_deg, tr_s)
    s = _f64(signal)
    m0 = _f64(m0)
    alpha = effective_flip_rad([fa], None if b1 is None else _f64(b1))[..., 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m0_sin = m0 * np.sin(alpha)
        e1 = (m0_sin - s) / (m0_sin - s * np.cos(alpha))
        r1 = -np.log(e1) / tr
    valid = (np.isfinite(s) & np.isfinite(m0) & (m0 > 0) & (np.sin(alpha) > 0)
             & np.isfinite(e1) & (e1 > 0) & (e1 < 1) & np.isfinite(r1))
    if b1 is not None:
        valid &= _f64(b1) > 0       # a negative factor can land on a positive sine: not a B1
    return _scalar_or_nan(np.where(valid, r1, np.nan))


def spgr_signal_to_concentration(signal, flip_angle_deg, tr_s, t1_base_s, r1_per_mM_s,
                                 n_baseline, *, n_skip=1, b1=None):
    """Gd concentration (mM) from an SPGR signal time course (OSIPI method).

    Parameters
    ----------
    signal : array_like, time on the LAST axis (any spatial shape before it).
    flip_angle_deg, tr_s : acquisition (one flip angle, TR in seconds).
    t1_base_s : pre-contrast T1 in s, scalar or of the spatial shape.
    r1_per_mM_s : relaxivity per Gd, 1/(mM s) (number or :class:`Relaxivity`).
    n_baseline : number of pre-contrast time points at the start of the series (OSIPI's BLpts).
    n_skip : leading points left out of the baseline mean (not yet in steady state); OSIPI's
        reference skips 1, so the baseline is ``mean(signal[..., n_skip:n_baseline])``.
    b1 : optional multiplicative B1+ factor (scalar or spatial shape).

    Steps: baseline mean -> M0 (:func:`spgr_m0_from_baseline`) -> R1(t) by exact inversion
    (:func:`spgr_signal_to_r1`) -> ``(R1(t) - 1/T1base) / r1``.  NaN where any step is invalid.
    """
    s = _f64(signal)
    if s.ndim == 0:
        raise ValueError("signal must have a time axis (the last axis)")
    n_baseline, n_skip = int(n_baseline), int(n_skip)
    if not 0 <= n_skip < n_baseline <= s.shape[-1]:
        raise ValueError(f"baseline points [{n_skip}:{n_baseline}] are not a non-empty range of "
                         f"the {s.shape[-1]} time points: check n_baseline / n_skip")
    r1_gd = _r1_value(r1_per_mM_s)
    t1 = _f64(t1_base_s)
    baseline = s[..., n_skip:n_baseline].mean(axis=-1)
    m0 = _f64(spgr_m0_from_baseline(baseline, t1, flip_angle_deg, tr_s, b1))
    b1_t = None if b1 is None else _f64(b1)[..., np.newaxis]
    r1_t = _f64(spgr_signal_to_r1(s, m0[..., np.newaxis], flip_angle_deg, tr_s, b1_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        r1_base = np.where(t1 > 0, 1.0 / t1, np.nan)[..., np.newaxis]
    dr1 = delta_r1(r1_t, r1_base)
    return concentration_mM(dr1, r1_gd)
