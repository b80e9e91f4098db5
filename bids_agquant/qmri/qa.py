"""Site quality assurance of every session (pure numpy/scipy, no I/O).

What the participant QA table (``sub-<p>_desc-qa_stats.tsv``) holds, one row per metric of one
contrast state or registration, and how each metric is made:

Normal-appearing white matter (NAWM), :func:`nawm_mask`
    Voxels of the brain mask whose white-matter probability (the tissue classes of the brain
    extraction) is at least :data:`NAWM_MIN_PROBABILITY`, eroded once (no partial volume with
    grey matter or CSF), farther than :data:`LESION_MARGIN_MM` from every lesion.
``nawm_t1_s``
    Median T1 in NAWM against the published range of human white matter at the session's field
    strength (:data:`NAWM_T1_RANGES_S`); outside it, the T1 mapping (flip angles, B1, TR,
    scaling) is wrong for the whole session.
``nawm_r1_change``
    Pre-contrast states only: median over NAWM of R1 / R1 of the baseline pre-contrast state,
    minus 1.  Healthy tissue R1 does not change between sessions; a global shift is a
    calibration fault (B1, flip angle, another protocol).
``nawm_r1_pattern``
    Every state with a T1 map but the baseline: a full quadratic in x, y, z fitted by least
    squares to the ratio R1 / baseline R1 over NAWM (refitted once without voxels beyond
    :data:`PATTERN_TRIM_SD` robust SDs), divided by its median; half the 5-95 percentile spread
    of the fitted quadratic over NAWM, less (in quadrature) the spread the noise alone gives
    (:data:`PATTERN_NOISE_BLOCK_MM`: the quadratic refitted to the residuals with random signs
    per block, which keeps the noise's spatial correlation and destroys any smooth pattern).
    A B1 map that does not belong to the session (another session's, a misregistered one)
    leaves a smooth spatial pattern in that ratio, which a quadratic follows (transmit fields
    are smooth); a uniform change (the blood pool after contrast) is divided out.  (A
    Gaussian-smoothed ratio was tried first: its spread followed the noise level, 0.006 to
    0.017 on correct phantoms; the quadratic's spread without the noise floor still reached
    0.012 on a correct 4 x 4 x 5 mm VFA at SNR 30.)
``b1_p01``, ``b1_p99``, ``b1_noise_sd``, ``b1_anatomy_correlation``
    The B1+ factor the fit used, over the head voxels of the VFA grid
    (:func:`b1_statistics`): its 1st and 99th percentiles against the plausible range of head
    transmit fields; its voxel noise, the robust SD of its 7-point Laplacian divided by
    :data:`LAPLACIAN_NOISE_GAIN` (the Laplacian's gain on white noise, so the value is the noise
    SD of the factor; a transmit field's own curvature hardly shows at the voxel scale); and the
    correlation of its fine structure with the anatomy: the map and each VFA image, each minus
    its Gaussian smoothing of :data:`FINE_STRUCTURE_SIGMA_VOXELS` voxels, correlated over the
    head eroded by three of those SDs (so no smoothed value reaches past its edge, which
    otherwise gave correct maps -0.2 to -0.3), the largest in magnitude over the images.  A
    transmit field does not follow the anatomy, so a map that does is not a B1 map of this head
    (an anatomical image given as the B1 map, such as the magnitude image a B1 mapping
    sequence also writes, or a map broken by the tissue it was computed from).  (A roughness
    relative to the map's spread was tried first: a B1 map computed from AFI images, correct
    but noisy, scored higher than an anatomical image.)
``vfa_systematic_residual``
    The VFA fit's residual that is common to all voxels (:func:`vfa_systematic_residual`): per
    flip angle the median over fitted voxels of (signal - fitted) / mean fitted signal, then the
    root mean square over the angles.  Noise averages out over thousands of voxels; a wrong
    nominal flip angle, TR or scaling of one image leaves a misfit of the same sign everywhere.
``snr_t1w``, ``snr_t1w_relative``
    The T1w's NAWM median over its noise SD, both on its native grid (the NAWM mask brought
    onto it through the T1w's registration; the SD by
    :func:`bids_agquant.qmri.uncertainty.image_noise_sd` over the NAWM, a homogeneous tissue),
    and that SNR over the median SNR of the participant's T1w images:
    a session much noisier than the participant's others (coil element off, wrong protocol).
``registration_ncc``
    Every rigid registration: normalised cross-correlation of the fixed image and the moving
    image resampled through the result, over the fixed image's head, on the registration's own
    ~2 mm grid (:func:`registration_ncc`).  Low values mean a failed registration.

Every threshold is a :class:`Threshold` of :data:`THRESHOLDS` (their one home); the table in
``docs/qa.md`` is generated from it (:func:`thresholds_markdown`).  A flag never stops the run:
the participant report and the log show it, and the group level can leave flagged sessions out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_agquant.qmri import geometry as G
from bids_agquant.qmri.uncertainty import MAD_TO_SD

__all__ = ["Threshold", "THRESHOLDS", "NAWM_T1_RANGES_S", "NAWM_MIN_PROBABILITY",
           "LESION_MARGIN_MM", "PATTERN_TRIM_SD", "PATTERN_NOISE_BLOCK_MM",
           "PATTERN_NOISE_DRAWS", "PATTERN_NOISE_FACTOR", "LAPLACIAN_NOISE_GAIN",
           "FINE_STRUCTURE_SIGMA_VOXELS", "METRIC_ORDER", "metric_rank", "threshold_for",
           "high_text", "flagged",
           "thresholds_markdown", "nawm_mask", "nawm_t1_median", "r1_change", "r1_pattern",
           "b1_statistics", "vfa_systematic_residual", "snr", "registration_ncc",
           "head_mask_for_registration"]

#: A voxel is NAWM when its white-matter probability is at least this (then eroded once).
NAWM_MIN_PROBABILITY = 0.9
#: ... and it lies farther than this (mm) from every lesion voxel.
LESION_MARGIN_MM = 5.0
#: ``nawm_r1_pattern`` refits the quadratic without voxels whose residual exceeds this many
#: robust SDs.
PATTERN_TRIM_SD = 3.0
#: ``nawm_r1_pattern``'s noise floor: the quadratic refitted to the residuals with a random sign
#: per block of this size (mm), :data:`PATTERN_NOISE_DRAWS` times (seeded), RMS of the spreads,
#: times :data:`PATTERN_NOISE_FACTOR`, taken off in quadrature.  The factor: on states whose
#: true ratio is uniform (a Dotarem state against its own session's pre-contrast state) the
#: spread was 1.5-2.6 times the sign-flip RMS (VFA 2 x 2 x 3 to 4 x 4 x 5 mm, SNR 30-55).
PATTERN_NOISE_BLOCK_MM = 6.0
PATTERN_NOISE_DRAWS = 16
PATTERN_NOISE_FACTOR = 2.0
#: Gain of the 7-point Laplacian on white noise: its output SD over the input SD, sqrt(6^2 + 6).
LAPLACIAN_NOISE_GAIN = math.sqrt(42.0)
#: ``b1_anatomy_correlation`` compares what is left of each image after a Gaussian smoothing of
#: this SD (voxels of the VFA grid).
FINE_STRUCTURE_SIGMA_VOXELS = 2.0


@dataclass(frozen=True)
class Threshold:
    """A metric is flagged when it is not finite or lies outside ``[low, high]``."""
    metric: str
    low: float
    high: float
    unit: str
    why: str
    source: str


#: Median T1 (s) of human white matter by field strength (T): the range a NAWM median must fall
#: in.  3 T: white matter T1 of 0.78-1.1 s over methods (Stikov et al. 2015, MRM 73:514) and the
#: ISMRM 2020 T1 challenge's human data (genu and splenium; 0.70-1.15 s over sites, tested);
#: 1.5 T: 0.56-0.85 s (Rooney et al. 2007, MRM 57:308; Stikov 2015).  The ranges are widened so
#: that a correct measurement of another method or site is not flagged.
NAWM_T1_RANGES_S = {1.5: (0.50, 0.95), 3.0: (0.65, 1.25)}

THRESHOLDS: dict[str, Threshold] = {t.metric: t for t in (
    Threshold("nawm_r1_change", -0.05, 0.05, "ratio",
              "pre-contrast NAWM R1 / baseline pre-contrast NAWM R1 - 1: healthy tissue R1 does "
              "not change between sessions",
              "VFA test-retest of white matter R1 within a few % (Deoni 2007, MRM 57:609)"),
    Threshold("nawm_r1_pattern", 0.0, 0.01, "ratio",
              "half the 5-95 % spread of a quadratic fitted to the NAWM R1 ratio to the "
              "baseline: a B1 map not of this session leaves a spatial pattern",
              "set on the sample dataset (correct 0-0.0024, another session's B1 map "
              "0.044-0.067) and phantom Q (correct 0, another session's 0.0136); other "
              "phantoms in benchmarks/results/qa.md"),
    Threshold("b1_p01", 0.6, 1.4, "factor",
              "1st percentile of the B1+ factor in the head", "head B1+ at 3 T spans about "
              "0.7-1.3 of nominal (Sacolick et al. 2010, MRM 63:1315)"),
    Threshold("b1_p99", 0.6, 1.4, "factor",
              "99th percentile of the B1+ factor in the head", "as b1_p01"),
    Threshold("b1_noise_sd", 0.0, 0.05, "factor",
              "voxel noise SD of the B1+ factor: each voxel's T1 error is about twice it",
              "project choice: 0.05 adds 10 % noise to every voxel's T1; measured on the "
              "accuracy phantoms: maps read as given below 0.001, maps computed from AFI "
              "images 0.018-0.019"),
    Threshold("b1_anatomy_correlation", -0.5, 0.5, "correlation",
              "largest correlation of the B1+ map's fine structure with a VFA image's: a "
              "transmit field does not follow the anatomy",
              "measured on correct maps: |r| up to 0.12 on the clinical accuracy phantoms, "
              "0.18 on the sample dataset, 0.28 with 4 x 4 x 5 mm VFA voxels (the images carry "
              "the field's own fine structure, which shows more where the anatomy is blurred); "
              "an anatomical image given as the B1 map 0.94-1.0 (benchmarks/results/qa.md)"),
    Threshold("vfa_systematic_residual", 0.0, 0.005, "ratio",
              "RMS over flip angles of the median relative fit residual: a misfit shared by all "
              "voxels", "measured: correct 0.001-0.002; one of 2/5/10/15 deg 20 % off 0.0067-0.051 "
              "(5 deg x 1.2 the weakest), one of 3/8/15 deg 20 % off 0.019-0.037"),
    Threshold("snr_t1w", 10.0, math.inf, "ratio",
              "T1w NAWM signal over noise SD: below 10 enhancement of a few % is not measurable",
              "project choice (Rose criterion order of magnitude)"),
    Threshold("snr_t1w_relative", 0.7, math.inf, "ratio",
              "T1w SNR over the participant's median T1w SNR: one session much noisier than "
              "the others", "project choice: halved SNR gives 0.5, session-to-session "
              "variation of a stable protocol about 10 %"),
    Threshold("registration_ncc", 0.7, 1.0, "ratio",
              "normalised cross-correlation of the fixed and registered moving image in the "
              "head: a failed registration",
              "measured: correct 0.93-0.99, 5 degrees off 0.59-0.67, 15 degrees off 0.24-0.29"),
)}

#: The order metrics are listed in (QA table, report): T1 map, B1, fit, SNR, registration.
METRIC_ORDER = ("nawm_t1_s",) + tuple(THRESHOLDS)


def metric_rank(metric: str) -> int:
    """Position of ``metric`` in :data:`METRIC_ORDER` (unknown metrics last)."""
    return METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)


def threshold_for(metric: str, field_strength_t: float | None = None) -> Threshold:
    """The threshold of ``metric``; ``nawm_t1_s`` takes the range of the nearest field strength
    of :data:`NAWM_T1_RANGES_S` (None: 3 T)."""
    if metric == "nawm_t1_s":
        b0 = 3.0 if field_strength_t is None else float(field_strength_t)
        near = min(NAWM_T1_RANGES_S, key=lambda f: abs(f - b0))
        low, high = NAWM_T1_RANGES_S[near]
        return Threshold("nawm_t1_s", low, high, "s",
                         f"median NAWM T1 at {near:g} T outside the published white-matter range",
                         "see qa.NAWM_T1_RANGES_S")
    return THRESHOLDS[metric]


def high_text(threshold: Threshold):
    """The upper limit as written in the QA table and its JSON: the number, or "inf"."""
    return threshold.high if math.isfinite(threshold.high) else "inf"


def flagged(value, threshold: Threshold) -> bool:
    """True when ``value`` is not finite or outside the threshold's range."""
    v = float(value) if value is not None else math.nan
    return not (math.isfinite(v) and threshold.low <= v <= threshold.high)


def thresholds_markdown() -> str:
    """The threshold table of ``docs/qa.md`` (generated from :data:`THRESHOLDS` and
    :data:`NAWM_T1_RANGES_S`)."""
    rows = ["| metric | low | high | unit | flagged when outside: why | source |",
            "|---|---|---|---|---|---|"]
    for b0 in sorted(NAWM_T1_RANGES_S):
        t = threshold_for("nawm_t1_s", b0)
        rows.append(f"| nawm_t1_s ({b0:g} T) | {t.low:g} | {t.high:g} | s | {t.why} | "
                    f"see the `NAWM_T1_RANGES_S` note in qmri/qa.py |")
    for t in THRESHOLDS.values():
        rows.append(f"| {t.metric} | {t.low:g} | {t.high:g} | {t.unit} | {t.why} | {t.source} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------ metrics

def nawm_mask(wm_probability, brain_mask, lesion_mask=None, spacing_mm=(1.0, 1.0, 1.0)):
    """Normal-appearing white matter (see the module docstring)."""
    wm = (np.asarray(brain_mask, bool)
          & (np.nan_to_num(np.asarray(wm_probability, np.float64)) >= NAWM_MIN_PROBABILITY))
    wm = ndimage.binary_erosion(wm)
    if lesion_mask is not None and np.any(lesion_mask):
        wm &= G.distance_to_mask_mm(lesion_mask, spacing_mm, LESION_MARGIN_MM) > LESION_MARGIN_MM
    return wm


def _finite_positive(values):
    v = np.asarray(values, np.float64)
    return v[np.isfinite(v) & (v > 0)]


def nawm_t1_median(t1_s, nawm) -> float:
    """Median T1 (s) over the finite positive voxels of ``nawm`` (NaN when none)."""
    v = _finite_positive(np.asarray(t1_s)[np.asarray(nawm, bool)])
    return float(np.median(v)) if v.size else math.nan


def _ratio(r1, r1_baseline, nawm):
    r1, r0 = np.asarray(r1, np.float64), np.asarray(r1_baseline, np.float64)
    ok = np.asarray(nawm, bool) & np.isfinite(r1) & np.isfinite(r0) & (r1 > 0) & (r0 > 0)
    ratio = np.zeros(r1.shape)
    ratio[ok] = r1[ok] / r0[ok]
    return ratio, ok


def r1_change(r1, r1_baseline, nawm) -> float:
    """Median over NAWM of ``r1 / r1_baseline`` minus 1 (NaN without common voxels)."""
    ratio, ok = _ratio(r1, r1_baseline, nawm)
    return float(np.median(ratio[ok]) - 1.0) if ok.any() else math.nan


def _quadratic_terms(points_mm) -> np.ndarray:
    """The 10 terms of a full quadratic in x, y, z (points centred, in units of 50 mm)."""
    p = (points_mm - points_mm.mean(axis=0)) / 50.0
    x, y, z = p.T
    return np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)


def _half_spread(fitted, median) -> float:
    p5, p95 = np.percentile(fitted, [5, 95])
    return float(0.5 * (p95 - p5) / median)


def r1_pattern(r1, r1_baseline, nawm, spacing_mm) -> float:
    """Half the 5-95 % spread over NAWM of the quadratic fitted to the NAWM R1 ratio, relative
    to its median, beyond what the noise alone gives (see the module docstring; NaN with fewer
    than 100 common voxels)."""
    ratio, ok = _ratio(r1, r1_baseline, nawm)
    if ok.sum() < 100:
        return math.nan
    points = np.argwhere(ok) * np.asarray(spacing_mm, np.float64)
    terms = _quadratic_terms(points)
    values = ratio[ok]
    coef = np.linalg.lstsq(terms, values, rcond=None)[0]
    residual = values - terms @ coef
    keep = np.abs(residual) <= PATTERN_TRIM_SD * MAD_TO_SD * np.median(np.abs(residual))
    if keep.sum() < 100:
        keep = np.ones_like(keep)
    coef = np.linalg.lstsq(terms[keep], values[keep], rcond=None)[0]   # without the outliers
    fitted = terms @ coef
    median = float(np.median(fitted))
    spread = _half_spread(fitted, median)
    # the noise's own spread: the quadratic fitted to the residuals with a random sign per
    # block (the noise's spatial correlation kept, any smooth pattern destroyed)
    residual = (values - fitted)[keep]
    # blocks numbered in the lexicographic order of their (i, j, k): one integer per block, so
    # that np.unique sorts numbers, not rows (several times faster, the same numbering)
    ijk = np.floor(points[keep] / PATTERN_NOISE_BLOCK_MM).astype(np.int64)
    ijk -= ijk.min(axis=0)
    _, block = np.unique(np.ravel_multi_index(ijk.T, tuple(ijk.max(axis=0) + 1)),
                         return_inverse=True)
    block = block.ravel()
    rng = np.random.default_rng(0)
    signs = np.stack([rng.choice((-1.0, 1.0), block.max() + 1)[block]
                      for _ in range(PATTERN_NOISE_DRAWS)], axis=1)
    # every draw's least-squares fit through one pseudo-inverse of the kept voxels' terms
    noise_fits = terms @ (np.linalg.pinv(terms[keep]) @ (signs * residual[:, None]))
    noise = [_half_spread(noise_fits[:, d], median) for d in range(PATTERN_NOISE_DRAWS)]
    floor = PATTERN_NOISE_FACTOR * float(np.sqrt(np.mean(np.square(noise))))
    return float(np.sqrt(max(spread * spread - floor * floor, 0.0)))


def _gaussian_within(values, mask, sigma_voxels: float) -> np.ndarray:
    """Gaussian smoothing of ``values`` using only the voxels of ``mask`` (normalised)."""
    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma_voxels)
    smooth = ndimage.gaussian_filter(np.where(mask, values, 0.0), sigma_voxels)
    return smooth / np.maximum(weight, 1e-6)


def b1_statistics(b1, head, anatomy=None) -> dict:
    """``b1_p01``, ``b1_p99``, ``b1_noise_sd`` and (with ``anatomy``: an image, or images
    stacked on a last axis, on the same grid) ``b1_anatomy_correlation`` of a B1+ factor map
    over ``head`` (see the module docstring)."""
    b = np.asarray(b1, np.float64)
    m = np.asarray(head, bool) & np.isfinite(b)
    out = {"b1_p01": math.nan, "b1_p99": math.nan, "b1_noise_sd": math.nan}
    if anatomy is not None:
        out["b1_anatomy_correlation"] = math.nan
    if m.sum() < 27:
        return out
    out["b1_p01"], out["b1_p99"] = (float(v) for v in np.percentile(b[m], [1, 99]))
    filled = np.where(m, b, 0.0)
    lap = sum(ndimage.convolve1d(filled, [1.0, -2.0, 1.0], axis=a, mode="nearest")
              for a in range(3))
    lv = lap[ndimage.binary_erosion(m, iterations=1)]
    if lv.size:
        out["b1_noise_sd"] = (MAD_TO_SD * float(np.median(np.abs(lv - np.median(lv))))
                              / LAPLACIAN_NOISE_GAIN)
    if anatomy is not None:
        images = np.asarray(anatomy, np.float64)
        images = images[..., None] if images.ndim == 3 else images
        ok = m & np.isfinite(images).all(axis=-1)
        # far enough inside that no smoothed value reaches past the head's edge
        inner = ndimage.binary_erosion(
            ok, iterations=int(np.ceil(3 * FINE_STRUCTURE_SIGMA_VOXELS)))
        fine_b = (b - _gaussian_within(b, ok, FINE_STRUCTURE_SIGMA_VOXELS))[inner]
        best = math.nan
        for i in range(images.shape[-1]):
            a = images[..., i]
            fine_a = (a - _gaussian_within(a, ok, FINE_STRUCTURE_SIGMA_VOXELS))[inner]
            if fine_b.size > 27 and fine_b.std() > 0 and fine_a.std() > 0:
                r = float(np.corrcoef(fine_b, fine_a)[0, 1])
                best = r if not abs(best) >= abs(r) else best
        out["b1_anatomy_correlation"] = best
    return out


def vfa_systematic_residual(signal, predicted, voxels) -> float:
    """RMS over flip angles of the median relative residual over ``voxels`` (see the module
    docstring). ``signal`` and ``predicted``: spatial shape + (n_flip,)."""
    m = np.asarray(voxels, bool)
    s = np.asarray(signal, np.float64)[m]
    p = np.asarray(predicted, np.float64)[m]
    scale = p.mean(axis=-1, keepdims=True)
    ok = np.isfinite(s).all(-1) & np.isfinite(p).all(-1) & (scale[:, 0] > 0)
    if ok.sum() < 10:
        return math.nan
    med = np.median((s[ok] - p[ok]) / scale[ok], axis=0)
    return float(np.sqrt(np.mean(med ** 2)))


def snr(image, region, noise_sd: float) -> float:
    """Median of ``image`` over ``region`` divided by ``noise_sd`` (NaN when undefined)."""
    v = np.asarray(image, np.float64)[np.asarray(region, bool)]
    v = v[np.isfinite(v)]
    if not v.size or not noise_sd > 0:
        return math.nan
    return float(np.median(v) / noise_sd)


def head_mask_for_registration(image) -> np.ndarray:
    """The head of a registration's fixed image: above 30 % of its 90th percentile of positive
    values, eroded once (the mask :func:`registration_ncc` is computed over)."""
    img = np.nan_to_num(np.asarray(image, np.float64))
    pos = img[img > 0]
    if not pos.size:
        return np.zeros(img.shape, bool)
    return ndimage.binary_erosion(img > 0.3 * np.percentile(pos, 90), iterations=1)


def registration_ncc(fixed, moving_resampled, mask=None) -> float:
    """Normalised cross-correlation of ``fixed`` and ``moving_resampled`` (same grid) over
    ``mask`` (default :func:`head_mask_for_registration` of ``fixed``) and finite voxels."""
    a = np.asarray(fixed, np.float64)
    b = np.asarray(moving_resampled, np.float64)
    m = head_mask_for_registration(a) if mask is None else np.asarray(mask, bool)
    m = m & np.isfinite(a) & np.isfinite(b)
    if m.sum() < 10:
        return math.nan
    x, y = a[m] - a[m].mean(), b[m] - b[m].mean()
    den = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y) / den) if den > 0 else math.nan
