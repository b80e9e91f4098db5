"""Uncertainty of region means: standard errors, confidence intervals, detection limits.

Pure numpy/scipy, no I/O.  What a lesion row's uncertainty columns mean and how they are made:

Noise of one VFA voxel's R1 (analytic propagation through the fit)
    The fitted SPGR curve ``S(a) = M0 sin(b a) (1 - E) / (1 - E cos(b a))``, ``E = exp(-TR R1)``,
    has the Jacobian ``dS/dM0 = S / M0``, ``dS/dR1 = M0 sin(b a) (1 - cos(b a)) TR E /
    (1 - E cos(b a))**2``.  With independent signal noise of variance ``sigma**2`` at every
    flip angle, the least-squares estimate has ``var(R1) = sigma**2 [(J^T J)^-1]_(R1, R1)``
    (:func:`r1_variance_factor`).  ``sigma**2`` is the data's own: the fit's residual sum of
    squares pooled over the voxels within :data:`NOISE_WINDOW_MM` (a cube) divided by their
    degrees of freedom (angles used minus the two parameters), :func:`pooled_residual_variance`,
    so a receiver coil's uneven noise is followed and one voxel's two degrees of freedom are not
    trusted alone.

Spatial correlation from resampling (exact for the pipeline's linear interpolation)
    R1 is fitted on the VFA grid and resampled linearly into the reference space through one
    affine transform, so a region mean in the reference space is a weighted sum of VFA voxels,
    ``mean = sum_j w_j R1_j`` with ``w_j`` the interpolation weights the region's voxels put on
    voxel ``j`` (NaN-aware, as :func:`bids_agquant.qmri.geometry.resample_many` does), divided by
    the number of region voxels.  Its variance is ``sum_j w_j**2 var(R1_j)``
    (:func:`mean_weights`, :func:`variance_of_mean`): a 1 mm region of ``n`` voxels drawn from
    ``n / 12`` VFA voxels of 2 x 2 x 3 mm has about 12 times the variance ``sd**2 / n`` would
    say.  Pre- and post-contrast R1 come from separate acquisitions, so their variances add.

Signal enhancement
    ``SE = 100 (P / Q - 1)`` with ``P``, ``Q`` the region means of the post- and pre-contrast
    T1w.  Each image's noise SD is estimated on its native grid (:func:`image_noise_sd`, the
    median absolute Immerkaer second difference in the head, robust to anatomy), carried through
    its own transform to the region mean as above, and ``var(SE) = 100**2 (P/Q)**2
    (rel_P**2 + rel_Q**2)`` with ``rel = SE(mean) / mean`` (first-order propagation).

Confidence interval, detection and quantification (:func:`detection_limits`)
    The 95 % interval is ``mean +/- z SE`` (z = :data:`Z_95`).  The detection limits follow
    Currie (1968) and ICH Q2: with ``sigma0`` the SD of a region mean whose true value is zero,
    the critical level is ``L_C = 1.645 sigma0`` (a value above it is *detected*: false
    positives 5 %), the limit of detection ``L_D = 3.29 sigma0`` (a true value there is detected
    95 % of the time) and the limit of quantification ``L_Q = 10 sigma0`` (10 % relative SD).
    ``sigma0**2 = SE**2 + tau**2``: the lesion's own standard error (its noise under the null is
    that of the measurement; the post-contrast R1 variance grows only slowly with R1) plus the
    between-session systematic term ``tau**2`` that the healthy-tissue control regions of the
    same state show beyond their own noise, ``max(0, mean(c_k**2 - SE_k**2))`` (a B1 or
    registration mismatch between sessions moves them off zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_agquant.qmri.spgr import effective_flip_rad

__all__ = ["Z_95", "CRITICAL_Z", "LOD_FACTOR", "LOQ_FACTOR", "NOISE_WINDOW_MM", "NOISE_PLANES",
           "MAD_TO_SD",
           "N_VFA_PARAMS",
           "r1_variance_factor", "pooled_residual_variance", "vfa_r1_variance",
           "mean_weights", "variance_of_mean", "ResampledNoise", "StateNoise", "image_noise_sd",
           "between_session_variance", "DetectionLimits", "detection_limits"]

#: Two-sided 95 % normal quantile: the confidence intervals are ``mean +/- Z_95 * SE``.
Z_95 = 1.959963984540054
#: One-sided 5 % normal quantile: the critical level of detection is ``CRITICAL_Z * sigma0``.
CRITICAL_Z = 1.6448536269514722
#: Limit of detection in units of ``sigma0`` (Currie: twice the critical level, 3.29).
LOD_FACTOR = 2.0 * CRITICAL_Z
#: Limit of quantification in units of ``sigma0`` (ICH Q2 / Currie: 10, a 10 % relative SD).
LOQ_FACTOR = 10.0
#: Side (mm) of the cube over which the VFA fit residuals are pooled into a noise variance.
NOISE_WINDOW_MM = 15.0
#: Parameters of the VFA fit (M0 and R1): the degrees of freedom of a voxel are angles minus this.
N_VFA_PARAMS = 2


# --------------------------------------------------------------------------- VFA voxels

def r1_variance_factor(m0, t1_s, flip_angles_deg, tr_s, b1=None) -> np.ndarray:
    """``[(J^T J)^-1]_(R1, R1)`` of the SPGR fit per voxel: ``var(R1) / sigma**2`` (s^-2 per
    signal unit squared) for independent noise of SD ``sigma`` at each flip angle; NaN where the
    parameters are not finite or the information matrix is singular."""
    m0 = np.asarray(m0, dtype=np.float64)
    t1 = np.asarray(t1_s, dtype=np.float64)
    alpha = effective_flip_rad(flip_angles_deg, b1)
    with np.errstate(all="ignore"):
        e = np.exp(-float(tr_s) / t1)[..., None]
        s, c = np.sin(alpha), np.cos(alpha)
        denom = 1.0 - e * c
        d_m0 = s * (1.0 - e) / denom                                   # dS/dM0
        d_r1 = m0[..., None] * s * (1.0 - c) * float(tr_s) * e / denom ** 2
        a = np.sum(d_m0 * d_m0, axis=-1)
        b = np.sum(d_m0 * d_r1, axis=-1)
        cc = np.sum(d_r1 * d_r1, axis=-1)
        det = a * cc - b * b
        out = np.where(det > 0, a / det, np.nan)
    return np.where(np.isfinite(out), out, np.nan)


def pooled_residual_variance(residual_rms, n_used, spacing_mm, *, valid=None,
                             window_mm: float = NOISE_WINDOW_MM,
                             n_params: int = N_VFA_PARAMS) -> np.ndarray:
    """Signal noise variance per voxel from the VFA fit residuals pooled in a cube.

    ``residual_rms``: the fit's RMS residual over the ``n_used`` angles (``VFAFit.residual``);
    the residual sum of squares ``residual_rms**2 * n_used`` and the degrees of freedom
    ``n_used - n_params`` of the valid voxels within ``window_mm`` are summed and divided.
    NaN where the window holds no degree of freedom.
    """
    res = np.asarray(residual_rms, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n_used, dtype=np.float64), res.shape)
    ok = np.isfinite(res) & (n > n_params)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    rss = np.where(ok, res * res * n, 0.0)
    dof = np.where(ok, n - n_params, 0.0)
    size = [max(1, int(round(window_mm / float(s)))) for s in spacing_mm]
    size = [k + 1 - k % 2 for k in size]           # odd: centred on the voxel
    num = ndimage.uniform_filter(rss, size=size, mode="constant")
    den = ndimage.uniform_filter(dof, size=size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-9, num / np.maximum(den, 1e-300), np.nan)


def vfa_r1_variance(fit, spacing_mm, n_used=None, window_mm: float = NOISE_WINDOW_MM):
    """Variance of R1 (s^-2) per voxel of a :class:`~bids_agquant.qmri.vfa.VFAFit`: the pooled
    residual variance times :func:`r1_variance_factor` (NaN where the fit is invalid)."""
    if n_used is None:
        n_used = len(fit.flip_angles_deg)
    sigma2 = pooled_residual_variance(fit.residual, n_used, spacing_mm, valid=fit.valid,
                                      window_mm=window_mm)
    factor = r1_variance_factor(fit.m0, fit.t1, fit.flip_angles_deg, fit.tr_s, fit.b1)
    return np.where(fit.valid, sigma2 * factor, np.nan)


# --------------------------------------------------------------------------- region means

def mean_weights(target_voxels, vox_map, source_shape, source_finite=None):
    """Weights of the source voxels in the mean of linearly resampled values over target voxels.

    ``target_voxels``: (k, 3) integer indices on the target grid; ``vox_map``: the 4x4 map from
    target to source voxel indices (:func:`bids_agquant.qmri.geometry.voxel_map`);
    ``source_finite``: where the source map is finite (NaN-aware resampling renormalises the
    weights of each target voxel over its finite neighbours, and drops a target voxel with less
    than half of its weight there, as :func:`~bids_agquant.qmri.geometry.resample_many`).

    Returns ``(flat source indices, weights, n target voxels kept)``: the resampled mean is
    ``sum(weights * source.ravel()[indices])``.
    """
    pts = np.asarray(target_voxels, dtype=np.float64).reshape(-1, 3)
    vox = np.asarray(vox_map, dtype=np.float64)
    src = pts @ vox[:3, :3].T + vox[:3, 3]
    base = np.floor(src).astype(np.int64)
    frac = src - base
    shape = np.asarray(source_shape, dtype=np.int64)
    finite = None if source_finite is None else np.asarray(source_finite, dtype=bool).ravel()
    idx_all, w_all = [], []
    for corner in np.ndindex(2, 2, 2):
        off = np.asarray(corner)
        ijk = base + off
        w = np.prod(np.where(off == 1, frac, 1.0 - frac), axis=1)
        inside = np.all((ijk >= 0) & (ijk < shape), axis=1)
        flat = np.where(inside, np.ravel_multi_index(
            tuple(np.clip(ijk, 0, shape - 1).T), tuple(shape)), 0)
        if finite is not None:
            inside &= finite[flat]
        idx_all.append(flat)
        w_all.append(np.where(inside, w, 0.0))
    idx = np.stack(idx_all, axis=1)
    w = np.stack(w_all, axis=1)
    total = w.sum(axis=1)
    keep = total >= 0.5
    n_kept = int(keep.sum())
    if n_kept == 0:
        return np.zeros(0, np.int64), np.zeros(0), 0
    w = w[keep] / total[keep, None] / n_kept
    idx = idx[keep]
    uniq, inverse = np.unique(idx.ravel(), return_inverse=True)
    weights = np.bincount(inverse, weights=w.ravel(), minlength=uniq.size)
    nz = weights > 0
    return uniq[nz], weights[nz], n_kept


def variance_of_mean(variance_map, indices, weights) -> float:
    """``sum_j w_j**2 var_j`` over the source voxels of a weighted mean (NaN when a weighted
    voxel has no finite variance, or there are no weights)."""
    if len(indices) == 0:
        return float("nan")
    var = np.asarray(variance_map, dtype=np.float64).ravel()[indices]
    if not np.all(np.isfinite(var)):
        return float("nan")
    return float(np.sum(np.asarray(weights) ** 2 * var))


class ResampledNoise:
    """A source-grid variance map and the map from the reference grid into it.

    ``variance``: per source voxel (NaN = no value: the resampling leaves it out);
    ``vox_map``: reference voxel indices -> source voxel indices (4x4); ``values``: the source
    image itself when a relative error is wanted (T1w), else None.  The maps are flattened once
    (float64, contiguous): every region then reads only its own source voxels.
    """

    def __init__(self, variance, vox_map, values=None):
        var = np.asarray(variance, dtype=np.float64)
        self.shape = var.shape
        self.vox_map = np.asarray(vox_map, dtype=np.float64)
        self._variance = np.ascontiguousarray(var).ravel()
        finite = np.isfinite(self._variance)
        if values is None:
            self._values = None
        else:
            self._values = np.ascontiguousarray(np.asarray(values, dtype=np.float64)).ravel()
            if self._values.size != self._variance.size:
                raise ValueError(f"values {np.shape(values)} and variance {self.shape} differ")
            finite &= np.isfinite(self._values)
        self._finite = finite

    @classmethod
    def identity(cls, variance) -> "ResampledNoise":
        """Noise of a map that is on the reference grid itself."""
        return cls(variance, np.eye(4))

    def _weights(self, target_voxels):
        return mean_weights(target_voxels, self.vox_map, self.shape, self._finite)[:2]

    def mean_variance(self, target_voxels) -> float:
        """Variance of the reference-space mean over ``target_voxels`` ((k, 3) indices)."""
        idx, w = self._weights(target_voxels)
        return variance_of_mean(self._variance, idx, w)

    def weighted_mean(self, target_voxels) -> tuple[float, float]:
        """(mean of the resampled ``values``, variance of that mean) over ``target_voxels``."""
        if self._values is None:
            raise ValueError("this noise source was given no values")
        idx, w = self._weights(target_voxels)
        if len(idx) == 0:
            return float("nan"), float("nan")
        return float(np.sum(w * self._values[idx])), variance_of_mean(self._variance, idx, w)

    def relative_error(self, target_voxels) -> float:
        """SE of the resampled mean of ``values`` over its value (NaN if not positive)."""
        mean, var = self.weighted_mean(target_voxels)
        return math.sqrt(var) / mean if mean > 0 and math.isfinite(var) else float("nan")


@dataclass(frozen=True, eq=False)
class StateNoise:
    """The noise sources of one post-contrast state's region means (each may be None: the
    columns that need it are n/a): the post- and pre-contrast R1 and T1w."""
    r1_post: ResampledNoise | None = None
    r1_pre: ResampledNoise | None = None
    t1w_post: ResampledNoise | None = None
    t1w_pre: ResampledNoise | None = None

    def delta_r1_se(self, target_voxels) -> float:
        """Standard error (1/s) of the mean delta R1 over ``target_voxels``."""
        if self.r1_post is None or self.r1_pre is None or len(target_voxels) == 0:
            return float("nan")
        var = self.r1_post.mean_variance(target_voxels) + self.r1_pre.mean_variance(
            target_voxels)
        return math.sqrt(var) if math.isfinite(var) else float("nan")

    def se_percent_se(self, se_mean_percent, target_voxels) -> float:
        """Standard error (percentage points) of the region's SE ``100 (P/Q - 1)``."""
        if self.t1w_post is None or self.t1w_pre is None or len(target_voxels) == 0:
            return float("nan")
        rel_p = self.t1w_post.relative_error(target_voxels)
        rel_q = self.t1w_pre.relative_error(target_voxels)
        ratio = 1.0 + float(se_mean_percent) / 100.0
        return float(100.0 * abs(ratio) * math.hypot(rel_p, rel_q))


# --------------------------------------------------------------------------- image noise

#: Immerkaer's (1996) noise mask: the difference of two discrete Laplacians; it cancels image
#: structure up to second order, and ``sum(mask**2) = 36``.
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
MAD_TO_SD = 1.482602218505602     # 1 / Phi^-1(3/4): the MAD of a normal sample times this
#: Planes of an image read by :func:`image_noise_sd` (evenly spaced; each of them whole).
NOISE_PLANES = 32


def image_noise_sd(image, mask, spacing_mm=None, max_planes: int | None = NOISE_PLANES) -> float:
    """Noise SD of an image from its own voxels: the median absolute Immerkaer second
    difference in the planes of the two finest axes, over voxels whose 3 x 3 neighbourhood lies
    in ``mask``, scaled to an SD (``1.4826 * median|f| / 6``).  NaN with fewer than 100 such
    voxels.  Anatomy leaves the median nearly untouched (edges are a minority of voxels).

    The filter works plane by plane, so at most ``max_planes`` evenly spaced planes are read
    (None: all): the same statistic on fewer samples (a million at 1 mm), several times faster.
    """
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    through = 2 if spacing_mm is None else int(np.argmax(np.asarray(spacing_mm, float)))
    if max_planes is not None and img.shape[through] > max_planes:
        planes = np.unique(np.linspace(0, img.shape[through] - 1, max_planes).round().astype(int))
        img, m = np.take(img, planes, axis=through), np.take(m, planes, axis=through)
    m = m & np.isfinite(img)
    kernel = np.expand_dims(_IMMERKAER, axis=through)
    filtered = ndimage.convolve(np.where(m, img, 0.0), kernel, mode="constant")
    inside = ndimage.binary_erosion(m, structure=(np.abs(kernel) > 0), border_value=0)
    values = filtered[inside]
    if values.size < 100:
        return float("nan")
    return float(MAD_TO_SD * np.median(np.abs(values)) / 6.0)


# --------------------------------------------------------------------------- detection

def between_session_variance(control_means, control_ses) -> float:
    """``tau**2 = max(0, mean(c_k**2 - SE_k**2))``: what the control regions' means (true value
    zero) vary beyond their own noise; 0 without finite controls."""
    c = np.asarray(control_means, dtype=np.float64)
    s = np.asarray(control_ses, dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(s)
    if not ok.any():
        return 0.0
    return float(max(0.0, np.mean(c[ok] ** 2 - s[ok] ** 2)))


@dataclass(frozen=True)
class DetectionLimits:
    """Critical level, limits of detection and quantification (the mean's unit) and the flags."""
    sigma0: float
    critical_level: float
    lod: float
    loq: float
    detected: bool | None
    quantifiable: bool | None


def detection_limits(mean, se, tau2: float = 0.0) -> DetectionLimits:
    """Currie's limits for one region mean (see the module docstring); flags None when the mean
    or its SE is not finite."""
    mean, se = float(mean), float(se)
    if not (math.isfinite(se) and se >= 0 and math.isfinite(tau2)):
        nan = float("nan")
        return DetectionLimits(nan, nan, nan, nan, None, None)
    sigma0 = math.sqrt(se * se + max(tau2, 0.0))
    crit = CRITICAL_Z * sigma0
    lod, loq = LOD_FACTOR * sigma0, LOQ_FACTOR * sigma0
    if not math.isfinite(mean):
        return DetectionLimits(sigma0, crit, lod, loq, None, None)
    return DetectionLimits(sigma0, crit, lod, loq, bool(mean > crit), bool(mean >= loq))
