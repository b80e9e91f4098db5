"""Signal enhancement (SE, %) of a post-contrast image over its pre-contrast reference.

    SE (%) = 100 * (S_post - S_pre) / S_pre

Two forms exist and they are not the same number:

* voxelwise, :func:`signal_enhancement_percent` -> an SE map (the ``_SEmap`` output);
* per region, :func:`roi_signal_enhancement_percent` -> the SE of the ROI mean signals,
  ``100 * (mean(S_post) - mean(S_pre)) / mean(S_pre)``.

The paper (Verry et al. 2020, "MRI signal amplitude being measured in the 3D T1-weighted image")
reports the SE of the ROI mean signals, and this is what the lesion table's ``se_mean_percent``
uses.  The mean of the voxel SE map over the same ROI is larger in noisy or heterogeneous regions
(the ratio of noisy denominators is biased upward, Jensen); it is available through
``roi_stats(signal_enhancement_percent(post, pre), roi)`` (:mod:`bids_agquant.qmri.lesions`), whose
SD is the one the table reports as ``se_sd_percent`` (the spread of the voxel SE over the ROI).

Both images must already be in one space (rigid registration happens before, elsewhere).
Invalid voxels are NaN, never clipped: a pre-contrast signal <= 0 or any non-finite input.
"""
from __future__ import annotations

import numpy as np

__all__ = ["signal_enhancement_percent", "roi_signal_enhancement_percent", "intensity_scale",
           "MIN_SCALE_VOXELS"]

#: Fewest reference voxels :func:`intensity_scale` accepts.
MIN_SCALE_VOXELS = 100


def _as_float_pair(post, pre):
    post = np.asarray(post, dtype=np.float64)
    pre = np.asarray(pre, dtype=np.float64)
    try:
        np.broadcast_shapes(post.shape, pre.shape)
    except ValueError:
        raise ValueError(f"post-contrast image of shape {post.shape} and pre-contrast image of "
                         f"shape {pre.shape} do not match: resample both into the reference "
                         f"space first") from None
    return post, pre


def _roi_images(post, pre, roi):
    """``post``, ``pre`` as float64 arrays of one shape, and the ROI as a boolean mask of it."""
    post, pre = _as_float_pair(post, pre)
    post, pre = np.broadcast_arrays(post, pre)
    roi = np.asarray(roi)
    if roi.shape != post.shape:
        raise ValueError(f"ROI of shape {roi.shape} does not match the images of shape "
                         f"{post.shape}: resample the ROI into the images' space")
    return post, pre, roi != 0


def signal_enhancement_percent(post, pre):
    """Voxelwise SE in percent, ``100 * (post - pre) / pre``.

    Parameters
    ----------
    post, pre : array_like (broadcastable), signal in arbitrary but identical units.

    Returns
    -------
    ndarray of float64, NaN where ``pre <= 0`` or either input is non-finite.
    """
    post, pre = _as_float_pair(post, pre)
    valid = np.isfinite(post) & np.isfinite(pre) & (pre > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        se = 100.0 * (post - pre) / pre
    return np.where(valid, se, np.nan)


def roi_signal_enhancement_percent(post, pre, roi):
    """SE in percent of the ROI mean signals (the paper's and the lesion table's definition).

    ``100 * (mean(post[v]) - mean(pre[v])) / mean(pre[v])`` over the ROI voxels ``v`` where both
    signals are finite (a real zero signal counts).  NaN when no voxel qualifies or the mean
    pre-contrast signal is <= 0.

    Parameters
    ----------
    post, pre : array_like of one shape (signal, same units).
    roi : boolean array_like of that shape (non-zero = inside).
    """
    post, pre, roi = _roi_images(post, pre, roi)
    sel = roi & np.isfinite(post) & np.isfinite(pre)
    if not sel.any():
        return float("nan")
    mean_post = float(post[sel].mean())
    mean_pre = float(pre[sel].mean())
    if not mean_pre > 0:
        return float("nan")
    return 100.0 * (mean_post - mean_pre) / mean_pre


def intensity_scale(post, pre, roi, min_voxels: int = MIN_SCALE_VOXELS) -> float:
    """Scale of the post-contrast image over the pre-contrast one in tissue that does not enhance.

    ``median(post[v] / pre[v])`` over the ROI voxels ``v`` where both signals are finite and
    positive.  The median of the voxel ratios, not the ratio of the medians: when the contrast
    between tissues changes a little between sessions (B1), the two medians can fall on
    different tissues (seen: 1.5 % off the true gain ratio on a phantom, against 0.3 %).

    T1w images of two sessions differ by receiver gain and scanner scaling, so SE across
    sessions is only meaningful after dividing the post-contrast image by this scale measured
    in healthy brain (where neither agent enhances, as the paper's controls show).  The median
    makes it robust to the few vessels and partial-volume voxels that do.

    Returns NaN when fewer than ``min_voxels`` voxels qualify.
    """
    post, pre, roi = _roi_images(post, pre, roi)
    sel = roi & np.isfinite(post) & np.isfinite(pre) & (post > 0) & (pre > 0)
    if int(sel.sum()) < int(min_voxels):
        return float("nan")
    return float(np.median(post[sel] / pre[sel]))
