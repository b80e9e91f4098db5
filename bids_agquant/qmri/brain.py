"""Intracranial mask and tissue classes from a registered template and the quantitative maps
(pure numpy/scipy, no I/O).

The registration of the template to the participant (antspyx) is in
:mod:`bids_agquant.interfaces.brain`; this module takes its result, the template's
intracranial prior resampled onto the reference grid, and decides voxel by voxel with the
participant's own T1 and M0 maps.

Intracranial mask (:func:`refine_intracranial`), documented choice:

1. *tissue-like* voxels: proton density at least :data:`BONE_M0_FRACTION` of the brain's
   median (cortical bone, air and noise fall below) and T1 at least :data:`FAT_T1_S` (fat and
   fatty marrow fall below); CSF, grey and white matter pass (so do muscle and skin, which the
   template keeps away);
2. allowed region: the registered template's intracranial volume grown by
   :data:`PRIOR_GROWTH_MM` (the registration is affine: the participant's brain may reach a few
   millimetres beyond it, never centimetres);
3. the tissue-like voxels of the allowed region connected to its core (the template volume
   eroded by :data:`CORE_DEPTH_MM`); an opening of :data:`OPENING_MM` first cuts thin bridges
   through partial-volumed bone;
4. holes filled, then eroded by :data:`FINAL_EROSION_MM` (the dura and the partial-volume rim
   of the inner table stay out: the mask errs inside, never outside).

Tissue classes (:func:`tissue_probabilities`): an expectation-maximisation fit of a Gaussian
mixture (diagonal covariance) of white matter, grey matter and CSF to the voxels of the mask,
with features R1 (1/s) and the T1w intensity (relative to its median in the mask), each voxel's
class probabilities weighted by the template's prior probabilities raised to
:data:`PRIOR_WEIGHT`. Class means start at the prior-weighted means, so no field strength is
assumed. The T1w then turns the classes into partial-volume fractions: a voxel darker than
the grey-matter level holds CSF in proportion to how far it lies towards the CSF level (the
median T1w of the ventricles, where the CSF prior exceeds :data:`CSF_CORE_PRIOR`); grey and
white matter share the rest as their posteriors do. (Sulcal CSF is mostly partial volume at
1 mm; classes alone put a third of it in grey matter.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_agquant.qmri import geometry as G

__all__ = ["BONE_M0_FRACTION", "FAT_T1_S", "PRIOR_GROWTH_MM", "CORE_DEPTH_MM", "OPENING_MM",
           "FINAL_EROSION_MM", "PRIOR_WEIGHT", "EM_ITERATIONS", "TISSUE_CLASSES",
           "EM_SAMPLE", "PROBABILITY_FLOOR", "refine_intracranial", "tissue_probabilities", "TissueProbabilities",
           "dilate", "erode", "largest_component"]

#: A voxel is tissue-like when its M0 is at least this fraction of the brain's median M0.
BONE_M0_FRACTION = 0.35
#: ... and its T1 (s) at least this (fat about 0.4 s at 1.5-3 T, white matter 0.6-0.9 s).
FAT_T1_S = 0.5
#: The intracranial mask may extend this far (mm) beyond the registered template volume.
PRIOR_GROWTH_MM = 4.0
#: The core (seed) is the registered template volume eroded by this (mm).
CORE_DEPTH_MM = 10.0
#: Radius (mm) of the opening that cuts thin bridges of tissue-like voxels through bone.
OPENING_MM = 1.5
#: The final mask is eroded by this (mm), so that it errs inside the skull.
FINAL_EROSION_MM = 1.0
#: Exponent of the template prior in the tissue classification (0: intensities only).
PRIOR_WEIGHT = 0.5
#: Expectation-maximisation iterations of the tissue mixture.
EM_ITERATIONS = 12
#: Class probabilities below this are written as 0.
PROBABILITY_FLOOR = 1e-6
#: Tissue classes, in the order of the probability maps and of the dseg labels 1, 2, 3.
TISSUE_CLASSES = ("GM", "WM", "CSF")


def erode(mask, radius_mm, spacing):
    """Voxels of ``mask`` whose centre lies deeper than ``radius_mm`` below its surface (half a
    voxel outside the outermost voxel centres; outside the array counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    return G.depth_in_mask_mm(mask, spacing) - 0.5 * float(np.min(spacing)) > radius_mm


def dilate(mask, radius_mm, spacing):
    """Voxels whose centre lies within ``radius_mm`` outside the surface of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    reach = radius_mm + 0.5 * float(np.min(spacing))
    return G.distance_to_mask_mm(mask, spacing, reach) <= reach


def largest_component(mask):
    """The largest 6-connected component of ``mask`` (empty stays empty)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.asarray(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _tissue_like(t1_s, m0, prior_mask):
    """Boolean: M0 and T1 of CSF or parenchyma (not bone, air, fat or marrow)."""
    t1 = np.asarray(t1_s, dtype=np.float64)
    finite = np.isfinite(t1)
    ok = finite & (np.where(finite, t1, 0.0) >= FAT_T1_S)
    if m0 is not None:
        m0 = np.asarray(m0, dtype=np.float64)
        fm = np.isfinite(m0)
        brain = prior_mask & ok & fm & (np.where(finite, t1, np.inf) <= 2.5)
        level = float(np.median(m0[brain])) if brain.any() else np.nan
        if np.isfinite(level) and level > 0:
            ok &= fm & (np.where(fm, m0, 0.0) >= BONE_M0_FRACTION * level)
    return ok


def refine_intracranial(prior, t1_s, m0, affine) -> np.ndarray:
    """Boolean intracranial mask (parenchyma and CSF) on the grid of ``affine``.

    ``prior``: the registered template's intracranial probability (0-1) on this grid; ``t1_s``:
    T1 map (s, NaN where not fitted); ``m0``: M0 map (any scale) or None. See the module doc.
    """
    full = np.nan_to_num(np.asarray(prior, dtype=np.float64)) > 0.5
    spacing = G.voxel_sizes(affine)
    if not full.any():
        return full
    box = G.bounding_box(full, (PRIOR_GROWTH_MM + 2 * OPENING_MM) / spacing + 2)
    prior = full[box]
    t1_s = None if t1_s is None else np.asarray(t1_s)[box]
    m0 = None if m0 is None else np.asarray(m0)[box]
    out = np.zeros(full.shape, dtype=bool)
    out[box] = _refined(prior, t1_s, m0, spacing)
    return out


def _refined(prior, t1_s, m0, spacing):
    if t1_s is None:                    # nothing to decide with: the template's volume
        return erode(prior, FINAL_EROSION_MM, spacing)
    candidate = _tissue_like(t1_s, m0, prior) & dilate(prior, PRIOR_GROWTH_MM, spacing)
    candidate = dilate(erode(candidate, OPENING_MM, spacing), OPENING_MM, spacing) & candidate
    core = erode(prior, CORE_DEPTH_MM, spacing) & candidate
    labels, n = ndimage.label(candidate)
    keep = np.unique(labels[core])
    keep = keep[keep > 0]
    mask = np.isin(labels, keep) if keep.size else largest_component(candidate)
    mask = ndimage.binary_fill_holes(mask)
    return erode(mask, FINAL_EROSION_MM, spacing)


@dataclass(frozen=True)
class TissueProbabilities:
    """Probability maps (float32, 0 outside the mask) of :data:`TISSUE_CLASSES`, the class
    means of each feature (R1 1/s, relative T1w) and the number of EM iterations run."""
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    means: dict
    iterations: int

    def stack(self) -> np.ndarray:
        return np.stack([self.gm, self.wm, self.csf], axis=-1)

    def labels(self) -> np.ndarray:
        """uint8 dseg: 0 outside, 1 GM, 2 WM, 3 CSF (the most probable class)."""
        s = self.stack()
        out = (np.argmax(s, axis=-1) + 1).astype(np.uint8)
        out[s.sum(axis=-1) <= 0] = 0
        return out

    def parenchyma(self) -> np.ndarray:
        return self.gm + self.wm


def _features(mask, r1, t1w):
    feats = []
    for name, img in (("R1_per_s", r1), ("T1w_relative", t1w)):
        if img is None:
            continue
        v = np.asarray(img, dtype=np.float64)[mask]
        if name == "T1w_relative":
            med = np.nanmedian(v)
            v = v / med if np.isfinite(med) and med > 0 else v
        feats.append((name, v))
    return feats


#: The mixture's parameters are estimated on at most this many voxels (a regular subsample).
EM_SAMPLE = 200_000


def _posteriors(x, log_prior, mu, sd, frac):
    z = (x[:, None, :] - mu[None]) / sd[None]                            # (n, k, f)
    logp = (-0.5 * (z * z).sum(axis=2) - np.log(sd).sum(axis=1)[None]
            + np.log(frac)[None] + log_prior)
    logp -= logp.max(axis=1, keepdims=True)
    post = np.exp(logp)
    return post / post.sum(axis=1, keepdims=True)


def _em(x_all, prior_all, iterations):
    """EM of a diagonal Gaussian mixture with per-voxel prior weights: (posteriors, means).
    Parameters from a regular subsample of at most :data:`EM_SAMPLE` voxels, posteriors of all."""
    step = max(1, int(np.ceil(x_all.shape[0] / EM_SAMPLE)))
    x, prior = x_all[::step], prior_all[::step]
    post = prior / np.maximum(prior.sum(axis=1, keepdims=True), 1e-12)
    log_prior = PRIOR_WEIGHT * np.log(np.maximum(prior, 1e-6))
    mu = sd = frac = None
    for _ in range(iterations):
        w = post.sum(axis=0) + 1e-9
        mu = (post.T @ x) / w[:, None]                                  # (k, f)
        var = (post.T @ (x * x)) / w[:, None] - mu ** 2
        sd = np.sqrt(np.maximum(var, 1e-6 * (np.abs(mu) + 1e-3) ** 2))
        frac = w / w.sum()
        post = _posteriors(x, log_prior, mu, sd, frac)
    log_prior_all = PRIOR_WEIGHT * np.log(np.maximum(prior_all, 1e-6))
    return _posteriors(x_all, log_prior_all, mu, sd, frac), mu


#: The CSF T1w level is the median over mask voxels whose CSF prior exceeds this (ventricles),
#: when there are at least :data:`MIN_CSF_CORE_VOXELS` of them (else the mixture's CSF mean).
CSF_CORE_PRIOR = 0.9
MIN_CSF_CORE_VOXELS = 100


def _partial_volume(post, mask, t1w, csf_prior, means):
    """Posteriors -> partial-volume fractions: the CSF fraction of a voxel darker than grey
    matter on the T1w is linear between the GM and CSF levels; GM and WM share the rest in
    the ratio of their posteriors."""
    rel = np.asarray(t1w, dtype=np.float64)[mask]
    rel = rel / np.nanmedian(rel)
    gm_level = means["GM"]["T1w_relative"]
    core = csf_prior > CSF_CORE_PRIOR
    csf_level = (float(np.nanmedian(rel[core])) if core.sum() >= MIN_CSF_CORE_VOXELS
                 else means["CSF"]["T1w_relative"])
    if not (np.isfinite(csf_level) and csf_level < gm_level):
        return post
    with np.errstate(invalid="ignore"):
        f_csf = np.clip((gm_level - rel) / (gm_level - csf_level), 0.0, 1.0)
    f_csf = np.where(np.isfinite(f_csf), f_csf, post[:, 2])
    tissue = post[:, 0] + post[:, 1]
    share = np.where(tissue > 0, post[:, 0] / np.maximum(tissue, 1e-12), 0.5)
    return np.stack([(1 - f_csf) * share, (1 - f_csf) * (1 - share), f_csf], axis=1)


def tissue_probabilities(mask, priors, r1=None, t1w=None,
                         iterations: int = EM_ITERATIONS) -> TissueProbabilities:
    """GM/WM/CSF probabilities inside ``mask`` (see the module doc).

    ``priors``: (GM, WM, CSF) template probabilities (0-1) on the mask's grid; ``r1`` (1/s) and
    ``t1w`` (any scale) the features, at least one given. Voxels with a non-finite feature keep
    their normalised prior.
    """
    mask = np.asarray(mask, dtype=bool)
    pri = np.stack([np.clip(np.nan_to_num(np.asarray(p, dtype=np.float64))[mask], 0, 1)
                    for p in priors], axis=1) + 1e-3
    feats = _features(mask, r1, t1w)
    if not feats:
        raise ValueError("tissue_probabilities needs an R1 map or a T1w image")
    x = np.stack([v for _, v in feats], axis=1)
    good = np.isfinite(x).all(axis=1)
    post = pri / pri.sum(axis=1, keepdims=True)
    means = {}
    if good.sum() >= 100:
        post_good, mu = _em(x[good], pri[good], iterations)
        post[good] = post_good
        means = {cls: {name: float(mu[k, j]) for j, (name, _) in enumerate(feats)}
                 for k, cls in enumerate(TISSUE_CLASSES)}
    if t1w is not None and "CSF" in means:
        post = _partial_volume(post, mask, t1w, pri[:, 2], means)
    post[post < PROBABILITY_FLOOR] = 0.0
    maps = []
    for k in range(3):
        m = np.zeros(mask.shape, dtype=np.float32)
        m[mask] = post[:, k]
        maps.append(m)
    return TissueProbabilities(maps[0], maps[1], maps[2], means, iterations)
