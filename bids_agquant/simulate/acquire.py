"""Image formation: sample the continuous phantom through an acquisition grid.

Each voxel's signal is the mean of the SPGR signal (:func:`bids_agquant.qmri.spgr.spgr_signal`)
at sub-voxel points spaced about ``pv_step_mm`` apart (signal-domain partial volume), with the
head in the session's pose and the session's B1+ field (which moves with the head).
Noise and storage are added by :func:`add_rician_noise` / the writer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..qmri.spgr import spgr_signal
from .anatomy import HeadModel
from .fields import B1Field
from .geometry import Grid
from .lesions import Lesion, lesion_fractions

__all__ = ["StateSpec", "render", "sample_properties", "add_rician_noise", "resample_to_grid",
           "subsampling", "average_on_grid"]


@dataclass(frozen=True)
class StateSpec:
    """A contrast state to render: ``key`` (e.g. "D1_AGuIX"), per-lesion concentration (mM) via
    ``Lesion.conc_mM[key]`` (absent = 0) and the agent's relaxivity ``r1_per_mM_s``."""
    key: str
    r1_per_mM_s: float


def subsampling(voxel_mm, pv_step_mm: float) -> tuple[tuple[int, int, int], float]:
    """Sub-samples per axis and the partial-volume ramp width (mm) for a voxel size."""
    sub = tuple(int(max(1, np.ceil(v / pv_step_mm - 1e-6))) for v in voxel_mm)
    soft = float(np.mean([v / s for v, s in zip(voxel_mm, sub)]))
    return sub, soft


def _slabs(grid: Grid, per_slab_points: int, chunk_points: int):
    step = max(1, chunk_points // max(per_slab_points, 1))
    for i0 in range(0, grid.shape[0], step):
        yield i0, min(grid.shape[0], i0 + step)


def render(head: HeadModel, lesions: list[Lesion], pose: np.ndarray, b1: B1Field, grid: Grid,
           states: list[StateSpec], flip_angles_deg, tr_s: float, *, pv_step_mm: float,
           chunk_points: int, with_conc: bool = False):
    """Noiseless signals (relative M0 units) of every state on ``grid``.

    Returns ``(signals, conc)``: ``signals[key]`` float32 of shape ``grid.shape + (n_flip,)``;
    ``conc[key]`` (only ``with_conc``) the voxel mean of the true concentration (mM), float64.
    """
    sub, soft = subsampling(grid.voxel_mm, pv_step_mm)
    nsub = int(np.prod(sub))
    nflip = len(flip_angles_deg)
    inv_pose = np.linalg.inv(pose)
    signals = {s.key: np.zeros(grid.shape + (nflip,), dtype=np.float32) for s in states}
    conc = {s.key: np.zeros(grid.shape) for s in states} if with_conc else {}
    les_m0 = np.array([L.m0 for L in lesions])
    per_slab = grid.shape[1] * grid.shape[2] * nsub
    for i0, i1 in _slabs(grid, per_slab, chunk_points):
        pts = grid.points(i0, i1, sub, transform=inv_pose)
        npts = pts.shape[1]
        m0, r1, uptake = head.tissue_and_uptake(pts, soft, [s.key for s in states])
        which, frac = lesion_fractions(lesions, pts, soft)
        live = np.flatnonzero((m0 > 0) | (which >= 0))          # air gives no signal
        p_live = pts[:, live]
        b1_live = b1(p_live)
        base = spgr_signal(m0[live], 1.0 / r1[live], flip_angles_deg, tr_s, b1_live)  # (n, nflip)
        les = np.flatnonzero(which[live] >= 0)
        les_idx = which[live][les]
        f_les = frac[live][les][:, None]
        out_shape = (i1 - i0, grid.shape[1], grid.shape[2], nsub, nflip)
        for st in states:
            sig = base.copy()
            if st.key in uptake:                 # healthy tissue that enhances (anatomy's own)
                _enhance(sig, m0[live], r1[live], st.r1_per_mM_s * uptake[st.key][live],
                         flip_angles_deg, tr_s, b1_live)
            if les.size:
                les_r1 = np.array([1.0 / L.t1_pre_s + st.r1_per_mM_s * L.conc_mM.get(st.key, 0.0)
                                   for L in lesions])
                s_les = spgr_signal(les_m0[les_idx], 1.0 / les_r1[les_idx], flip_angles_deg,
                                    tr_s, b1_live[les])
                sig[les] = (1.0 - f_les) * sig[les] + f_les * s_les
            full = np.zeros((npts, nflip))
            full[live] = sig
            signals[st.key][i0:i1] = full.reshape(out_shape).mean(axis=3)
            if with_conc:
                c = np.zeros(npts)
                hit = which >= 0
                if hit.any():
                    les_c = np.array([L.conc_mM.get(st.key, 0.0) for L in lesions])
                    c[hit] = frac[hit] * les_c[which[hit]]
                conc[st.key][i0:i1] = c.reshape(out_shape[:3] + (nsub,)).mean(axis=3)
    return signals, conc


def _enhance(sig: np.ndarray, m0: np.ndarray, r1: np.ndarray, delta_r1: np.ndarray,
             flip_angles_deg, tr_s: float, b1: np.ndarray) -> None:
    """Replace in ``sig`` (n, nflip) the signal of points whose R1 rises by ``delta_r1``."""
    hit = np.flatnonzero(delta_r1 > 0)
    if hit.size:
        sig[hit] = spgr_signal(m0[hit], 1.0 / (r1[hit] + delta_r1[hit]), flip_angles_deg, tr_s,
                               b1[hit])


def sample_properties(head: HeadModel, lesions: list[Lesion], pose: np.ndarray, grid: Grid, *,
                      soft_mm: float, chunk_points: int, state_keys=()):
    """True tissue maps at the voxel centres of ``grid`` (head in ``pose``).

    Returns dict with ``t1_s`` (pre-contrast, lesions included by R1 partial volume), ``m0``,
    ``lesion_index`` (int, -1 none; centre inside the lesion), ``lesion_nearest`` (the lesion whose
    partial-volume ramp reaches the voxel, -1 none), ``lesion_fraction`` and ``anatomy``: the
    head model's own truth maps (``head.truth_properties``; lesions not included).
    """
    inv_pose = np.linalg.inv(pose)
    out = {"t1_s": np.zeros(grid.shape), "m0": np.zeros(grid.shape),
           "lesion_index": np.full(grid.shape, -1, dtype=np.int32),
           "lesion_nearest": np.full(grid.shape, -1, dtype=np.int32),
           "lesion_fraction": np.zeros(grid.shape), "anatomy": {}}
    for i0, i1 in _slabs(grid, grid.shape[1] * grid.shape[2], chunk_points):
        pts = grid.points(i0, i1, transform=inv_pose)
        m0, r1, maps = head.truth_properties(pts, soft_mm, state_keys)
        shp = (i1 - i0,) + grid.shape[1:]
        for name, v in maps.items():
            out["anatomy"].setdefault(name, np.zeros(grid.shape))[i0:i1] = v.reshape(shp)
        which, frac = lesion_fractions(lesions, pts, soft_mm)
        les = which >= 0
        if les.any():
            lr1 = np.array([1.0 / L.t1_pre_s for L in lesions])[which[les]]
            lm0 = np.array([L.m0 for L in lesions])[which[les]]
            r1[les] = (1 - frac[les]) * r1[les] + frac[les] * lr1
            m0[les] = (1 - frac[les]) * m0[les] + frac[les] * lm0
        out["t1_s"][i0:i1] = (1.0 / r1).reshape(shp)
        out["m0"][i0:i1] = m0.reshape(shp)
        out["lesion_index"][i0:i1] = np.where(frac > 0.5, which, -1).reshape(shp)
        out["lesion_nearest"][i0:i1] = which.reshape(shp)
        out["lesion_fraction"][i0:i1] = frac.reshape(shp)
    return out


def evaluate_on_grid(func, pose: np.ndarray, grid: Grid, chunk_points: int) -> np.ndarray:
    """``func(head_points (3, N))`` at the voxel centres of ``grid`` with the head in ``pose``."""
    inv_pose = np.linalg.inv(pose)
    out = np.zeros(grid.shape)
    for i0, i1 in _slabs(grid, grid.shape[1] * grid.shape[2], chunk_points):
        pts = grid.points(i0, i1, transform=inv_pose)
        out[i0:i1] = func(pts).reshape((i1 - i0,) + grid.shape[1:])
    return out


def average_on_grid(func, grid: Grid, sub, chunk_points: int) -> dict[str, np.ndarray]:
    """Voxel means over ``sub`` sub-voxel points of each map ``func(head_points (3, N))``
    returns (a dict name -> (N,) array), on ``grid`` with the head at baseline (identity pose)."""
    nsub = int(np.prod(sub))
    out: dict[str, np.ndarray] = {}
    for i0, i1 in _slabs(grid, grid.shape[1] * grid.shape[2] * nsub, chunk_points):
        values = func(grid.points(i0, i1, sub))
        for name, v in values.items():
            if name not in out:
                out[name] = np.zeros(grid.shape)
            out[name][i0:i1] = v.reshape((i1 - i0,) + grid.shape[1:] + (nsub,)).mean(axis=3)
    return out


def resample_to_grid(values: np.ndarray, src: Grid, src_pose: np.ndarray, dst: Grid,
                     dst_pose: np.ndarray, chunk_points: int, order: int = 1) -> np.ndarray:
    """Resample a map acquired on ``src`` (head in ``src_pose``) onto ``dst`` (head in
    ``dst_pose``) through head space, i.e. with perfect motion correction (0 outside ``src``)."""
    m = np.linalg.inv(src.affine) @ src_pose @ np.linalg.inv(dst_pose)
    out = np.zeros(dst.shape)
    for i0, i1 in _slabs(dst, dst.shape[1] * dst.shape[2], chunk_points):
        idx = dst.points(i0, i1, transform=m)
        out[i0:i1] = ndimage.map_coordinates(values, idx, order=order, mode="constant", cval=0.0,
                                             prefilter=False).reshape((i1 - i0,) + dst.shape[1:])
    return out


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma`` per
    channel (Rician); float64."""
    re = signal + sigma * rng.standard_normal(signal.shape)
    im = sigma * rng.standard_normal(signal.shape)
    return np.hypot(re, im)
