"""Analytic head anatomy: scalp, fat, skull, CSF, folded cortex, white matter, deep grey matter,
ventricles, with smooth texture (3 T relaxation times).

:meth:`HeadModel.tissue` evaluates proton density ``m0`` (relative, CSF = 1) and ``r1`` (1/s) of
healthy tissue at any head-space points, with linear partial-volume ramps of width ``soft_mm``
across every boundary (the partial volume of a voxel of that size across a plane).
Lesions are overlaid separately (``lesions.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import LatticeField, gaussian_random_field

__all__ = ["TISSUES", "HeadModel"]

#: (T1 s, relative proton density) at 3 T, for both head models. Cortical bone's proton density is
#: the effective one at the protocol's echo times (T2* well below 1 ms leaves almost no signal).
TISSUES = {
    "air": (1.0, 0.0),
    "skin": (1.1, 0.70),
    "fat": (0.38, 0.90),
    "skull": (0.50, 0.08),
    "csf": (4.0, 1.00),
    "gm": (1.35, 0.80),
    "deep_gm": (1.20, 0.78),
    "wm": (0.85, 0.69),
    "dura": (1.10, 0.55),
    "bone": (0.30, 0.04),
    "marrow": (0.40, 0.70),
    "muscle": (1.42, 0.70),
}

#: depth (mm below the scalp surface) where each layer starts
LAYERS = (("skin", 0.0), ("fat", 1.5), ("skull", 5.5), ("csf", 12.0), ("brain", 14.5))
CORTEX_MM = 3.0
SULCUS_HALF_WIDTH_MM = 0.75

# ellipsoids in head coordinates (centre mm, semi-axes mm), relative to the head centre
VENTRICLES = (((-10.0, 0.0, 18.0), (6.0, 24.0, 9.0)), ((10.0, 0.0, 18.0), (6.0, 24.0, 9.0)),
              ((0.0, -8.0, 4.0), (2.0, 10.0, 8.0)))
DEEP_GM = (((-11.0, -12.0, 5.0), (8.0, 13.0, 9.0)), ((11.0, -12.0, 5.0), (8.0, 13.0, 9.0)),
           ((-24.0, 3.0, 6.0), (5.0, 13.0, 9.0)), ((24.0, 3.0, 6.0), (5.0, 13.0, 9.0)),
           ((-13.0, 14.0, 16.0), (5.0, 9.0, 8.0)), ((13.0, 14.0, 16.0), (5.0, 9.0, 8.0)))


def ramp(x):
    """Partial-volume fraction for signed distance ``x`` in units of the ramp width (inside > 0)."""
    return np.clip(0.5 + x, 0.0, 1.0)


def ellipsoid_signed_distance(q: np.ndarray, semi_axes) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) of points ``q`` (3, N), relative to the
    centre and in the ellipsoid's own axes, to its surface, measured along the ray from the centre
    (exact for spheres)."""
    a = np.asarray(semi_axes, dtype=np.float64)
    x, y, z = q
    rho = np.sqrt((x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2)
    norm = np.sqrt(x * x + y * y + z * z)
    rho = np.maximum(rho, 1e-9)
    return norm * (1.0 - 1.0 / rho)


def _shifted(points: np.ndarray, centre) -> np.ndarray:
    return points - np.asarray(centre, dtype=np.float64)[:, None]


def _ellipsoid_fraction(q: np.ndarray, centre, semi_axes, w: float) -> np.ndarray:
    """Partial-volume fraction (ramp width ``w``) of an axis-aligned ellipsoid at points ``q``
    (3, N); only points inside its bounding box (plus ``w``) are evaluated."""
    c = np.asarray(centre, dtype=np.float64)
    reach = np.asarray(semi_axes, dtype=np.float64) + w
    box = np.abs(q[0] - c[0]) <= reach[0]
    box &= np.abs(q[1] - c[1]) <= reach[1]
    box &= np.abs(q[2] - c[2]) <= reach[2]
    out = np.zeros(q.shape[1])
    sel = np.flatnonzero(box)
    if sel.size:
        out[sel] = ramp(-ellipsoid_signed_distance(_shifted(q[:, sel], c), semi_axes) / w)
    return out


@dataclass(frozen=True)
class HeadModel:
    centre: np.ndarray            # head coords of the head centre (mm)
    radii: np.ndarray             # scalp ellipsoid semi-axes (x L-R, y P-A, z I-S), mm
    shape_field: LatticeField     # smooth bumps of the scalp surface (unit sd)
    fold_field: LatticeField      # |value| ~ distance (mm) to the nearest sulcus
    sulcal_depth_field: LatticeField
    texture_m0: LatticeField
    texture_r1: LatticeField
    shape_amp_mm: float = 2.5
    sulcal_depth_mm: float = 13.0
    texture_m0_amp: float = 0.04
    texture_r1_amp: float = 0.03

    @classmethod
    def random(cls, rng: np.random.Generator) -> "HeadModel":
        centre = np.array([rng.uniform(-3, 3), rng.uniform(0, 10), rng.uniform(5, 20)])
        radii = np.array([72.0, 92.0, 80.0]) * rng.uniform(0.97, 1.03, 3)
        lo = centre - radii - 12.0
        hi = centre + radii + 12.0
        return cls(
            centre=centre, radii=radii,
            shape_field=gaussian_random_field(rng, lo, hi, 4.0, 12.0),
            fold_field=gaussian_random_field(rng, lo, hi, 1.25, 3.5, distance_scaled=True),
            sulcal_depth_field=gaussian_random_field(rng, lo, hi, 4.0, 10.0),
            texture_m0=gaussian_random_field(rng, lo, hi, 1.5, 2.5),
            texture_r1=gaussian_random_field(rng, lo, hi, 1.5, 2.5),
        )

    # --- geometry -------------------------------------------------------------------------
    def depth_mm(self, points: np.ndarray) -> np.ndarray:
        """Approximate depth (mm) below the scalp surface (negative outside the head) at head-space
        ``points`` (3, N)."""
        x, y, z = _shifted(points, self.centre)
        a = self.radii
        rho = np.maximum(np.sqrt((x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2), 1e-9)
        norm = np.sqrt(x * x + y * y + z * z)
        return norm * (1.0 - rho) / rho + self.shape_amp_mm * self.shape_field(points)

    def brain_depth_mm(self, points: np.ndarray) -> np.ndarray:
        """Depth (mm) below the brain surface (negative outside the brain)."""
        return self.depth_mm(points) - LAYERS[-1][1]

    def head_mask(self, points: np.ndarray, margin_mm: float = 3.0) -> np.ndarray:
        """Cheap test: points possibly inside the head (within ``margin_mm`` of the scalp)."""
        x, y, z = _shifted(points, self.centre)
        a = self.radii + self.shape_amp_mm * 5 + margin_mm
        return (x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2 < 1.0

    # --- tissue properties -------------------------------------------------------------------
    def tissue(self, points: np.ndarray, soft_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """``(m0, r1)`` of healthy tissue at head-space ``points`` (3, N); air outside the head."""
        n = points.shape[1]
        m0 = np.zeros(n)
        r1 = np.full(n, 1.0 / TISSUES["skin"][0])
        inside = self.head_mask(points)
        if not inside.any():
            return m0, r1
        p = points[:, inside]
        w = max(float(soft_mm), 1e-3)
        d = self.depth_mm(p)
        m0_in = np.zeros(p.shape[1])
        r1_in = np.full(p.shape[1], 1.0 / TISSUES["skin"][0])

        def blend(frac, t1_s, pd):
            nonlocal m0_in, r1_in
            m0_in = m0_in + frac * (pd - m0_in)
            r1_in = r1_in + frac * (1.0 / t1_s - r1_in)

        for name, start in LAYERS[:-1]:
            t1_s, pd = TISSUES[name]
            blend(ramp((d - start) / w), t1_s, pd)
        brain = d > LAYERS[-1][1] - w
        if brain.any():
            bm0, br1 = self._brain(p[:, brain], d[brain] - LAYERS[-1][1], w)
            frac = ramp((d[brain] - LAYERS[-1][1]) / w)
            m0_in[brain] += frac * (bm0 - m0_in[brain])
            r1_in[brain] += frac * (br1 - r1_in[brain])
        # texture (multiplicative, smooth, ~4 % in proton density and 3 % in R1)
        m0_in *= 1.0 + self.texture_m0_amp * self.texture_m0(p)
        r1_in *= 1.0 + self.texture_r1_amp * self.texture_r1(p)
        m0[inside] = m0_in
        r1[inside] = r1_in
        return m0, r1

    def _brain(self, p: np.ndarray, b: np.ndarray, w: float):
        """Brain parenchyma at points ``p`` with depth ``b`` below the brain surface."""
        t1_wm, pd_wm = TISSUES["wm"]
        m0 = np.full(p.shape[1], pd_wm)
        r1 = np.full(p.shape[1], 1.0 / t1_wm)

        def blend(frac, name):
            nonlocal m0, r1
            t1_s, pd = TISSUES[name]
            m0 = m0 + frac * (pd - m0)
            r1 = r1 + frac * (1.0 / t1_s - r1)

        q = _shifted(p, self.centre)
        for c, ax in DEEP_GM:
            blend(_ellipsoid_fraction(q, c, ax, w), "deep_gm")
        # cortex: within CORTEX_MM of the brain surface or of a sulcus
        g = np.abs(self.fold_field(p))
        sulcal_depth = self.sulcal_depth_mm * (1.0 + 0.25 * self.sulcal_depth_field(p))
        to_sulcus = np.sqrt(np.maximum(b - sulcal_depth, 0.0) ** 2
                            + np.maximum(g - SULCUS_HALF_WIDTH_MM, 0.0) ** 2)
        cortical_distance = np.minimum(b, to_sulcus)
        blend(ramp((CORTEX_MM - cortical_distance) / w), "gm")
        blend(ramp((SULCUS_HALF_WIDTH_MM - g) / w) * ramp((sulcal_depth - b) / w), "csf")
        for c, ax in VENTRICLES:
            blend(_ellipsoid_fraction(q, c, ax, w), "csf")
        return m0, r1

    def tissue_and_uptake(self, points: np.ndarray, soft_mm: float, state_keys=()):
        """``(m0, r1, conc)``: :meth:`tissue` and the contrast agent taken up by healthy tissue per
        state key (none in this model: ``conc`` is empty, only lesions enhance)."""
        m0, r1 = self.tissue(points, soft_mm)
        return m0, r1, {}

    def truth_properties(self, points: np.ndarray, soft_mm: float, state_keys=()):
        """``(m0, r1, maps)``: :meth:`tissue` and the anatomy's own truth maps (none here)."""
        m0, r1 = self.tissue(points, soft_mm)
        return m0, r1, {}

    def delta_r1(self, points: np.ndarray, soft_mm: float, state_key: str,
                 r1_per_mM_s: float) -> np.ndarray:
        """R1 increase (1/s) of healthy tissue in a contrast state: 0 in this model."""
        return np.zeros(points.shape[1])

    def lesion_allowed(self, centre_head: np.ndarray, radius_mm: float, margin_mm: float = 4.0) -> bool:
        """True when a lesion of ``radius_mm`` at ``centre_head`` stays inside the brain parenchyma
        (away from the brain surface by ``margin_mm`` and outside ventricles and deep grey matter)."""
        c = np.asarray(centre_head, dtype=np.float64)[:, None]
        if self.brain_depth_mm(c)[0] < radius_mm + margin_mm + self.shape_amp_mm:
            return False
        q = _shifted(c, self.centre)
        for cc, ax in VENTRICLES + DEEP_GM:
            if ellipsoid_signed_distance(_shifted(q, cc), ax)[0] < radius_mm + 2.0:
                return False
        return True
