"""The maps of one post-contrast state from reference-space R1 and T1w images (pure arrays).

delta R1 and [Gd] from the R1 maps (:mod:`bids_agquant.qmri.concentration`), T1 = 1/R1, and the
voxel SE map of the T1w pair (:mod:`bids_agquant.qmri.enhancement`), NaN in the background
(:func:`bids_agquant.qmri.masks.signal_mask` of the pre-contrast T1w: no signal to enhance).
"""
from __future__ import annotations

import numpy as np

from bids_agquant.qmri.concentration import concentration_mM, delta_r1
from bids_agquant.qmri.enhancement import intensity_scale, signal_enhancement_percent
from bids_agquant.qmri.masks import signal_mask
from bids_agquant.qmri.regions import StateMaps

__all__ = ["inverse", "scale_to_pre", "state_maps"]


def inverse(r1):
    """1 / ``r1`` where ``r1 > 0``, else NaN (T1 from R1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r1 > 0, 1.0 / r1, np.nan)


def scale_to_pre(t1w_post, t1w_pre, healthy):
    """(post-contrast T1w divided by its scale over the pre-contrast one in ``healthy``, scale).

    The scale is :func:`bids_agquant.qmri.enhancement.intensity_scale`; when it is NaN (too
    little healthy brain) the image is returned unchanged with the NaN scale.
    """
    scale = intensity_scale(t1w_post, t1w_pre, healthy)
    return (t1w_post / scale if np.isfinite(scale) else t1w_post), scale


def state_maps(*, relaxivity, r1_post=None, r1_pre=None, t1w_post=None,
               t1w_pre=None) -> StateMaps:
    """The :class:`~bids_agquant.qmri.regions.StateMaps` of one state.

    The R1 maps give ``t1_post``, ``t1_pre``, ``delta_r1`` and ``conc`` (with ``relaxivity``);
    the T1w pair (``t1w_post`` already scaled, see :func:`scale_to_pre`) gives ``se``. A pair
    with a missing image leaves its maps None.
    """
    maps = {}
    if r1_post is not None and r1_pre is not None:
        maps["t1_post"] = inverse(r1_post)
        maps["t1_pre"] = inverse(r1_pre)
        maps["delta_r1"] = delta_r1(r1_post, r1_pre)
        maps["conc"] = concentration_mM(maps["delta_r1"], relaxivity)
    if t1w_post is not None and t1w_pre is not None:
        maps["t1w_post"], maps["t1w_pre"] = t1w_post, t1w_pre
        se = signal_enhancement_percent(t1w_post, t1w_pre)
        se[~signal_mask(t1w_pre)] = np.nan        # background: no signal to enhance
        maps["se"] = se
    return StateMaps(**maps)
