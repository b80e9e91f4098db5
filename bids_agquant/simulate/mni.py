"""Head model on the MNI ICBM152 brain: every participant gets a brain of its own, warped from the
template, inside dura, skull (tables and fatty diploe), temporal muscle, fat, skin and a neck.

Mapping (head space -> template), evaluated for every point (pull-back, so it is never inverted):

1. affine: undo the participant's rotation (up to 4 degrees about the head centre) and anisotropic
   scaling (0.95 x 0.9-1.1 per axis, see :data:`TEMPLATE_SIZE`); the result ``q`` is in template-aligned millimetres ("affine
   space"), where the extracranial layers, the neck and all random fields live;
2. smooth random displacement ``q + u(q)`` (Gaussian random field per component, smoothed over
   ~12 mm, RMS ~2-3.5 mm);
3. ventricle size: a radial warp about the ventricles' centroid, ``t = q - a w(q) (q - c)`` with a
   Gaussian weight ``w``; the ventricles scale by ``1 / (1 - a)`` (0.8-1.4), the map stays
   invertible (its Jacobian is ``(1 - a w)^2 (1 - a w (1 - rho^2)) > 0`` for ``|a| < 2``).

At ``t`` the template's grey- and white-matter probability maps and its CSF (intracranial minus
GM minus WM) are interpolated trilinearly: partial volume at the template's 1 mm. The template
is extended below its last slice by repeating it (the medulla continues as a spinal cord).

Outside the intracranial volume the tissues follow the signed distance ``d`` (mm, > 0 outside) to
the participant's warped intracranial surface, computed once per participant by a Euclidean
distance transform on a 1 mm lattice of affine space: dura, inner table, diploe (fatty marrow),
outer table, temporal muscle (lateral), subcutaneous fat, skin, with thicknesses that vary
smoothly (random fields). Below the skull base a neck (skin, fat, muscle, a vertebral body of
marrow in cortical bone) fills the field of view. Dura, marrow, muscle and skin (its vessels)
take up contrast agent: ``enhancement[state][tissue]`` (mM), see :func:`draw_enhancement`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..templates import TEMPLATE_NAME, mni152_files
from .anatomy import TISSUES, ellipsoid_signed_distance, ramp
from .fields import LatticeField, gaussian_random_field
from .geometry import random_rotation, rotation_angle_deg

__all__ = ["MNIHead", "BrainWarp", "TemplateMaps", "load_template", "draw_enhancement",
           "FRACTION_TISSUES", "ENHANCING_TISSUES", "TRUTH_FRACTIONS"]

#: Tissues of :meth:`MNIHead.fractions` (each a key of ``anatomy.TISSUES``); they sum to 1.
FRACTION_TISSUES = ("gm", "wm", "csf", "dura", "bone", "marrow", "muscle", "fat", "skin", "air")
#: Fraction maps of the truth (``truth.load_map(participant, key)``).
TRUTH_FRACTIONS = ("intracranial", "parenchyma", "gm", "wm", "csf", "extracranial_enhancing")
#: Extracranial tissues that take up contrast agent.
ENHANCING_TISSUES = ("dura", "marrow", "muscle", "skin")

#: Template point (mm) placed at the head centre: above the middle of the intracranial box, so
#: that a 180 mm field of view reaches from the scalp's top to the foramen magnum.
TEMPLATE_ANCHOR = (0.0, -17.0, 15.0)
#: Linear size of an average adult's head relative to the template (the ICBM152 brain is large:
#: 1.89 L intracranial; x 0.95 gives 1.62 L), before each participant's 0.9-1.1 per axis.
TEMPLATE_SIZE = 0.95
#: Affine-space box (mm) of the random fields and the distance lattice.
FIELD_LO = (-105.0, -145.0, -125.0)
FIELD_HI = (105.0, 115.0, 115.0)
#: Box (mm) of the template's intracranial volume (it continues downwards as a spinal cord).
BRAIN_LO = (-72.0, -107.0, -72.0)
BRAIN_HI = (72.0, 73.0, 82.0)
#: Mean thickness (mm) of the extracranial layers, inside out.
LAYER_MM = {"dura": 0.8, "inner_table": 1.5, "diploe": 2.5, "outer_table": 1.5, "fat": 3.5,
            "skin": 2.0}
TEMPORAL_MUSCLE_MM = 7.0
MAX_VARIATION = 1.8            # thickness factors of the random fields stay within 1/1.8-1.8
#: Beyond this distance (mm) from the intracranial surface: air, or the neck (all layers at
#: their thickest, plus a ramp).
HEAD_REACH_MM = MAX_VARIATION * (sum(LAYER_MM.values()) + TEMPORAL_MUSCLE_MM) + 3.0
# neck (affine space, mm): elliptic cylinder below NECK_TOP_Z, skin and fat rims, vertebral body
NECK_CENTRE_Y = -30.0
NECK_SEMI_AXES = (56.0, 62.0)
NECK_TOP_Z = -25.0
NECK_BLEND_MM = 12.0
NECK_SKIN_MM, NECK_FAT_MM = 2.0, 5.0
VERTEBRA_OFFSET_Y = 18.0       # anterior to the spinal cord
VERTEBRA_RADIUS_MM, VERTEBRA_CORTEX_MM = 8.0, 1.5
VERTEBRA_TOP_Z = -70.0
# ventricle warp
VENTRICLE_SIGMA_MM = (22.0, 36.0, 20.0)


def smoothstep(x):
    """0 below 0, 1 above 1, smooth (C1) in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class TemplateMaps:
    """The template's tissue maps (float32, fractions) on its 1 mm grid (axes = RAS mm)."""
    origin: np.ndarray          # mm of voxel (0, 0, 0)
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    ic: np.ndarray              # gm + wm + csf (intracranial)
    ventricle_centre: np.ndarray
    cord_xy: np.ndarray         # centre (x, y) of the intracranial section of the last slice

    def sample(self, t: np.ndarray, maps=("gm", "wm", "csf")) -> list[np.ndarray]:
        """Trilinear values of ``maps`` at template points ``t`` (3, N) mm (edges repeated)."""
        idx = t - self.origin[:, None]
        return [ndimage.map_coordinates(getattr(self, m), idx, order=1, mode="nearest",
                                        prefilter=False) for m in maps]


@functools.lru_cache(maxsize=1)
def load_template() -> TemplateMaps:
    """Read the MNI152 files where nilearn installs them (once per process)."""
    files = mni152_files()
    img = nib.load(files.t1w)
    lin = img.affine[:3, :3]
    if not np.allclose(lin, np.eye(3)):
        raise ValueError(f"{files.t1w}: expected a 1 mm RAS grid, got affine {img.affine.tolist()}")
    inside = np.asarray(img.dataobj) > 0
    gm = np.asarray(nib.load(files.gm).dataobj, dtype=np.float32) / np.float32(255.0)
    wm = np.asarray(nib.load(files.wm).dataobj, dtype=np.float32) / np.float32(255.0)
    tissue = gm + wm
    over = tissue > 1.0
    gm[over] /= tissue[over]
    wm[over] /= tissue[over]
    ic = np.maximum(inside.astype(np.float32), gm + wm)
    csf = np.maximum(ic - gm - wm, 0.0).astype(np.float32)
    origin = img.affine[:3, 3].astype(np.float64)
    coords = [np.arange(n) + origin[i] for i, n in enumerate(inside.shape)]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
    central = (np.abs(x) < 25) & (y > -45) & (y < 25) & (z > -5) & (z < 35) & (csf > 0.5)
    vent = np.array([float((np.broadcast_to(a, central.shape)[central]).mean()) for a in (x, y, z)])
    last = np.argwhere(inside[:, :, 0])
    cord = last.mean(axis=0) + origin[:2] if last.size else np.array([0.0, -45.0])
    # keep the box of the tissue plus one empty voxel (compact in memory: faster lookups); the
    # lowest slice stays the lowest (repeated downwards by the lookups)
    nz = np.argwhere(ic > 0)
    lo = np.maximum(nz.min(axis=0) - 1, 0)
    lo[2] = 0
    hi = np.minimum(nz.max(axis=0) + 2, ic.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = lambda a: np.ascontiguousarray(a[box])
    return TemplateMaps(origin + lo, crop(gm), crop(wm), crop(csf), crop(gm + wm + csf), vent, cord)


@dataclass(frozen=True)
class BrainWarp:
    """Head space -> template (see the module docstring)."""
    head_centre: np.ndarray
    rotation: np.ndarray            # 3x3: head axes = rotation @ template axes
    scale: np.ndarray               # (3,) head mm per template mm, per template axis
    displacement: tuple             # 3 LatticeField (mm) in affine space
    ventricle_centre: np.ndarray    # template mm
    ventricle_amount: float         # a; ventricle scale factor 1 / (1 - a)

    def to_affine(self, points: np.ndarray) -> np.ndarray:
        """Affine space (template-aligned mm) of head-space ``points`` (3, N)."""
        lin = self.rotation.T / self.scale[:, None]             # one 3x4 affine: two passes
        shift = np.asarray(TEMPLATE_ANCHOR) - lin @ self.head_centre
        return lin @ points + shift[:, None]

    def from_affine(self, q: np.ndarray) -> np.ndarray:
        """Head space of affine-space points ``q`` (3, N) (inverse of :meth:`to_affine`)."""
        anchor = np.asarray(TEMPLATE_ANCHOR)[:, None]
        return self.rotation @ ((q - anchor) * self.scale[:, None]) + self.head_centre[:, None]

    def nonlinear(self, q: np.ndarray) -> np.ndarray:
        """Template mm of affine-space points ``q`` (3, N)."""
        idx = self.displacement[0].index(q)                   # the three share a lattice
        t = q + np.stack([u.at_index(idx) for u in self.displacement])
        dv = t - self.ventricle_centre[:, None]
        sig = np.asarray(VENTRICLE_SIGMA_MM)[:, None]
        w = np.exp(-0.5 * ((dv / sig) ** 2).sum(axis=0))
        return t - self.ventricle_amount * w * dv

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.nonlinear(self.to_affine(points))

    def jacobian_det(self, points: np.ndarray, h_mm: float = 0.5) -> np.ndarray:
        """Determinant of the Jacobian of head -> template at ``points`` (central differences)."""
        cols = []
        for k in range(3):
            e = np.zeros((3, 1))
            e[k] = h_mm
            cols.append((self(points + e) - self(points - e)) / (2 * h_mm))
        jac = np.stack(cols, axis=-1).transpose(1, 0, 2)        # (N, 3 template, 3 head)
        return np.linalg.det(jac)


def _random_warp(rng: np.random.Generator, centre: np.ndarray, template: TemplateMaps,
                 ventricle_factor: float):
    """Rotation, scaling and displacement field of one participant."""
    rotation = random_rotation(rng, 4.0)
    scale = TEMPLATE_SIZE * rng.uniform(0.9, 1.1, 3)
    amp = rng.uniform(1.3, 2.0)                 # mm per component (vector RMS ~2.3-3.5 mm)
    disp = []
    for _ in range(3):
        f = gaussian_random_field(rng, FIELD_LO, FIELD_HI, 4.0, 12.0)
        disp.append(LatticeField(f.origin, f.spacing, (f.values * np.float32(amp))))
    return BrainWarp(centre, rotation, scale, tuple(disp), template.ventricle_centre,
                     float(1.0 - 1.0 / ventricle_factor))


def _inside(warp: BrainWarp, template: TemplateMaps, q: np.ndarray, chunk: int = 2_000_000):
    """Affine-space points ``q`` (3, N) whose template intracranial fraction exceeds 0.5."""
    out = np.zeros(q.shape[1], dtype=bool)
    for i in range(0, q.shape[1], chunk):
        (ic,) = template.sample(warp.nonlinear(q[:, i:i + chunk]), ("ic",))
        out[i:i + chunk] = ic > 0.5
    return out


def _inside_lattice(warp: BrainWarp, template: TemplateMaps, axes) -> np.ndarray:
    """The warped intracranial mask on the lattice ``axes``: on every second node first, then
    exactly where that coarse mask changes within a node (the brain's surface)."""
    shape = tuple(len(a) for a in axes)
    coarse_axes = [a[::2] for a in axes]
    grid = np.stack(np.meshgrid(*coarse_axes, indexing="ij")).reshape(3, -1)
    coarse = _inside(warp, template, grid).reshape(tuple(len(a) for a in coarse_axes))
    cube = np.ones((3, 3, 3), dtype=bool)
    edge = ndimage.binary_dilation(coarse, cube) & ~ndimage.binary_erosion(coarse, cube,
                                                                            border_value=1)
    up = lambda m: m.repeat(2, 0).repeat(2, 1).repeat(2, 2)[:shape[0], :shape[1], :shape[2]]
    inside, refine = up(coarse), np.flatnonzero(up(edge))
    ijk = np.unravel_index(refine, shape)
    q = np.stack([axes[k][ijk[k]] for k in range(3)])
    inside[ijk] = _inside(warp, template, q)
    return inside


def _distance_lattice(warp: BrainWarp, template: TemplateMaps, spacing: float) -> LatticeField:
    """Signed distance (head mm, > 0 outside) to the warped intracranial surface (fraction 0.5)
    on an affine-space lattice; the lattice's voxel spans ``scale`` head mm per axis."""
    lo, hi = np.asarray(FIELD_LO), np.asarray(FIELD_HI)
    axes = [np.arange(a, b + 1e-9, spacing) for a, b in zip(lo, hi)]
    inside = _inside_lattice(warp, template, axes)
    sampling = spacing * warp.scale
    half = 0.5 * float(np.mean(sampling))
    dist = (ndimage.distance_transform_edt(~inside, sampling=sampling) - half).astype(np.float32)
    depth = ndimage.distance_transform_edt(inside, sampling=sampling)
    dist[inside] = half - depth[inside]
    return LatticeField(lo, float(spacing), dist)


def _temporal_weight(q: np.ndarray) -> np.ndarray:
    """0..1: where the temporal muscle lies over the skull (lateral, above the zygomatic arch,
    below the superior temporal line), in affine space."""
    x, y, z = q
    lateral = smoothstep((np.abs(x) - 38.0) / 22.0)
    vertical = smoothstep((z + 40.0) / 18.0) * smoothstep((55.0 - z) / 20.0)
    sagittal = smoothstep((y + 75.0) / 22.0) * smoothstep((40.0 - y) / 22.0)
    return lateral * vertical * sagittal


def _layer_bounds(fb: np.ndarray, fs: np.ndarray, tw: np.ndarray) -> list[np.ndarray]:
    """Outer boundaries (mm from the intracranial surface) of dura, inner table, diploe, outer
    table, temporal muscle, fat and skin, from the bone and soft-tissue thickness fields (unit
    sd) and the temporal-muscle weight at the same points."""
    vary = lambda amp, f: np.clip(1.0 + amp * f, 1.0 / MAX_VARIATION, MAX_VARIATION)
    thick = [LAYER_MM["dura"] * vary(0.15, fb),
             LAYER_MM["inner_table"] * vary(0.25, fb),
             LAYER_MM["diploe"] * vary(0.4, fb) * (1.0 - 0.6 * tw),
             LAYER_MM["outer_table"] * vary(0.25, fb),
             TEMPORAL_MUSCLE_MM * tw * vary(0.2, fs),
             LAYER_MM["fat"] * vary(0.4, fs) * (1.0 - 0.5 * tw),
             LAYER_MM["skin"] * vary(0.15, fs)]
    bounds = [thick[0]]
    for t in thick[1:]:
        bounds.append(bounds[-1] + t)
    return bounds


def _reach_field(bone: LatticeField, soft: LatticeField) -> LatticeField:
    """Upper bound of the skin's outer boundary (mm from the intracranial surface) on the
    fields' lattice (the largest of each node's neighbours, so interpolation never falls short)."""
    shape = bone.values.shape
    nodes = np.indices(shape).reshape(3, -1) * bone.spacing + bone.origin[:, None]
    outer = _layer_bounds(bone.values.ravel(), soft.values.ravel(), _temporal_weight(nodes))[-1]
    grown = ndimage.maximum_filter(outer.reshape(shape), size=3, mode="nearest")
    return LatticeField(bone.origin, bone.spacing, grown.astype(np.float32))


def _neck(q: np.ndarray, cord_xy: np.ndarray, w: float) -> tuple[np.ndarray, dict]:
    """Neck weight (0..1: inside the neck, below the skull base) and its composition (fractions
    of skin, fat, muscle, marrow, bone summing to 1) at affine-space points ``q``."""
    x, y, z = q
    rel = np.stack([x, y - NECK_CENTRE_Y, np.zeros_like(z)])
    depth = -ellipsoid_signed_distance(rel, NECK_SEMI_AXES + (1.0,))        # > 0 inside
    weight = ramp(depth / w) * smoothstep((NECK_TOP_Z - z) / NECK_BLEND_MM)
    under_skin = ramp((depth - NECK_SKIN_MM) / w)
    core = ramp((depth - NECK_SKIN_MM - NECK_FAT_MM) / w)
    r_v = np.hypot(x - cord_xy[0], y - cord_xy[1] - VERTEBRA_OFFSET_Y)
    low = smoothstep((VERTEBRA_TOP_Z - z) / 4.0)
    vert = ramp((VERTEBRA_RADIUS_MM - r_v) / w) * low
    marrow = ramp((VERTEBRA_RADIUS_MM - VERTEBRA_CORTEX_MM - r_v) / w) * low
    comp = {"skin": 1.0 - under_skin, "fat": under_skin - core, "muscle": core * (1.0 - vert),
            "marrow": core * marrow, "bone": core * (vert - marrow)}
    return weight, comp


def _in_neck_box(q: np.ndarray) -> np.ndarray:
    """Cheap test: affine-space points ``q`` possibly inside the neck."""
    x, y, z = q
    return ((z < NECK_TOP_Z) & (np.abs(x) < NECK_SEMI_AXES[0] + 3.0)
            & (np.abs(y - NECK_CENTRE_Y) < NECK_SEMI_AXES[1] + 3.0))


@dataclass(frozen=True)
class MNIHead:
    """A participant's head on the MNI152 brain (same contract as :class:`anatomy.HeadModel`)."""
    centre: np.ndarray              # head coords (mm) of the head centre, where TEMPLATE_ANCHOR lands
    radii: np.ndarray               # semi-axes (mm) of an ellipsoid holding the head
    warp: BrainWarp
    distance: LatticeField          # signed distance to the intracranial surface, affine space
    bone_field: LatticeField        # thickness variation of dura, tables and diploe (unit sd)
    soft_field: LatticeField        # ... of temporal muscle, fat and skin
    reach_field: LatticeField       # upper bound of the skin's outer boundary (mm)
    texture_m0: LatticeField
    texture_r1: LatticeField
    ventricle_factor: float
    template: TemplateMaps = field(repr=False, compare=False)
    enhancement: dict = field(default_factory=dict)   # state key -> tissue -> mM
    shape_amp_mm: float = 2.0
    texture_m0_amp: float = 0.04
    texture_r1_amp: float = 0.03

    @classmethod
    def random(cls, rng: np.random.Generator, enhancement: dict | None = None,
               lattice_mm: float = 1.0) -> "MNIHead":
        """A random participant: own scaling, rotation, warp, ventricles, layer thicknesses."""
        template = load_template()
        centre = np.array([rng.uniform(-3, 3), rng.uniform(0, 10), rng.uniform(5, 20)])
        ventricle_factor = float(rng.uniform(0.8, 1.4))
        warp = _random_warp(rng, centre, template, ventricle_factor)
        grf = lambda spacing, sigma: gaussian_random_field(rng, FIELD_LO, FIELD_HI, spacing, sigma)
        bone, soft = grf(4.0, 10.0), grf(4.0, 12.0)
        tex_m0, tex_r1 = grf(2.0, 2.5), grf(2.0, 2.5)
        return cls(centre=centre, radii=warp.scale * np.array([84.0, 102.0, 90.0]), warp=warp,
                   distance=_distance_lattice(warp, template, lattice_mm), bone_field=bone,
                   soft_field=soft, reach_field=_reach_field(bone, soft),
                   texture_m0=tex_m0, texture_r1=tex_r1,
                   ventricle_factor=ventricle_factor, template=template,
                   enhancement=dict(enhancement or {}))

    # --- composition ------------------------------------------------------------------------
    def fractions(self, points: np.ndarray, soft_mm: float) -> dict[str, np.ndarray]:
        """Volume fraction of each of :data:`FRACTION_TISSUES` at head-space ``points`` (3, N)
        (linear partial-volume ramps of width ``soft_mm`` across the extracranial layers; the
        template's own partial volume inside). The fractions sum to 1."""
        q = self.warp.to_affine(points)
        return self._fractions(q, self._distance(q), self.reach_field(q), max(float(soft_mm), 1e-3))

    def _distance(self, q: np.ndarray) -> np.ndarray:
        """Signed distance (head mm) to the intracranial surface at affine-space points ``q``;
        beyond the lattice, its edge value plus the distance to the edge."""
        lo, hi = np.asarray(FIELD_LO)[:, None], np.asarray(FIELD_HI)[:, None]
        d = self.distance(q)
        if q.size and np.all(q.min(axis=1, keepdims=True) >= lo) and np.all(
                q.max(axis=1, keepdims=True) <= hi):
            return d
        off = (q - np.clip(q, lo, hi)) * self.warp.scale[:, None]
        return d + np.sqrt((off ** 2).sum(axis=0))

    def _fractions(self, q: np.ndarray, d: np.ndarray, reach: np.ndarray,
                   w: float) -> dict[str, np.ndarray]:
        n = q.shape[1]
        out = {name: np.zeros(n) for name in FRACTION_TISSUES}
        near = np.flatnonzero(d < 3.0)              # the template can be > 0 only here
        if near.size:
            for name, v in zip(("gm", "wm", "csf"),
                               self.template.sample(self.warp.nonlinear(q[:, near]))):
                out[name][near] = v
        ext = 1.0 - (out["gm"] + out["wm"] + out["csf"])
        sel = np.flatnonzero(ext > 1e-6)            # float32 template: below is rounding
        if sel.size:
            for name, v in self._extracranial(q[:, sel], d[sel], reach[sel], ext[sel], w).items():
                out[name][sel] = v
        return out

    def _extracranial(self, q: np.ndarray, d: np.ndarray, reach: np.ndarray, ext: np.ndarray,
                      w: float) -> dict:
        """Fractions of the extracranial tissues (and air) sharing ``ext`` at points ``q``
        (``reach``: :attr:`reach_field` there)."""
        n = d.size
        beyond = [np.ones(n) for _ in range(7)]        # fraction beyond each layer's boundary
        band = np.flatnonzero(d < reach + w)
        if band.size:
            qb = q[:, band]
            idx = self.bone_field.index(qb)                      # shared with soft_field
            bounds = _layer_bounds(self.bone_field.at_index(idx), self.soft_field.at_index(idx),
                                   _temporal_weight(qb))
            for k, b in enumerate(bounds):
                beyond[k][band] = ramp((d[band] - b) / w)
        out = {"dura": ext * (1.0 - beyond[0]),
               "bone": ext * ((beyond[0] - beyond[1]) + (beyond[2] - beyond[3])),
               "marrow": ext * (beyond[1] - beyond[2]),
               "muscle": ext * (beyond[3] - beyond[4]), "fat": ext * (beyond[4] - beyond[5]),
               "skin": ext * (beyond[5] - beyond[6]), "air": ext * beyond[6]}
        cand = np.flatnonzero(_in_neck_box(q))
        if cand.size:
            weight, neck = _neck(q[:, cand], self.template.cord_xy, w)
            soft = ext[cand] * beyond[3][cand]
            for name in ("muscle", "fat", "skin", "air"):
                out[name][cand] *= 1.0 - weight
            for name, v in neck.items():
                out[name][cand] += soft * weight * v
        return out

    def _live(self, q: np.ndarray, d: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray]:
        """Points that may hold tissue (inside the skin's outer boundary or the neck's box) and
        :attr:`reach_field` at them."""
        reach = np.full(d.size, HEAD_REACH_MM)
        near = np.flatnonzero(d < HEAD_REACH_MM)
        reach[near] = self.reach_field(q[:, near])
        live = np.flatnonzero((d < reach + w) | _in_neck_box(q))
        return live, reach[live]

    # --- the HeadModel contract ---------------------------------------------------------------
    def _evaluate(self, points: np.ndarray, soft_mm: float, state_keys=(), truth: bool = False):
        """``(m0, r1, conc, maps)`` at head-space ``points`` (3, N): proton density and
        pre-contrast R1 (1/s) with texture, the anatomy's concentration (mM) per state key that
        enhances (every key with ``truth``) and, with ``truth``, the fractions of
        :data:`TRUTH_FRACTIONS`."""
        n = points.shape[1]
        m0 = np.zeros(n)
        r1 = np.full(n, 1.0 / TISSUES["skin"][0])
        conc = {k: np.zeros(n) for k in state_keys if truth or self.enhancement.get(k)}
        maps = {name: np.zeros(n) for name in TRUTH_FRACTIONS} if truth else {}
        w = max(float(soft_mm), 1e-3)
        q = self.warp.to_affine(points)
        d = self._distance(q)
        live, reach = self._live(q, d, w)
        if not live.size:
            return m0, r1, conc, maps
        ql = q[:, live]
        fr = self._fractions(ql, d[live], reach, w)
        m0_l = sum(fr[t] * TISSUES[t][1] for t in FRACTION_TISSUES)
        r1_l = sum(fr[t] / TISSUES[t][0] for t in FRACTION_TISSUES)
        tex = np.flatnonzero(m0_l > 0)              # texture (multiplicative) where not air
        idx = self.texture_m0.index(ql[:, tex])               # shared with texture_r1
        m0_l[tex] *= 1.0 + self.texture_m0_amp * self.texture_m0.at_index(idx)
        r1_l[tex] *= 1.0 + self.texture_r1_amp * self.texture_r1.at_index(idx)
        m0[live] = m0_l
        r1[live] = r1_l
        for k, c in conc.items():
            c[live] = sum((fr[t] * mm for t, mm in self.enhancement.get(k, {}).items()), 0.0)
        if truth:
            maps["gm"][live], maps["wm"][live], maps["csf"][live] = fr["gm"], fr["wm"], fr["csf"]
            maps["parenchyma"][live] = fr["gm"] + fr["wm"]
            maps["intracranial"][live] = fr["gm"] + fr["wm"] + fr["csf"]
            maps["extracranial_enhancing"][live] = sum(fr[t] for t in ENHANCING_TISSUES)
        return m0, r1, conc, maps

    def tissue_and_uptake(self, points: np.ndarray, soft_mm: float, state_keys=()):
        """``(m0, r1, conc)`` at head-space ``points`` (3, N): proton density, pre-contrast R1
        (1/s) with texture, and per state key that enhances the anatomy's concentration (mM)."""
        return self._evaluate(points, soft_mm, state_keys)[:3]

    def truth_properties(self, points: np.ndarray, soft_mm: float, state_keys=()):
        """``(m0, r1, maps)``: :meth:`tissue` and the truth maps at head-space ``points``: the
        fractions of :data:`TRUTH_FRACTIONS` and ``"conc_anatomy:<key>"`` (mM) per state key."""
        m0, r1, conc, maps = self._evaluate(points, soft_mm, state_keys, truth=True)
        maps.update({f"conc_anatomy:{k}": c for k, c in conc.items()})
        return m0, r1, maps

    def tissue(self, points: np.ndarray, soft_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """``(m0, r1)`` of healthy pre-contrast tissue at head-space ``points`` (3, N)."""
        m0, r1, _ = self.tissue_and_uptake(points, soft_mm)
        return m0, r1

    def conc_mM(self, points: np.ndarray, soft_mm: float, state_key: str) -> np.ndarray:
        """Concentration (mM) of the agent of state ``state_key`` taken up by the anatomy."""
        return self.tissue_and_uptake(points, soft_mm, (state_key,))[2].get(
            state_key, np.zeros(points.shape[1]))

    def delta_r1(self, points: np.ndarray, soft_mm: float, state_key: str,
                 r1_per_mM_s: float) -> np.ndarray:
        """R1 increase (1/s) of the anatomy in state ``state_key`` (agent relaxivity given)."""
        return r1_per_mM_s * self.conc_mM(points, soft_mm, state_key)

    def lesion_allowed(self, centre_head: np.ndarray, radius_mm: float, margin_mm: float = 4.0) -> bool:
        """True when a lesion of ``radius_mm`` at ``centre_head`` lies in parenchyma: deeper than
        ``radius_mm + margin_mm`` below the intracranial surface, >= 90 % grey or white matter
        within it, and little CSF (< 20 %) 2 mm outside it (no ventricle, no large sulcus)."""
        c = np.asarray(centre_head, dtype=np.float64)[:, None]
        if self._distance(self.warp.to_affine(c))[0] > -(radius_mm + margin_mm):
            return False
        inner = np.concatenate([c] + [c + _SHELL * radius_mm * f for f in (0.5, 1.0)], axis=1)
        outer = c + _SHELL * (radius_mm + 2.0)
        fr = self.fractions(np.concatenate([inner, outer], axis=1), 1.0)
        par = fr["gm"] + fr["wm"]
        k = inner.shape[1]
        return bool(np.all(par[:k] >= 0.9) and np.all(fr["csf"][k:] < 0.2))

    def describe(self) -> dict:
        """The participant's anatomy for truth.json."""
        t = self.template
        ic = np.argwhere(t.ic[::4, ::4, ::4] > 0.5) * 4 + t.origin
        disp = np.stack([u(ic.T) for u in self.warp.displacement])
        mag = np.sqrt((disp ** 2).sum(axis=0))
        return {"model": "mni", "template": TEMPLATE_NAME,
                "template_anchor_mm": list(TEMPLATE_ANCHOR),
                "scale": self.warp.scale.tolist(), "rotation": self.warp.rotation.tolist(),
                "rotation_deg": rotation_angle_deg(self.warp.rotation),
                "displacement_rms_mm": float(np.sqrt((mag ** 2).mean())),
                "displacement_max_mm": float(mag.max()),
                "ventricle_factor": self.ventricle_factor,
                "enhancement_mM": {k: dict(v) for k, v in self.enhancement.items()}}


def _fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (3, n)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5 ** 0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z])


_SHELL = _fibonacci_sphere(32)

#: Dotarem uptake (mM, uniform per participant) of the extracranial tissues at the baseline
#: post-contrast scan: dura and the scalp's vessels (in skin) enhance most, diploic marrow and
#: muscle less; fat not at all.
DOTAREM_UPTAKE_MM = {"dura": (0.1, 0.3), "marrow": (0.05, 0.1), "skin": (0.05, 0.1),
                     "muscle": (0.02, 0.05)}
#: AGuIX at its 2 h scan: this fraction of the lesions' AGuIX scale (mid-range at the dose) in
#: dura, the other tissues in proportion to their Dotarem uptake; none at the residual scan
#: (the particles have left the blood by then).
AGUIX_UPTAKE_FRACTION = 0.15


def draw_enhancement(rng: np.random.Generator, states, dose_mg_per_kg: float,
                     aguix_mM_per_100mg_kg, followup_ratio) -> dict:
    """Per state key (``states``: pairs ``(key, conc_model)``): tissue -> mM."""
    base = {t: float(rng.uniform(*r)) for t, r in DOTAREM_UPTAKE_MM.items()}
    ratio = float(rng.uniform(*followup_ratio))
    aguix_dura = AGUIX_UPTAKE_FRACTION * float(np.mean(aguix_mM_per_100mg_kg)) * dose_mg_per_kg / 100
    models = {"dotarem_baseline": base,
              "dotarem_followup": {t: v * ratio for t, v in base.items()},
              "aguix_peak": {t: aguix_dura * v / base["dura"] for t, v in base.items()},
              "aguix_residual": {t: 0.0 for t in base}}
    return {key: dict(models[model]) for key, model in states if model in models}
