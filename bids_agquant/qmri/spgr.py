"""The spoiled gradient-echo (SPGR / FLASH) steady-state signal: one equation for the whole project.

Fitting, simulation, benchmarks and tests all call :func:`spgr_signal`; nothing else writes the
equation out again.

    S(a) = M0 * sin(b a) * (1 - E1) / (1 - E1 cos(b a)),   E1 = exp(-TR / T1)

with ``a`` the nominal flip angle and ``b`` the multiplicative B1+ factor (1 without a map).
"""
from __future__ import annotations

import numpy as np

__all__ = ["spgr_signal", "effective_flip_rad"]


def effective_flip_rad(flip_angles_deg, b1=None):
    """Actual flip angles in radians, ``b1 * a``, broadcast against the flip-angle (last) axis.

    ``flip_angles_deg`` is 1-D (one value per acquisition).  ``b1`` is None, a scalar or an
    array of spatial shape; the result has shape ``b1.shape + (n_flip,)`` (or ``(n_flip,)``).
    """
    alpha = np.deg2rad(np.asarray(flip_angles_deg, dtype=np.float64))
    if b1 is None:
        return alpha
    b1 = np.asarray(b1, dtype=np.float64)
    return b1[..., np.newaxis] * alpha


def spgr_signal(m0, t1_s, flip_angles_deg, tr_s, b1=None):
    """Steady-state SPGR signal.

    Parameters
    ----------
    m0, t1_s : scalar or array (spatial shape)
        Equilibrium magnetisation (any scale) and T1 in seconds.
    flip_angles_deg : 1-D sequence
        Nominal flip angles in degrees.
    tr_s : float
        Repetition time in seconds.
    b1 : None, scalar or array (spatial shape)
        Multiplicative B1+ factor on the nominal flip angle.

    Returns
    -------
    ndarray of shape ``broadcast(m0, t1, b1).shape + (n_flip,)``; flip angles on the last axis.
    """
    m0 = np.asarray(m0, dtype=np.float64)[..., np.newaxis]
    t1 = np.asarray(t1_s, dtype=np.float64)[..., np.newaxis]
    alpha = effective_flip_rad(flip_angles_deg, b1)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.exp(-float(tr_s) / t1)
        return m0 * np.sin(alpha) * (1.0 - e1) / (1.0 - e1 * np.cos(alpha))
