"""3D views of the brain and its lesions for the participant report (the paper's Fig. 1 row 4
and Fig. 4): a glass brain (its surface, faint) with every lesion drawn as its own surface,
coloured by the lesion's value in the lesion table (SE, concentration) on one colour scale.

Surfaces are extracted with scikit-image's marching cubes (``skimage.measure.marching_cubes``)
in voxel coordinates and carried to world millimetres (RAS+) by the image's affine, so they sit
where the lesion table's centroids say. They are drawn offscreen with matplotlib's 3D axes
(Agg, static PNG views: left, right, top), so the page stays self-contained and offline.
Display only: nothing here changes a number.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from scipy import ndimage
from skimage.measure import marching_cubes

from bids_agquant.qmri.relaxivity import canonical_agent

#: the views of every 3D figure: (title, elevation deg, azimuth deg) of matplotlib's camera in
#: RAS+ world axes (azimuth 180: looking at the left side, 0: the right, elevation 90: the top)
VIEWS = (("left", 0.0, 180.0), ("right", 0.0, 0.0), ("top", 90.0, -90.0))
#: the anatomical directions at the (left, right, top, bottom) edges of each view's picture
VIEW_EDGES = {"left": ("A", "P", "S", "I"), "right": ("P", "A", "S", "I"),
              "top": ("L", "R", "A", "P")}
#: brain surface: the mask smoothed by a Gaussian of this sigma (mm) before extraction, and
#: marching cubes' step in voxels (a coarser brain surface draws faster)
BRAIN_SMOOTHING_MM = 2.0
BRAIN_STEP_MM = 5.0
#: lesions: marching cubes' step is the lesion's largest extent in voxels over this, rounded
#: (at least 1), so that a large lesion is not drawn with more triangles than its panel has
#: pixels (a 30 mm lesion at 1 mm: step 2, a quarter of the triangles; small lesions: step 1)
LESION_CELLS_ACROSS = 12
BRAIN_RGBA = (0.55, 0.55, 0.58, 0.10)


@dataclass(frozen=True)
class Surface:
    """A closed triangle surface in world millimetres (RAS+)."""
    vertices: np.ndarray        # (n, 3) mm
    faces: np.ndarray           # (m, 3) vertex indices

    @property
    def triangles(self) -> np.ndarray:
        return self.vertices[self.faces]

    def enclosed_centroid(self) -> np.ndarray:
        """Centroid of the volume the surface encloses (sum of signed tetrahedra from the
        origin; independent of orientation and of how evenly the surface is sampled)."""
        a, b, c = (self.triangles[:, i, :] for i in range(3))
        signed = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
        total = signed.sum()
        if abs(total) < 1e-12:
            return self.vertices.mean(axis=0)
        return ((a + b + c) / 4.0 * signed[:, None]).sum(axis=0) / total


def _world(vertices_vox: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return vertices_vox @ affine[:3, :3].T + affine[:3, 3]


def _extract(volume: np.ndarray, affine: np.ndarray, level: float, step: int) -> Surface | None:
    padded = np.pad(volume.astype(np.float32), 1)       # closes surfaces at the grid's edge
    if padded.max() <= level or padded.min() >= level:
        return None
    verts, faces, _, _ = marching_cubes(padded, level=level, step_size=max(1, int(step)),
                                        allow_degenerate=False)
    return Surface(_world(verts - 1.0, affine), faces)


def brain_surface(brain: np.ndarray, affine: np.ndarray) -> Surface | None:
    """The brain mask's outer surface, smoothed, on a coarse step (display only)."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    smooth = ndimage.gaussian_filter(np.asarray(brain, bool).astype(np.float32),
                                     BRAIN_SMOOTHING_MM / zooms)
    step = max(1, int(round(BRAIN_STEP_MM / float(zooms.mean()))))
    return _extract(smooth, affine, 0.5, step)


def lesion_surfaces(dseg: np.ndarray, affine: np.ndarray) -> dict[int, Surface]:
    """One surface per label > 0 of a lesion dseg (no smoothing, so that each encloses the
    lesion's own voxels), at the voxels' own resolution up to :data:`LESION_CELLS_ACROSS`
    cells across the lesion."""
    dseg = np.asarray(dseg)
    out: dict[int, Surface] = {}
    boxes = ndimage.find_objects(dseg.astype(np.int64))
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        origin = np.array([s.start for s in grown], float)
        shifted = affine.copy()
        shifted[:3, 3] = _world(origin[None, :], affine)[0]
        extent = max(s.stop - s.start for s in box)
        step = max(1, int(round(extent / LESION_CELLS_ACROSS)))
        surface = _extract(dseg[grown] == index, shifted, 0.5, step)
        if surface is not None:
            out[index] = surface
    return out


def _unit_normals(triangles: np.ndarray) -> np.ndarray:
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.where(length > 0, length, 1.0)


def _light(normals: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Lambert shading with a light at the camera: 35 % ambient, 65 % diffuse (per face)."""
    return 0.35 + 0.65 * np.abs(normals @ view)


def _shaded(rgba: np.ndarray, light: np.ndarray) -> np.ndarray:
    shaded = np.array(rgba, float, copy=True)
    shaded[:, :3] = np.clip(shaded[:, :3] * light[:, None], 0.0, 1.0)
    return shaded


def _camera(elev: float, azim: float) -> np.ndarray:
    e, a = np.radians(elev), np.radians(azim)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def lesion_figure(brain: Surface | None, lesions: dict[int, Surface],
                  rows: list[tuple[str, dict[int, float]]], *, cmap: str, vmin: float,
                  vmax: float, quantity: str) -> Figure:
    """One row per state (title, {lesion label: value}), one column per view of :data:`VIEWS`.
    Lesions without a finite value are drawn white with a grey edge; the colour bar is shared by
    every row (one scale for the quantity)."""

    colormap = matplotlib.colormaps[cmap]
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    everything = [s.vertices for s in lesions.values()] + ([brain.vertices] if brain else [])
    points = np.concatenate(everything) if everything else np.zeros((1, 3))
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, half = (lo + hi) / 2.0, float((hi - lo).max()) / 2.0 + 2.0

    # geometry and lighting do not change from row to row: computed once, per view
    cameras = [_camera(elev, azim) for _, elev, azim in VIEWS]
    brain_tri = brain.triangles if brain is not None else None
    brain_faces = ([_shaded(np.tile(BRAIN_RGBA, (len(brain_tri), 1)),
                            _light(_unit_normals(brain_tri), view)) for view in cameras]
                   if brain_tri is not None else None)
    labels = list(lesions)
    lesion_tri = (np.concatenate([lesions[k].triangles for k in labels]) if labels else None)
    face_label = (np.repeat(np.arange(len(labels)), [len(lesions[k].faces) for k in labels])
                  if labels else None)
    lesion_light = ([_light(_unit_normals(lesion_tri), view) for view in cameras]
                    if labels else None)

    fig = Figure(figsize=(2.6 * len(VIEWS) + 0.9, 2.5 * max(len(rows), 1)), dpi=100)
    for r, (title, values) in enumerate(rows):
        value = np.array([values.get(k, np.nan) for k in labels], float)
        known = np.isfinite(value)
        rgba = np.array([colormap(norm(v)) if ok else (1.0, 1.0, 1.0, 1.0)
                         for v, ok in zip(value, known)]).reshape(-1, 4)
        edge = np.tile((0.4, 0.4, 0.4, 0.0), (len(labels), 1))
        edge[~known, 3] = 0.6
        for c, (view_name, elev, azim) in enumerate(VIEWS):
            ax = fig.add_subplot(len(rows), len(VIEWS), r * len(VIEWS) + c + 1,
                                 projection="3d", computed_zorder=False)
            if brain_faces is not None:
                ax.add_collection3d(Poly3DCollection(brain_tri, facecolors=brain_faces[c],
                                                     edgecolors="none", linewidths=0))
            # lesions over the glass brain, as one collection (sorted by depth among themselves)
            if labels:
                ax.add_collection3d(Poly3DCollection(
                    lesion_tri, facecolors=_shaded(rgba[face_label], lesion_light[c]),
                    edgecolors=edge[face_label], linewidths=0.2))
            for setter, i in ((ax.set_xlim, 0), (ax.set_ylim, 1), (ax.set_zlim, 2)):
                setter(centre[i] - half, centre[i] + half)
            ax.set_box_aspect((1, 1, 1), zoom=1.45)
            ax.view_init(elev=elev, azim=azim)
            ax.set_axis_off()
            for text, (x, y) in zip(VIEW_EDGES[view_name],
                                    ((0.02, 0.5), (0.98, 0.5), (0.5, 0.97), (0.5, 0.03))):
                ax.text2D(x, y, text, transform=ax.transAxes, ha="center", va="center",
                          fontsize=7, color="0.35", weight="bold")
            ax.set_title(f"{title} · {view_name}" if c == 0 else view_name, fontsize=8)
    fig.subplots_adjust(left=0.0, right=0.86, top=0.94, bottom=0.02, wspace=0.0, hspace=0.08)
    bar = fig.add_axes((0.89, 0.15, 0.02, 0.7))
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=colormap)
    fig.colorbar(sm, cax=bar).set_label(quantity, fontsize=8)
    bar.tick_params(labelsize=7)
    return fig


def _finite_float(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def state_values(rows: list[dict], column: str) -> dict[tuple[str, str], dict[int, float]]:
    """{(session label, canonical agent): {lesion label: value of ``column``}} from lesion-table
    rows (``region_type`` lesion only; controls are not drawn)."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        if row.get("region_type", "lesion") != "lesion" or row.get("contrast_agent") in (None, "",
                                                                                         "n/a"):
            continue
        try:
            label = int(row["lesion_id"])
        except (KeyError, ValueError):
            continue
        agent = str(row["contrast_agent"])
        state = (str(row["session_id"]).removeprefix("ses-"), canonical_agent(agent) or agent)
        out.setdefault(state, {})[label] = _finite_float(row.get(column))
    return out


def surfaces_of(brain_path, dseg_path) -> tuple[Surface | None, dict[int, Surface]]:
    """(brain surface or None, lesion surfaces by label) of a brain mask and a lesion dseg."""
    import nibabel as nib
    dseg_img = nib.load(str(dseg_path))
    lesions = lesion_surfaces(np.asarray(dseg_img.dataobj).astype(np.int64), dseg_img.affine)
    brain = None
    if brain_path is not None:
        brain_img = nib.load(str(brain_path))
        brain = brain_surface(np.asarray(brain_img.dataobj) > 0, brain_img.affine)
    return brain, lesions
