"""Smooth random fields (tissue texture, cortical folding) and the B1+ transmit field.

Random fields live on their own lattice in head space (independent of any image grid), so a seed
gives the same anatomy at every resolution; they are evaluated anywhere by trilinear interpolation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LatticeField", "gaussian_random_field", "B1Field"]


@dataclass(frozen=True)
class LatticeField:
    """Scalar field sampled on an axis-aligned lattice in head space (mm)."""
    origin: np.ndarray      # head coords of lattice index (0, 0, 0)
    spacing: float          # mm
    values: np.ndarray      # float32, 3-D

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Values at head-space ``points`` (3, N) by trilinear interpolation (edge values outside)."""
        return self.at_index(self.index(points))

    def index(self, points: np.ndarray) -> np.ndarray:
        """Lattice coordinates of ``points`` (3, N) (shared by fields on the same lattice)."""
        return (points - self.origin[:, None]) / self.spacing

    def at_index(self, idx: np.ndarray) -> np.ndarray:
        """Trilinear values at lattice coordinates ``idx`` (3, N) (edge values outside)."""
        return ndimage.map_coordinates(self.values, idx, order=1, mode="nearest", prefilter=False)


def gaussian_random_field(rng: np.random.Generator, lo, hi, spacing: float, sigma_mm: float,
                          distance_scaled: bool = False) -> LatticeField:
    """Zero-mean Gaussian random field over the box ``lo..hi`` (mm): white noise smoothed with a
    Gaussian of ``sigma_mm``, scaled to unit standard deviation.

    With ``distance_scaled`` the field is instead divided by its mean gradient magnitude, so that
    ``|field|`` approximates the distance (mm) to its zero level set (used for sulci).
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    shape = tuple(int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi))
    noise = rng.standard_normal(shape).astype(np.float32)
    field = ndimage.gaussian_filter(noise, sigma_mm / spacing, mode="wrap")
    field -= field.mean()
    if distance_scaled:
        grads = np.gradient(field, spacing)
        gmag = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grads))
        field = field / np.float32(gmag.mean())
    else:
        field = field / np.float32(field.std())
    return LatticeField(lo, float(spacing), field.astype(np.float32))


@dataclass(frozen=True)
class B1Field:
    """Smooth B1+ factor in head space (it moves with the head).

    ``raw(p) = exp(-|p - c|^2 / (2 w^2)) + g . p / 100 + q (p_z / 100)^2`` (central brightening,
    a gradient and a vertical curvature as at 3 T), mapped linearly so that over the head it spans
    ``range`` exactly: ``b1 = offset + scale * raw``.
    """
    centre: np.ndarray
    width_mm: float
    gradient: np.ndarray
    curvature: float
    offset: float
    scale: float

    def raw(self, points: np.ndarray) -> np.ndarray:
        """Unscaled field at head-space ``points`` (3, N)."""
        x, y, z = points
        c, g = self.centre, self.gradient
        d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
        bump = np.exp(d2 * (-0.5 / self.width_mm ** 2))
        return bump + (g[0] * x + g[1] * y + g[2] * z) / 100.0 + self.curvature * (z / 100.0) ** 2

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.offset + self.scale * self.raw(points)

    @classmethod
    def random(cls, rng: np.random.Generator, head_points: np.ndarray, b1_range,
               base: "B1Field | None" = None, variation: float = 0.3) -> "B1Field":
        """A random field spanning ``b1_range`` over ``head_points`` (3, N); with ``base``, a perturbation
        of that field (relative size ``variation``) as between sessions of one participant."""
        centre = rng.normal(0, 12, 3) + np.array([0.0, 0.0, 10.0])
        width = rng.uniform(55, 80)
        gradient = rng.normal(0, 0.25, 3)
        curvature = rng.normal(0, 0.3)
        if base is not None:
            v = variation
            centre = base.centre + v * (centre - base.centre)
            width = base.width_mm + v * (width - base.width_mm)
            gradient = base.gradient + v * (gradient - base.gradient)
            curvature = base.curvature + v * (curvature - base.curvature)
        f = cls(centre, float(width), gradient, float(curvature), 0.0, 1.0)
        r = f.raw(head_points)
        lo, hi = float(r.min()), float(r.max())
        scale = (b1_range[1] - b1_range[0]) / (hi - lo) if hi > lo else 0.0
        return cls(centre, float(width), gradient, float(curvature),
                   float(b1_range[0] - scale * lo), float(scale))
