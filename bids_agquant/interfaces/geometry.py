"""Image files and ANTs objects for the interfaces: NIfTI in and out, ITK transforms, ANTs images.

The geometry itself (affines, transform conventions, resampling) is pure array maths in
:mod:`bids_agquant.qmri.geometry`; its functions are re-exported here so that ``G.resample`` etc.
keep working for the modules that load images through this one. Conventions:

* Images are read with nibabel; their RAS+ voxel-to-world ``affine`` (sform, else qform, as
  nibabel chooses) is the only geometry we use. ANTs images are built from it
  (:func:`to_ants`), so ANTs and nibabel never disagree about where a voxel is.
* Transforms are stored as ITK/ANTs files (``.mat``) and passed around as 4x4 LPS matrices in
  the resampling convention (see :mod:`bids_agquant.qmri.geometry`).
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from bids_agquant.qmri.geometry import (LPS, block_average, ras_to_lps_matrix, resample,
                                   resample_many, voxel_sizes)

__all__ = ["LPS", "load", "load_many", "load_header", "to_ants", "import_ants",
           "read_transform", "write_transform", "ras_to_lps_matrix", "resample",
           "resample_many", "block_average", "voxel_sizes", "save_like"]


def import_ants(seed: int | None = None):
    """Import antspyx with deterministic settings: one ITK thread and a fixed random seed.

    ``ants.config.set_ants_deterministic`` sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` (ITK
    reads it at its first use in a process) and the seed ANTs passes as ``--random-seed``; the
    ``random_seed`` argument of ``ants.registration`` is ignored by antspyx.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    # function-local: the environment above must be set before ITK's first import, and antspyx
    # is heavy (and optional for the report, which catches its ImportError)
    import ants

    ants.config.set_ants_deterministic(True, seed_value=42 if seed is None else int(seed))
    return ants


def load_header(path):
    """The nibabel image of ``path`` (header and affine; the data are not read)."""
    return nib.load(str(path))


def load(path, dtype=np.float32):
    """(data, affine, nibabel image) of a 3-D NIfTI (a 4-D file with one volume is squeezed)."""
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
            raise ValueError(f"{p}: grid differs from {paths[0]} (all images of a VFA set or a "
                             f"B1 method must share one grid)")
        arrays.append(data)
    return np.stack(arrays, axis=-1), affine


def save_like(data, affine, path, *, dtype=np.float32, header=None):
    """Write ``data`` as NIfTI (float32 by default) with ``affine`` (sform and qform)."""
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
