"""Brain-tissue and signal masks on arrays (pure numpy/scipy, no I/O).

A simple brain-tissue mask for placing healthy-tissue control regions.

How (documented choice): brain parenchyma has a T1 between white matter (~0.85 s at 3 T) and
grey matter (~1.4 s); CSF (~4 s), scalp fat (~0.4 s), skull (short T1, little signal) and air
(no fit) fall outside. So, on the baseline pre-contrast T1 map in the reference space:

1. tissue = 0.5 s <= T1 <= 2.2 s (lesions before contrast, 1.3-1.8 s, are inside; the control
   placement keeps away from them anyway);
2. computed on a ~2 mm grid (block average of the tissue fraction >= 0.5) for speed;
3. opening with a 3 mm ball (distance transforms): removes the thin skin shell and noise specks
   and cuts thin bridges to the scalp;
4. the largest connected component (the brain);
5. closing with a 3 mm ball: closes sulci, not the ventricles;
6. back to the reference grid (nearest neighbour).

Without a T1 map (no baseline VFA) a cruder fallback is used: the T1w above its Otsu threshold,
largest component, eroded by 10 mm (away from the scalp), see :func:`brain_mask_from_t1w`.

The words the sidecars and ``regions.json`` use for these choices are generated from the
constants below by :mod:`bids_agquant.methods`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_agquant.qmri import geometry as G
from bids_agquant.qmri.brain import largest_component as _largest_component

__all__ = ["brain_mask_from_t1", "brain_mask_from_t1w", "signal_mask", "otsu_threshold",
           "TISSUE_T1_RANGE_S", "MORPH_RADIUS_MM", "WORK_SPACING_MM", "T1W_EROSION_MM",
           "SIGNAL_FRACTION"]

#: Brain parenchyma T1 range (s) of the T1-based mask.
TISSUE_T1_RANGE_S = (0.5, 2.2)
#: Radius (mm) of the ball of the opening and closing.
MORPH_RADIUS_MM = 3.0
#: The masks are computed on a grid of about this spacing (mm), then brought back.
WORK_SPACING_MM = 2.0
#: Erosion (mm) of the T1w fallback mask (away from the scalp).
T1W_EROSION_MM = 10.0
#: Fraction of the Otsu threshold above which a voxel has signal (:func:`signal_mask`).
SIGNAL_FRACTION = 0.5


def _erode(mask, radius_mm, spacing):
    if not mask.any():
        return mask
    return G.depth_in_mask_mm(mask, spacing) > radius_mm


def _dilate(mask, radius_mm, spacing):
    if not mask.any():
        return mask
    return G.distance_to_mask_mm(mask, spacing, radius_mm) <= radius_mm


def _on_work_grid(fraction, affine):
    return G.block_average(fraction, affine, G.downsample_factor(affine, WORK_SPACING_MM))


def brain_mask_from_t1(t1_s, affine) -> np.ndarray:
    """Boolean brain-tissue mask from a T1 map (s) on the grid of ``affine`` (see module doc)."""
    t1 = np.asarray(t1_s, dtype=np.float32)
    lo, hi = TISSUE_T1_RANGE_S
    with np.errstate(invalid="ignore"):
        tissue = (np.isfinite(t1) & (t1 >= lo) & (t1 <= hi)).astype(np.float32)
    small, small_aff = _on_work_grid(tissue, affine)
    mask = small >= 0.5
    sp = G.voxel_sizes(small_aff)
    mask = _dilate(_erode(mask, MORPH_RADIUS_MM, sp), MORPH_RADIUS_MM, sp)
    mask = _largest_component(mask)
    mask = _erode(_dilate(mask, MORPH_RADIUS_MM, sp), MORPH_RADIUS_MM, sp)
    return _back(mask, small_aff, t1.shape, affine)


def brain_mask_from_t1w(t1w, affine, erode_mm: float = T1W_EROSION_MM) -> np.ndarray:
    """Fallback mask from a T1w image: Otsu threshold, largest component, eroded ``erode_mm``."""
    img = np.nan_to_num(np.asarray(t1w, dtype=np.float32))
    small, small_aff = _on_work_grid(img, affine)
    thr = otsu_threshold(small[small > 0]) if (small > 0).any() else 0.0
    mask = _largest_component(small > thr)
    mask = ndimage.binary_fill_holes(mask)
    mask = _erode(mask, erode_mm, G.voxel_sizes(small_aff))
    return _back(mask, small_aff, img.shape, affine)


def signal_mask(image, fraction: float = SIGNAL_FRACTION) -> np.ndarray:
    """Voxels with signal: above ``fraction`` x the Otsu threshold of the positive values.

    Used to skip the background (noise only) of the VFA fit and of the SE map, which are NaN
    there: no number is better than a fit to noise, and the maps compress several-fold.
    """
    img = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(img)
    positive = img[finite & (img > 0)]
    if positive.size == 0:
        return np.zeros(img.shape, dtype=bool)
    thr = fraction * otsu_threshold(positive)
    with np.errstate(invalid="ignore"):
        return finite & (img > thr)


def _back(mask, small_aff, shape, affine):
    if tuple(mask.shape) == tuple(shape) and np.allclose(small_aff, affine):
        return mask.astype(bool)
    return G.resample(mask.astype(np.uint8), small_aff, shape, affine, None, order=0) > 0


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the histogram bin centre maximising the between-class
    variance (``bins`` equal bins over the value range)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])
