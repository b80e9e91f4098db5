"""Image geometry shared by the interfaces: NIfTI affines, ITK/ANTs transforms, resampling.

Conventions (one place):

* Images are read with nibabel; their RAS+ voxel-to-world ``affine`` (sform, else qform, as
  nibabel chooses) is the only geometry we use. ANTs images are built from it
  (:func:`to_ants`), so ANTs and nibabel never disagree about where a voxel is.
* Transforms are stored as ITK/ANTs files (``.mat``) and passed around as 4x4 matrices in ITK's
  LPS physical space, in the *resampling* convention: ``T_target<-source`` maps a point of the
  target (fixed, reference) space to the corresponding point of the source (moving) image. This
  is what ``antsRegistration`` writes and ``antsApplyTransforms`` reads. A chain
  reference <- T1w <- VFA is the matrix product ``T_ref<-T1w @ T_T1w<-VFA``.
* Resampling (:func:`resample`) is done with scipy in voxel space from those matrices (linear or
  nearest neighbour); it is deterministic and single-threaded. ``nan_aware`` linear resampling
  interpolates only finite values (normalised convolution): a NaN (failed fit) does not spread
  to its neighbours, and points with less than half of their interpolation weight on finite
  values are NaN (outside the field of view too).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["LPS", "load", "load_many", "to_ants", "import_ants", "read_transform",
           "write_transform", "ras_to_lps_matrix", "resample", "resample_many", "block_average",
           "voxel_sizes", "save_like"]

#: RAS <-> LPS flip (its own inverse).
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def import_ants(seed: int | None = None):
    """Import antspyx with deterministic settings: one ITK thread and a fixed random seed.

    ``ants.config.set_ants_deterministic`` sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` (ITK
    reads it at its first use in a process) and the seed ANTs passes as ``--random-seed``; the
    ``random_seed`` argument of ``ants.registration`` is ignored by antspyx.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    import ants

    ants.config.set_ants_deterministic(True, seed_value=42 if seed is None else int(seed))
    return ants


def load(path, dtype=np.float32):
    """(data, affine, nibabel image) of a 3-D NIfTI (a 4-D file with one volume is squeezed)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:  # nibabel raises many kinds
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D image, got shape {data.shape}")
    return data, img.affine.astype(np.float64), img


def load_many(paths, dtype=np.float32):
    """Stack same-grid 3-D images on a last axis: (data[..., n], affine)."""
    arrays, affine = [], None
    for p in paths:
        data, aff, _ = load(p, dtype)
        if affine is None:
            affine, shape = aff, data.shape
        elif data.shape != shape or not np.allclose(aff, affine, atol=1e-3):
            raise ValueError(f"{p}: grid differs from {paths[0]} (all images of a VFA set must "
                             f"share one grid)")
        arrays.append(data)
    return np.stack(arrays, axis=-1), affine


def voxel_sizes(affine) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def save_like(data, affine, path, *, dtype=np.float32, header=None):
    """Write ``data`` as NIfTI (float32 by default) with ``affine`` (sform and qform)."""
    import nibabel as nib

    arr = np.asarray(data).astype(dtype, copy=False)
    img = nib.Nifti1Image(arr, affine, header=header)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return str(path)


def to_ants(data, affine, ants=None):
    """ANTs image of a 3-D array on the grid of a RAS+ ``affine`` (ITK LPS geometry)."""
    ants = ants or import_ants()
    lps = LPS @ np.asarray(affine, dtype=np.float64)
    spacing = voxel_sizes(affine)
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32),
                           origin=[float(v) for v in lps[:3, 3]],
                           spacing=[float(v) for v in spacing], direction=direction)


def read_transform(path) -> np.ndarray:
    """4x4 matrix (ITK LPS physical space) of a linear ITK/ANTs transform file."""
    ants = import_ants()
    tx = ants.read_transform(str(path), precision="double")
    o = np.asarray(tx.apply_to_point((0.0, 0.0, 0.0)), dtype=np.float64)
    m = np.eye(4)
    for i in range(3):
        e = [0.0, 0.0, 0.0]
        e[i] = 1.0
        m[:3, i] = np.asarray(tx.apply_to_point(tuple(e)), dtype=np.float64) - o
    m[:3, 3] = o
    return m


def write_transform(matrix, path) -> str:
    """Write a 4x4 LPS matrix as an ITK ``AffineTransform`` file (.mat binary or .txt)."""
    ants = import_ants()
    m = np.asarray(matrix, dtype=np.float64)
    tx = ants.create_ants_transform(transform_type="AffineTransform", precision="double",
                                    dimension=3, matrix=m[:3, :3], offset=m[:3, 3])
    ants.write_transform(tx, str(path))
    return str(path)


def ras_to_lps_matrix(m_ras) -> np.ndarray:
    """The same physical transform written in the other space (RAS <-> LPS, symmetric)."""
    return LPS @ np.asarray(m_ras, dtype=np.float64) @ LPS


def _voxel_map(target_affine, source_affine, transform_lps):
    """4x4 map from target voxel indices to source voxel indices."""
    t_ras = ras_to_lps_matrix(np.eye(4) if transform_lps is None else transform_lps)
    return np.linalg.inv(source_affine) @ t_ras @ np.asarray(target_affine, dtype=np.float64)


def resample(data, source_affine, target_shape, target_affine, transform_lps=None, *,
             order: int = 1, nan_aware: bool = False, fill=np.nan, dtype=np.float32):
    """Resample ``data`` (on ``source_affine``) onto a target grid through one transform.

    ``transform_lps``: 4x4 LPS matrix, target <- source (None: identity, i.e. world space).
    ``order``: 1 linear, 0 nearest neighbour. Outside the source field of view: ``fill``.
    """
    from scipy import ndimage

    vox = _voxel_map(target_affine, source_affine, transform_lps)
    data = np.asarray(data)
    target_shape = tuple(int(s) for s in target_shape)

    def _one(arr, cval, out_dtype):
        return ndimage.affine_transform(arr, vox[:3, :3], vox[:3, 3], output_shape=target_shape,
                                        order=order, mode="constant", cval=cval,
                                        prefilter=False, output=out_dtype)

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


def resample_many(arrays, source_affine, target_shape, target_affine, transform_lps=None, *,
                  dtype=np.float32):
    """NaN-aware linear resampling of several maps of one grid, sharing one weight pass.

    A target point gets a value when at least half of its interpolation weight falls on source
    voxels where *every* map is finite (else NaN in all of them).
    """
    from scipy import ndimage

    vox = _voxel_map(target_affine, source_affine, transform_lps)
    target_shape = tuple(int(s) for s in target_shape)
    values = [np.asarray(a, dtype=np.float64) for a in arrays]
    finite = np.logical_and.reduce([np.isfinite(v) for v in values])

    def _one(arr):
        return ndimage.affine_transform(arr, vox[:3, :3], vox[:3, 3], output_shape=target_shape,
                                        order=1, mode="constant", cval=0.0, prefilter=False,
                                        output=np.float64)

    weights = _one(finite.astype(np.float64))
    ok = weights >= 0.5
    inv = np.where(ok, 1.0 / np.maximum(weights, 1e-12), np.nan)
    del weights
    return [(_one(np.where(finite, v, 0.0)) * inv).astype(dtype) for v in values]


def block_average(data, affine, factor: int):
    """Downsample by an integer ``factor`` per axis (mean of factor^3 blocks): (data, affine).

    The new voxel centre is the centre of its block, so world positions are preserved.
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


def as_path(p) -> Path:
    return Path(os.fspath(p))
