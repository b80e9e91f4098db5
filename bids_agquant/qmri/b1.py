"""B1+ maps that do not cover the whole head: smooth extrapolation (pure numpy, no I/O).

A TB1map is often a slab, or a box at another angulation than the VFA set, so that a rim of the
head lies outside it. B1+ is a smooth field over the head (its spatial scale is the RF
wavelength, about 12 cm in tissue at 3 T), so the uncovered rim is filled by a low-order
polynomial in world coordinates fitted by least squares to the measured map over the covered
head voxels (:data:`FILL_DEGREE`; coordinates centred and scaled first), and clipped to the range
of the measured values there so that it never extrapolates beyond what the head shows. Covered
voxels keep their measured values.

The fraction of head voxels filled is returned so that callers can report it; with fewer than
:data:`MIN_COVERED_FRACTION` of the head voxels covered nothing is filled (the caller refuses).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FILL_DEGREE", "MIN_COVERED_FRACTION", "FilledB1", "fill_uncovered_b1",
           "polynomial_terms"]

#: Degree of the polynomial (in x, y, z world coordinates) filling uncovered head voxels.
FILL_DEGREE = 2
#: At least this fraction of the head voxels must hold measured B1 for a fill.
MIN_COVERED_FRACTION = 0.5


@dataclass(frozen=True)
class FilledB1:
    b1: np.ndarray                # measured where covered, the polynomial in the filled voxels
    filled: np.ndarray            # bool: head voxels that were filled
    filled_fraction: float        # filled / head voxels


def polynomial_terms(points, degree: int = FILL_DEGREE) -> np.ndarray:
    """Monomials x^a y^b z^c with a + b + c <= ``degree`` of (n, 3) points: an (n, m) matrix."""
    p = np.asarray(points, dtype=np.float64)
    cols = [np.ones(len(p))]
    for total in range(1, degree + 1):
        for a in range(total, -1, -1):
            for b in range(total - a, -1, -1):
                c = total - a - b
                cols.append(p[:, 0] ** a * p[:, 1] ** b * p[:, 2] ** c)
    return np.stack(cols, axis=1)


def fill_uncovered_b1(b1, head, affine, *, degree: int = FILL_DEGREE) -> FilledB1:
    """Fill the head voxels where ``b1`` is NaN (outside the B1 map's field of view).

    ``b1``: B1+ factor on the grid of ``affine`` (NaN where not measured); ``head``: boolean
    mask of the voxels that need B1 (those fitted). Raises ValueError when fewer than
    :data:`MIN_COVERED_FRACTION` of the head voxels are covered.
    """
    b1 = np.asarray(b1, dtype=np.float64)
    head = np.asarray(head, dtype=bool)
    covered = head & np.isfinite(b1)
    missing = head & ~np.isfinite(b1)
    n_head = int(head.sum())
    if not missing.any() or n_head == 0:
        return FilledB1(b1, missing, 0.0)
    if covered.sum() < MIN_COVERED_FRACTION * n_head:
        raise ValueError(f"the B1 map covers {covered.sum() / n_head:.0%} of the head voxels "
                         f"(at least {MIN_COVERED_FRACTION:.0%} are needed to fill the rest)")
    ijk_c, ijk_m = np.argwhere(covered), np.argwhere(missing)
    world = lambda ijk: ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    centre = world(ijk_c).mean(axis=0)
    scale = float(np.abs(world(ijk_c) - centre).max()) or 1.0
    design = polynomial_terms((world(ijk_c) - centre) / scale, degree)
    coef, *_ = np.linalg.lstsq(design, b1[covered], rcond=None)
    values = polynomial_terms((world(ijk_m) - centre) / scale, degree) @ coef
    lo, hi = float(b1[covered].min()), float(b1[covered].max())
    out = b1.copy()
    out[missing] = np.clip(values, lo, hi)
    return FilledB1(out, missing, float(missing.sum()) / n_head)
