"""Metastases: placement, shape, pre-contrast T1 and per-state Gd concentrations.

A lesion is an ellipsoid (a sphere by default) with uniform T1 (pre-contrast) and, in each
post-contrast state, a uniform Gd concentration (mM). Its R1 in a state is
``R1 = 1/T1_pre + r1 * [Gd]`` with ``r1`` from :func:`bids_agquant.qmri.relaxivity.get_relaxivity`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .anatomy import HeadModel, ellipsoid_signed_distance, ramp
from .geometry import rotation_matrix

__all__ = ["Lesion", "place_lesions", "lesion_fractions", "axial_diameter_mm"]

LESION_M0 = 0.85   # relative proton density of tumour tissue


@dataclass
class Lesion:
    index: int                      # 0-based order of creation (before sorting by mask label)
    centre: np.ndarray              # head coords, mm (= world at baseline)
    semi_axes: np.ndarray           # mm, in the lesion's own axes
    rotation: np.ndarray            # 3x3, lesion axes -> head axes
    t1_pre_s: float
    m0: float
    leakiness: float                # 0..1, drives how much agent the lesion takes up
    conc_mM: dict = field(default_factory=dict)   # state key "<session>_<agent>" -> mM Gd

    @property
    def diameter_mm(self) -> float:
        """Longest 3-D diameter."""
        return float(2 * self.semi_axes.max())

    @property
    def volume_mm3(self) -> float:
        return float(4.0 / 3.0 * np.pi * np.prod(self.semi_axes))

    @property
    def bounding_radius(self) -> float:
        return float(self.semi_axes.max())

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative inside) at head-space ``points`` (3, N)."""
        q = self.rotation.T @ (points - self.centre[:, None])   # head -> lesion axes
        return ellipsoid_signed_distance(q, self.semi_axes)


def axial_diameter_mm(lesion: Lesion, normal) -> float:
    """Longest diameter of the lesion in planes perpendicular to ``normal`` (head axes): the major
    axis of its central section (the largest of the parallel sections of an ellipsoid)."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    helper = np.array([1.0, 0, 0]) if abs(n[0]) < 0.9 else np.array([0, 1.0, 0])
    u = np.cross(n, helper)
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    basis = np.stack([u, v], axis=1)                           # 3x2 in head axes
    a_mat = lesion.rotation @ np.diag(1.0 / lesion.semi_axes ** 2) @ lesion.rotation.T
    lam = np.linalg.eigvalsh(basis.T @ a_mat @ basis).min()
    return float(2.0 / np.sqrt(lam))


def place_lesions(rng: np.random.Generator, head: HeadModel, diameters_mm, *, shape: str,
                  max_aspect: float, t1_range, min_gap_mm: float, max_tries: int = 20000) -> list[Lesion]:
    """Place non-touching lesions of the given longest diameters inside the brain parenchyma,
    largest first (rejection sampling, deterministic for ``rng``)."""
    order = np.argsort(-np.asarray(diameters_mm, dtype=np.float64), kind="stable")
    placed: list[Lesion] = []
    for idx in order:
        d = float(diameters_mm[idx])
        if shape == "sphere":
            semi = np.full(3, d / 2)
            rot = np.eye(3)
        else:
            semi = d / 2 / np.concatenate([[1.0], rng.uniform(1.0, max_aspect, 2)])
            rot = rotation_matrix(rng.standard_normal(3), rng.uniform(0, 180))
        for _ in range(max_tries):
            c = head.centre + rng.uniform(-1, 1, 3) * head.radii * 0.75
            if not head.lesion_allowed(c, d / 2):
                continue
            if any(np.linalg.norm(c - o.centre) < d / 2 + o.bounding_radius + min_gap_mm for o in placed):
                continue
            break
        else:
            raise ValueError(f"cannot place a lesion of {d} mm among {len(placed)} others; use fewer "
                             f"or smaller lesion diameters")
        placed.append(Lesion(index=int(idx), centre=c, semi_axes=semi, rotation=rot,
                             t1_pre_s=float(rng.uniform(*t1_range)), m0=LESION_M0,
                             leakiness=float(rng.uniform(0, 1))))
    placed.sort(key=lambda les: les.index)
    return placed


def lesion_fractions(lesions: list[Lesion], points: np.ndarray, soft_mm: float):
    """Per point of ``points`` (3, N): index into ``lesions`` (-1: none) and partial-volume
    fraction of that lesion.

    Lesions never overlap (placement keeps a gap), so one lesion per point suffices.
    """
    n = points.shape[1]
    which = np.full(n, -1, dtype=np.int32)
    frac = np.zeros(n)
    w = max(float(soft_mm), 1e-3)
    lo, hi = points.min(axis=1), points.max(axis=1)
    for k, les in enumerate(lesions):
        reach = les.bounding_radius + w
        if np.any(les.centre + reach < lo) or np.any(les.centre - reach > hi):
            continue
        box = np.abs(points[0] - les.centre[0]) <= reach
        box &= np.abs(points[1] - les.centre[1]) <= reach
        box &= np.abs(points[2] - les.centre[2]) <= reach
        if not box.any():
            continue
        sel = np.flatnonzero(box)
        f = ramp(-les.signed_distance(points[:, sel]) / w)
        hit = f > 0
        which[sel[hit]] = k
        frac[sel[hit]] = f[hit]
    return which, frac
