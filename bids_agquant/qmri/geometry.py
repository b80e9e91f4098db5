"""Affine maths and resampling on numpy arrays (no file I/O, no nibabel, no ANTs).

Conventions (one place):

* An image is a 3-D array and its RAS+ voxel-to-world ``affine`` (4x4, millimetres), as nibabel
  reads it (sform, else qform). Reading and writing files is done elsewhere
  (:mod:`bids_agquant.interfaces.geometry`).
* Transforms are 4x4 matrices in ITK's LPS physical space, in the *resampling* convention:
  ``T_target<-source`` maps a point of the target (fixed, reference) space to the corresponding
  point of the source (moving) image. This is what ``antsRegistration`` writes and
  ``antsApplyTransforms`` reads. A chain reference <- T1w <- VFA is the matrix product
  ``T_ref<-T1w @ T_T1w<-VFA`` (:func:`compose`).
* Resampling (:func:`resample`) is done with scipy in voxel space from those matrices (linear or
  nearest neighbour); it is deterministic and single-threaded. ``nan_aware`` linear resampling
  interpolates only finite values (normalised convolution): a NaN (failed fit) does not spread
  to its neighbours, and points with less than half of their interpolation weight on finite
  values are NaN (outside the field of view too).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["LPS", "voxel_sizes", "voxel_volume_mm3", "voxel_to_world", "centroid_world",
           "ras_to_lps_matrix", "compose", "voxel_map", "resample", "resample_mask", "resample_many",
           "block_average", "downsample_factor", "reindexing", "reindexed", "GRID_TOLERANCE",
           "rotation_about", "distance_to_mask_mm", "depth_in_mask_mm"]

#: RAS <-> LPS flip (its own inverse).
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_sizes(affine) -> np.ndarray:
    """Voxel edge lengths (mm): the norms of the affine's three columns."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def voxel_volume_mm3(affine) -> float:
    """Volume of one voxel (mm^3): ``|det|`` of the affine's 3x3 part."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def voxel_to_world(ijk, affine) -> np.ndarray:
    """World coordinates (mm) of voxel indices ``ijk`` (..., 3)."""
    affine = np.asarray(affine, dtype=np.float64)
    return np.asarray(ijk) @ affine[:3, :3].T + affine[:3, 3]


def bounding_box(mask, margin_vox=0) -> tuple:
    """Slices of the bounding box of the non-zero voxels of ``mask``, grown by ``margin_vox``
    voxels per axis (a number or one per axis, rounded up) and clipped to the array."""
    idx = np.argwhere(mask)
    margin = np.ceil(np.broadcast_to(np.asarray(margin_vox, dtype=np.float64), (3,))).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, np.asarray(mask).shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def distance_to_mask_mm(mask, spacing, reach_mm: float) -> np.ndarray:
    """Distance (mm) from each voxel centre to the nearest voxel centre of ``mask`` (0 on the
    mask), as ``scipy.ndimage.distance_transform_edt(~mask, sampling=spacing)``, but computed
    only in the mask's bounding box grown by ``reach_mm`` (plus a voxel): beyond it ``+inf``.

    Exact wherever the distance is at most ``reach_mm`` (every mask voxel lies in the box, so a
    voxel in the box sees its nearest one; a voxel outside is further than ``reach_mm`` along
    one axis alone), so thresholds up to ``reach_mm`` give what the whole-volume transform
    gives, in a fraction of its time for a small mask. An empty mask: ``+inf`` everywhere.
    """
    mask = np.asarray(mask, dtype=bool)
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (mask.ndim,))
    out = np.full(mask.shape, np.inf)
    if not mask.any():
        return out
    box = bounding_box(mask, float(reach_mm) / spacing + 1.0)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing)
    return out


def depth_in_mask_mm(mask, spacing) -> np.ndarray:
    """Distance (mm) from each voxel centre of ``mask`` to the nearest voxel centre outside it,
    outside the array counting as outside (0 off the mask): the transform of the mask padded by
    one voxel, computed in its bounding box only.

    Exact: the box grown by one voxel is surrounded by non-mask voxels (or the array's edge),
    and for any outside point beyond that layer a point of the layer is nearer (clamp its
    coordinates to the box), so no nearest outside voxel is lost.
    """
    mask = np.asarray(mask, dtype=bool)
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (mask.ndim,))
    out = np.zeros(mask.shape)
    if not mask.any():
        return out
    box = bounding_box(mask)
    depth = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=spacing)
    out[box] = depth[(slice(1, -1),) * mask.ndim]
    return out


def centroid_world(mask, affine) -> list:
    """World coordinates (mm, list of 3 floats) of the mean voxel of ``mask``; NaN when empty."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return [float("nan")] * 3
    c = idx.mean(axis=0)
    return [float(v) for v in affine[:3, :3] @ c + affine[:3, 3]]


def ras_to_lps_matrix(m_ras) -> np.ndarray:
    """The same physical transform written in the other space (RAS <-> LPS, symmetric)."""
    return LPS @ np.asarray(m_ras, dtype=np.float64) @ LPS


def compose(matrices) -> np.ndarray:
    """Product of transforms listed from the target side outwards (``T_a<-b @ T_b<-c ...``)."""
    m = np.eye(4)
    for t in matrices:
        m = m @ np.asarray(t, dtype=np.float64)
    return m


def voxel_map(target_affine, source_affine, transform_lps=None) -> np.ndarray:
    """4x4 map from target voxel indices to source voxel indices through ``transform_lps``."""
    t_ras = ras_to_lps_matrix(np.eye(4) if transform_lps is None else transform_lps)
    return np.linalg.inv(source_affine) @ t_ras @ np.asarray(target_affine, dtype=np.float64)


def _affine_transform(vox, target_shape, arr, *, order, cval, output):
    return ndimage.affine_transform(arr, vox[:3, :3], vox[:3, 3], output_shape=target_shape,
                                    order=order, mode="constant", cval=cval, prefilter=False,
                                    output=output)


def resample(data, source_affine, target_shape, target_affine, transform_lps=None, *,
             order: int = 1, nan_aware: bool = False, fill=np.nan, dtype=np.float32):
    """Resample ``data`` (on ``source_affine``) onto a target grid through one transform.

    ``transform_lps``: 4x4 LPS matrix, target <- source (None: identity, i.e. world space).
    ``order``: 1 linear, 0 nearest neighbour (integer and boolean data keep an integer type,
    boolean becomes uint8, outside is 0). Outside the source field of view: ``fill``.
    """
    vox = voxel_map(target_affine, source_affine, transform_lps)
    data = np.asarray(data)
    target_shape = tuple(int(s) for s in target_shape)

    def _one(arr, cval, out_dtype):
        return _affine_transform(vox, target_shape, arr, order=order, cval=cval,
                                 output=out_dtype)

    if order == 0:
        if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
            return _one(data, 0, data.dtype if data.dtype != bool else np.uint8)
        return _one(data.astype(dtype, copy=False), fill, dtype)
    values = data.astype(np.float64, copy=False)
    if not nan_aware:
        return _one(values, fill, np.float64).astype(dtype)
    finite = np.isfinite(values)
    weights = _one(finite.astype(np.float64), 0.0, np.float64)
    num = _one(np.where(finite, values, 0.0), 0.0, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weights >= 0.5, num / np.maximum(weights, 1e-12), fill)
    return out.astype(dtype)


def _target_box(mask, source_affine, target_shape, target_affine, transform_lps):
    """(slices, shape, affine) of the box of target voxels that can see a voxel of the source
    ``mask`` through linear or nearest-neighbour interpolation; None if none can (or the mask
    is empty)."""
    found = np.argwhere(mask)
    if not found.size:
        return None
    lo, hi = found.min(axis=0) - 1.0, found.max(axis=0) + 1.0     # interpolation reaches +-1
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])
    to_target = np.linalg.inv(voxel_map(target_affine, source_affine, transform_lps))
    where = corners @ to_target.T
    start = np.clip(np.floor(where[:, :3].min(axis=0)).astype(int) - 1, 0, target_shape)
    stop = np.clip(np.ceil(where[:, :3].max(axis=0)).astype(int) + 2, 0, target_shape)
    if np.any(stop <= start):
        return None
    shift = np.eye(4)
    shift[:3, 3] = start
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    return box, tuple(int(n) for n in stop - start), np.asarray(target_affine, np.float64) @ shift


def resample_mask(mask, source_affine, target_shape, target_affine, transform_lps=None):
    """A boolean mask (on ``source_affine``) onto a target grid, nearest neighbour, as
    :func:`resample` with ``order=0`` would give, but resampled only over the target voxels
    that can fall in the mask's bounding box (a small mask onto a 1 mm grid: a fraction of the
    volume's time). Returns a boolean array of ``target_shape``."""
    mask = np.asarray(mask, bool)
    target_shape = tuple(int(s) for s in target_shape)
    out = np.zeros(target_shape, bool)
    where = _target_box(mask, source_affine, target_shape, target_affine, transform_lps)
    if where is None:
        return out
    box, box_shape, box_affine = where
    out[box] = resample(mask, source_affine, box_shape, box_affine, transform_lps, order=0) > 0
    return out


def resample_many(arrays, source_affine, target_shape, target_affine, transform_lps=None, *,
                  dtype=np.float32):
    """NaN-aware linear resampling of several maps of one grid, sharing one weight pass.

    A target point gets a value when at least half of its interpolation weight falls on source
    voxels where *every* map is finite (else NaN in all of them). Only the target voxels that
    can reach the finite voxels' bounding box are interpolated (the rest is NaN in any case):
    maps that are NaN outside the head or brain cost a fraction of the volume.
    """
    target_shape = tuple(int(s) for s in target_shape)
    values = [np.asarray(a, dtype=np.float64) for a in arrays]
    finite = np.logical_and.reduce([np.isfinite(v) for v in values])
    out = [np.full(target_shape, np.nan, dtype=dtype) for _ in values]
    where = _target_box(finite, source_affine, target_shape, target_affine, transform_lps)
    if where is None:
        return out
    box, box_shape, box_affine = where
    vox = voxel_map(box_affine, source_affine, transform_lps)

    def _one(arr):
        return _affine_transform(vox, box_shape, arr, order=1, cval=0.0, output=np.float64)

    weights = _one(finite.astype(np.float64))
    ok = weights >= 0.5
    inv = np.where(ok, 1.0 / np.maximum(weights, 1e-12), np.nan)
    del weights
    for o, v in zip(out, values):
        o[box] = _one(np.where(finite, v, 0.0)) * inv
    return out


def block_average(data, affine, factor: int):
    """Downsample by an integer ``factor`` per axis (mean of factor^3 blocks): (data, affine).

    The new voxel centre is the centre of its block, so world positions are preserved. Voxels
    beyond the last whole block are dropped.
    """
    f = int(factor)
    if f <= 1:
        return data, affine
    shape = [s // f * f for s in data.shape]
    a = np.asarray(data, dtype=np.float32)[: shape[0], : shape[1], : shape[2]]
    a = a.reshape(shape[0] // f, f, shape[1] // f, f, shape[2] // f, f).mean(axis=(1, 3, 5))
    new = np.asarray(affine, dtype=np.float64).copy()
    new[:3, 3] = affine[:3, :3] @ np.full(3, (f - 1) / 2.0) + affine[:3, 3]
    new[:3, :3] = affine[:3, :3] * f
    return a, new


#: Relative tolerance on a ratio of voxel edges (rounding of affines built from oblique angles).
GRID_TOLERANCE = 1e-4


def downsample_factor(affine, target_spacing_mm: float) -> int:
    """Integer block size bringing the finest voxel edge of ``affine`` to ~``target_spacing_mm``.

    Voxel edges computed from an oblique affine carry rounding (1.00000002 mm for a 1 mm grid):
    the ratio is floored with a tolerance of :data:`GRID_TOLERANCE`, so such a grid still gets
    the block size its nominal spacing asks for.
    """
    ratio = target_spacing_mm / float(voxel_sizes(affine).min())
    return max(1, int(np.floor(ratio + GRID_TOLERANCE)))


def reindexing(shape_a, affine_a, shape_b, affine_b, tol_mm: float):
    """How to read grid ``a`` as grid ``b`` when both hold the same voxel centres in the world,
    only in another order (axes permuted and/or flipped, as converters differ): ``(axes, flips)``
    such that ``np.flip(np.transpose(data_a, axes), flips)`` is ``data_a`` on grid ``b``; None
    when the voxel centres differ (by more than ``tol_mm`` at the corners) or the shapes do not
    match."""
    m = np.linalg.inv(np.asarray(affine_b, dtype=np.float64)) @ np.asarray(affine_a, dtype=float)
    rot = m[:3, :3]
    signed = np.round(rot)
    if not (np.abs(signed).sum(axis=0) == 1).all() or not (np.abs(signed).sum(axis=1) == 1).all():
        return None
    axes = tuple(int(np.argmax(np.abs(signed[b]))) for b in range(3))   # b axis <- a axis
    if tuple(int(shape_a[a]) for a in axes) != tuple(int(s) for s in shape_b[:3]):
        return None
    flips = tuple(b for b in range(3) if signed[b, axes[b]] < 0)
    # exact check: every corner voxel centre of a lands on its re-indexed place in b
    n = [int(s) - 1 for s in shape_a[:3]]
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
    world_a = corners @ np.asarray(affine_a)[:3, :3].T + np.asarray(affine_a)[:3, 3]
    target = corners[:, list(axes)]
    for b in flips:
        target[:, b] = int(shape_b[b]) - 1 - target[:, b]
    world_b = target @ np.asarray(affine_b)[:3, :3].T + np.asarray(affine_b)[:3, 3]
    if np.max(np.linalg.norm(world_a - world_b, axis=1)) > tol_mm:
        return None
    return axes, flips


def reindexed(data, how):
    """``data`` of grid ``a`` in the voxel order of grid ``b`` (``how`` from :func:`reindexing`)."""
    axes, flips = how
    out = np.transpose(np.asarray(data), tuple(axes) + tuple(range(3, np.ndim(data))))
    return np.flip(out, flips) if flips else out


def rotation_about(deg: float, axis: int, centre) -> np.ndarray:
    """4x4 rotation by ``deg`` degrees about coordinate axis ``axis`` (0, 1, 2) through the
    point ``centre`` (same coordinates as the matrix acts on)."""
    a = np.deg2rad(deg)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(4)
    r[i, i] = r[j, j] = np.cos(a)
    r[i, j], r[j, i] = -np.sin(a), np.sin(a)
    t, ti = np.eye(4), np.eye(4)
    t[:3, 3], ti[:3, 3] = centre, -np.asarray(centre, dtype=float)
    return t @ r @ ti
