"""Method text of the sidecars and ``regions.json``, generated from the constants it describes.

Every sentence that states a number or a choice of the pipeline is built here from the constant
(or settings dict) the code uses, so the text cannot drift from the code. Pure strings, no I/O;
imports only modules without heavy dependencies (the registration settings are passed in by the
caller, :data:`bids_agquant.interfaces.registration.REGISTRATION_SETTINGS`).
"""
from __future__ import annotations

from bids_agquant.qmri import b1methods as B1M
from bids_agquant.qmri import brain as B
from bids_agquant.qmri import lesions as L
from bids_agquant.qmri import masks as M
from bids_agquant.templates import TEMPLATE_NAME

__all__ = ["FIT_METHODS", "vfa_estimation_method", "vfa_resampling", "registration_software",
           "brain_mask_method", "brain_extraction_method", "tissue_classes_method",
           "control_regions_method",
           "enhancement_resampling", "intensity_normalization", "b1_method"]

#: VFA fit methods (``Config.vfa_fit``) -> what they do.
FIT_METHODS = {
    "nonlinear": "nonlinear least squares of the SPGR signal over (M0, T1) (variable projection, "
                 "vectorised Newton), started from the linear DESPOT1 solution",
    "linear": "linear DESPOT1 regression of S/sin(a) on S/tan(a)",
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten")


def _count(n: int) -> str:
    """``n`` in words up to ten, else in digits."""
    n = int(n)
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def vfa_estimation_method(fit: str) -> str:
    """``EstimationMethod`` of the VFA maps."""
    return f"VFA / DESPOT1: {FIT_METHODS[fit]}"


def vfa_resampling(transform_path) -> str:
    """``Resampling`` of the VFA maps (``transform_path``: the composed transform output)."""
    return ("fitted on the VFA grid; R1 and M0 resampled once (linear, NaN-aware) into the "
            "reference space through the composed rigid transform VFA -> session T1w -> "
            f"reference ({transform_path})")


def registration_software(antspyx_version, settings: dict) -> str:
    """``Software`` of the transforms, from the registration ``settings`` actually used."""
    s = settings
    return (f"antspyx {antspyx_version} antsRegistration: rigid, Mattes MI "
            f"({s['histogram_bins']} bins, ~{s['samples']} {s['sampling_strategy'].lower()} "
            f"samples), images at ~{s['target_spacing_mm']:g} mm, shrink "
            f"{s['coarse_shrink_factors']} then 1, one thread, fixed seed")


def brain_extraction_method(settings: dict, *, from_t1: bool = True) -> str:
    """How the brain (intracranial) mask was made: sidecar ``Method`` and ``regions.json``.

    ``settings``: :data:`bids_agquant.interfaces.brain.TEMPLATE_REGISTRATION`.
    """
    s = settings
    text = (f"{TEMPLATE_NAME} registered affinely (antsRegistration, Mattes MI on a random "
            f"{s['sampling_fraction']:g} of the voxels at ~{s['spacing_mm']:g} mm, fixed seed) "
            f"to the baseline pre-contrast T1w stripped by a rough T1-window mask grown "
            f"{s['strip_dilation_mm'][0]:g} mm, then again to the T1w stripped by the mask of "
            f"that first pass; its intracranial volume resampled onto the reference grid")
    if not from_t1:
        return text + (f" and eroded by {B.FINAL_EROSION_MM:g} mm (no baseline T1 map to "
                       f"decide voxel by voxel)")
    return text + (f"; inside it grown by at most {B.PRIOR_GROWTH_MM:g} mm, the voxels with "
                   f"M0 >= {B.BONE_M0_FRACTION:g} x the brain median and T1 >= "
                   f"{B.FAT_T1_S:g} s connected to its {B.CORE_DEPTH_MM:g} mm-deep core "
                   f"(after a {B.OPENING_MM:g} mm opening), holes filled, eroded "
                   f"{B.FINAL_EROSION_MM:g} mm")


def tissue_classes_method() -> str:
    """``Method`` of the tissue probability maps and dseg."""
    return (f"Gaussian mixture (diagonal) of {', '.join(B.TISSUE_CLASSES)} on R1 and the "
            f"relative T1w inside the brain mask, {B.EM_ITERATIONS} EM iterations, class "
            f"probabilities weighted by the registered {TEMPLATE_NAME} priors to the power "
            f"{B.PRIOR_WEIGHT:g}")


def brain_mask_method(*, from_t1: bool) -> str:
    """The rough mask (T1 window) that strips the T1w for the template registration."""
    if from_t1:
        lo, hi = M.TISSUE_T1_RANGE_S
        return (f"baseline pre-contrast T1 within {lo:g}-{hi:g} s, opened and closed with a "
                f"{M.MORPH_RADIUS_MM:g} mm ball, largest component")
    return ("reference T1w above its Otsu threshold, largest component, eroded by "
            f"{M.T1W_EROSION_MM:g} mm (no baseline T1 map)")


def control_regions_method(*, seed: int, diameter_mm: float, n: int = L.N_CONTROLS) -> str:
    """``Method`` of the control-region output."""
    return (f"qmri.lesions.control_regions: {_count(n)} spheres of one diameter in the brain "
            f"mask, each >= {L.CONTROL_MIN_PARENCHYMA_FRACTION * 100:g} % parenchyma by the "
            f"tissue classes and by the registered template's priors, "
            f">= {L.CONTROL_MARGIN_MM:g} mm from lesions and from each other, seed {seed}; "
            f"{diameter_mm:g} mm asked, shrunk in {L.CONTROL_DIAMETER_STEP_MM:g} mm steps (down "
            f"to {L.CONTROL_MIN_DIAMETER_MM:g} mm) only when {_count(n)} do not fit: "
            "RegionDiameterMM is the size used")


def enhancement_resampling() -> str:
    """``Resampling`` of the SE maps."""
    return "both T1w rigidly registered and resampled (linear) once into the reference space"


def intensity_normalization(mode: str, *, same_session: bool) -> str:
    """``IntensityNormalization`` of an SE map (``mode``: 'brain' or 'off' for this state)."""
    if mode == "brain":
        return ("post-contrast T1w divided by the median of post/pre over the brain mask "
                f">= {L.HEALTHY_MARGIN_MM:g} mm from every lesion (value: se_intensity_scale in "
                "the lesion table)")
    if same_session:
        return "none (pre- and post-contrast T1w of one session)"
    return "none (--se-normalization off)"


def b1_method(method: str, params: dict, scale: float = 1.0) -> str:
    """The T1map sidecar's ``B1Method``: the B1 data used, and how the factor was obtained
    (``scale``: the factor a TB1map was multiplied by, 0.01 for percent)."""
    if method == B1M.READ_METHOD:
        return "TB1map read as a B1+ factor" + (f" (multiplied by {scale:g})" if scale != 1 else "")
    m = B1M.METHODS[method]
    def show(v):
        return ", ".join(f"{x:g}" for x in v) if isinstance(v, (list, tuple)) else f"{v:g}"

    values = "; ".join(f"{k} = {show(v)}" for k, v in sorted(params.items()))
    return (f"{method} ({m.title}; {m.reference}): B1+ factor computed by "
            f"bids_agquant.qmri.b1methods.factor_map" + (f" with {values}" if values else ""))
