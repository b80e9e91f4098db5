"""Intensity scaling of the input images: Philips display values -> precise (floating-point) values.

Decided once per file at plan time (:func:`plan_scaling`, after the images are validated), kept
in :attr:`bids_agquant.bids.plan.ParticipantPlan.intensity`, printed by ``--print-plan``, and
applied where the data are read for fitting and SE (``interfaces/vfa.py::FitVFA``,
``interfaces/quantify.py::QuantifyPostContrast``). See docs/conversion.md.

What the numbers are (dcm2niix, github.com/rordenlab/dcm2niix, ``Philips/README.md`` and
``console/nii_dicom_batch.cpp::PhilipsPrecise``, ``nii_SaveBIDSX``; Chenevert et al. 2014,
PMC3998685)::

    SV = stored value of the DICOM pixel data
    RS = rescale slope (0028,1053)        sidecar "PhilipsRescaleSlope"
    RI = rescale intercept (0028,1052)    sidecar "PhilipsRescaleIntercept"
    SS = scale slope (2005,100E)          sidecar "PhilipsScaleSlope"
    DV = SV * RS + RI                     displayed value
    FP = DV / (RS * SS)                   precise (floating-point) value

dcm2niix keeps SV in the NIfTI and puts the transform in ``scl_slope``/``scl_inter``, which
nibabel applies when the data are read:

- ``-p y`` (the default; sidecar ``"UsePhilipsFloatNotDisplayScaling": 1``):
  ``scl_slope = 1/SS``, ``scl_inter = RI/(RS*SS)``: nibabel returns FP. Nothing to do.
- ``-p n`` (``"UsePhilipsFloatNotDisplayScaling": 0``): ``scl_slope = RS``, ``scl_inter = RI``:
  nibabel returns DV, so FP = value / (RS * SS). The intercept is already inside DV (RI was added
  by nibabel); dividing by RS*SS turns it into FP's intercept RI/(RS*SS). So the conversion is
  one factor per file, ``1/(RS*SS)``, and it commutes with linear resampling.

The four sidecar fields are written together, from the DICOM values (before any change to the
NIfTI scaling), only for Philips images with a scale slope and one scaling for the whole series.
SS and RS differ between series (e.g. between the flip angles of a VFA set), so display values of
different files are on different scales: a T1 fit or an SE map from them is wrong.

Rules (the one home of these decisions):

- ``UsePhilipsFloatNotDisplayScaling`` 1: precise values, factor 1.
- a sidecar whose flag contradicts the NIfTI header (the header holds exactly the other mode's
  ``scl_slope``/``scl_inter``): 65, the sidecar belongs to another conversion.
- ``UsePhilipsFloatNotDisplayScaling`` 0: factor 1/(RS*SS); RS and SS must be positive finite
  numbers, else :class:`~bids_agquant.errors.BadDataError` (65) naming the JSON file.
- the field missing (or not 0/1) while a Philips scale field is present: 65 (it cannot be told
  whether the values are display or precise).
- no Philips field at all: factor 1; when the sidecar's ``Manufacturer`` is Philips and the file
  is part of a VFA set or of a pre/post T1w pair (where the scales of two files must agree), a
  warning in the plan and the report (:data:`UNVERIFIED`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from bids_agquant.bids.plan import IntensityScaling, ParticipantPlan
from bids_agquant.bids.sidecars import holder_of
from bids_agquant.errors import BadDataError

__all__ = ["FLOAT_FLAG", "RESCALE_SLOPE", "RESCALE_INTERCEPT", "SCALE_SLOPE", "PHILIPS_FIELDS",
           "RECONVERT", "AS_STORED", "scaling_of", "plan_scaling", "describe"]

LOGGER = logging.getLogger("bids_agquant.layout")

FLOAT_FLAG = "UsePhilipsFloatNotDisplayScaling"
RESCALE_SLOPE = "PhilipsRescaleSlope"
RESCALE_INTERCEPT = "PhilipsRescaleIntercept"
SCALE_SLOPE = "PhilipsScaleSlope"
#: Every sidecar field of dcm2niix's Philips scaling (written together).
PHILIPS_FIELDS = (FLOAT_FLAG, RESCALE_SLOPE, RESCALE_INTERCEPT, SCALE_SLOPE)
#: What to do about Philips scaling that cannot be read right.
RECONVERT = ("reconvert the DICOM with dcm2niix -p y (precise floating-point values, its "
             "sidecars then say \"UsePhilipsFloatNotDisplayScaling\": 1)")
AS_STORED = IntensityScaling()
FLOAT = IntensityScaling(1.0, "Philips precise values (UsePhilipsFloatNotDisplayScaling 1)")
#: Philips images without dcm2niix's scaling fields: the values may be display values.
UNVERIFIED = "Philips images without scaling fields"


def _show(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _positive(meta: dict, key: str, image: Path, root: Path) -> float:
    """A positive finite sidecar number (RS, SS), else BadDataError naming image and JSON."""
    value = meta.get(key)
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    where = holder_of(image, key, root)
    if value is None:
        raise BadDataError(f"{_show(image, root)}: Philips display values ({FLOAT_FLAG} = 0 in "
                           f"{_show(holder_of(image, FLOAT_FLAG, root) or image, root)}) but "
                           f"{key} is missing, so they cannot be converted to precise values",
                           fix=RECONVERT)
    if number is None or not math.isfinite(number) or number <= 0:
        raise BadDataError(f"{_show(image, root)}: {key} = {value!r} in "
                           f"{_show(where or image, root)} is not a positive number, so the "
                           f"Philips display values cannot be converted", fix=RECONVERT)
    return number


def scaling_of(meta: dict, image: Path, root: Path) -> IntensityScaling | None:
    """The scaling of one image from its (inherited) sidecar; None = no Philips field at all."""
    image, root = Path(image), Path(root)
    present = [k for k in PHILIPS_FIELDS if meta.get(k) is not None]
    if not present:
        return None
    flag = meta.get(FLOAT_FLAG)
    if flag is None or isinstance(flag, bool) or flag not in (0, 1):
        where = holder_of(image, present[0], root) or image
        what = (f"{FLOAT_FLAG} is missing" if flag is None
                else f"{FLOAT_FLAG} = {flag!r} is neither 0 nor 1")
        raise BadDataError(f"{_show(image, root)}: {_show(where, root)} has Philips scaling "
                           f"fields ({', '.join(present)}) but {what}, so it cannot be told "
                           f"whether the values are display or precise values", fix=RECONVERT)
    if flag == 1:      # precise values: nothing to convert; the header is checked when it can be
        rs, ss = meta.get(RESCALE_SLOPE), meta.get(SCALE_SLOPE)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               and v > 0 for v in (rs, ss)):
            _check_header(image, 1, float(rs), float(ss), _intercept(meta, image, root), root)
        return FLOAT
    rs = _positive(meta, RESCALE_SLOPE, image, root)
    ss = _positive(meta, SCALE_SLOPE, image, root)
    _check_header(image, 0, rs, ss, _intercept(meta, image, root), root)
    return IntensityScaling(1.0 / (rs * ss), f"Philips display values / ({RESCALE_SLOPE} {rs:g} "
                                             f"x {SCALE_SLOPE} {ss:g})")


def _intercept(meta: dict, image: Path, root: Path) -> float:
    """PhilipsRescaleIntercept (0 when absent; it is not needed to convert display values)."""
    value = meta.get(RESCALE_INTERCEPT, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        where = holder_of(image, RESCALE_INTERCEPT, root) or image
        raise BadDataError(f"{_show(image, root)}: {RESCALE_INTERCEPT} = {value!r} in "
                           f"{_show(where, root)} is not a number", fix=RECONVERT)
    return float(value)


def _check_header(image: Path, flag: int, rs: float, ss: float, ri: float, root: Path) -> None:
    """Refuse a sidecar whose mode contradicts the NIfTI header's scl_slope/scl_inter.

    dcm2niix writes (RS, RI) for display values and (1/SS, RI/(RS*SS)) for precise values. A
    header holding exactly the other mode's pair (and not this one's) means the sidecar belongs
    to another conversion. Any other header (no scaling: data stored as floats; ``-l y``
    rescaling) is not contradicting and passes.
    """
    import nibabel as nib  # slow to import; only for files carrying Philips fields

    # nibabel moves scl_slope/scl_inter from the loaded header into the data proxy (1, 0: none)
    proxy = nib.load(str(image)).dataobj
    slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    pairs = {0: (rs, ri), 1: (1.0 / ss, ri / (rs * ss))}

    def close(pair):
        return (math.isclose(slope, pair[0], rel_tol=1e-4)
                and math.isclose(inter, pair[1], rel_tol=1e-4, abs_tol=1e-6 * abs(pair[0])))

    if close(pairs[1 - flag]) and not close(pairs[flag]):
        said = "display" if flag == 0 else "precise"
        held = "precise" if flag == 0 else "display"
        where = holder_of(image, FLOAT_FLAG, root) or image
        raise BadDataError(f"{_show(image, root)}: {_show(where, root)} says {said} values "
                           f"({FLOAT_FLAG} = {flag}) but the NIfTI header's scl_slope/scl_inter "
                           f"({slope:g}, {inter:g}) are dcm2niix's {held} scaling, so the sidecar "
                           f"belongs to another conversion", fix=RECONVERT)


def _is_philips(meta: dict) -> bool:
    return "philips" in str(meta.get("Manufacturer") or "").lower()


def plan_scaling(plan: ParticipantPlan, metadata, root: Path) -> ParticipantPlan:
    """The plan with the scaling of every VFA and T1w file and the warnings about it.

    ``metadata(path)`` returns the image's sidecar metadata (BIDS inheritance applied).
    """
    root = Path(root)
    intensity: dict[Path, IntensityScaling] = {}
    unverified: set[Path] = set()
    for st in plan.states:
        for f in (*(st.vfa.files if st.vfa else ()), *((st.t1w,) if st.t1w else ())):
            if f in intensity:
                continue
            meta = metadata(f)
            scaling = scaling_of(meta, f, root)
            intensity[f] = scaling or AS_STORED
            if scaling is None and _is_philips(meta):
                unverified.add(f)
    warnings = list(_unverified_warnings(plan, unverified, root))
    for w in warnings:
        LOGGER.warning("sub-%s: %s", plan.participant, w)
    return dataclasses.replace(plan, intensity=intensity,
                               warnings=tuple(plan.warnings) + tuple(warnings))


def _unverified_warnings(plan: ParticipantPlan, unverified: set, root: Path):
    """One warning per VFA set and per pre/post T1w pair holding unverified Philips files."""
    fields = f"{FLOAT_FLAG}, {RESCALE_SLOPE}, {SCALE_SLOPE}"
    for st in plan.states:
        desc = f"sub-{plan.participant}/ses-{st.session} " + (st.agent_label if st.is_post
                                                             else "pre-contrast")
        files = [f for f in (st.vfa.files if st.vfa else ()) if f in unverified]
        if files:
            yield (f"{desc} VFA: {UNVERIFIED} ({fields}) in {_show(files[0], root)}"
                   f"{' and others' if len(files) > 1 else ''}: if they hold display values, "
                   f"whose scale differs between flip angles, T1 and concentration are wrong; "
                   f"{RECONVERT}")
        pre = plan.pre_state_for(st) if st.is_post else None
        if pre is not None and st.t1w and pre.t1w and {st.t1w, pre.t1w} & unverified:
            f = st.t1w if st.t1w in unverified else pre.t1w
            yield (f"{desc} T1w: {UNVERIFIED} ({fields}) in {_show(f, root)}: if the pre/post "
                   f"pair holds display values on different scales, signal enhancement is "
                   f"wrong; {RECONVERT}")


def describe(plan: ParticipantPlan, path: Path) -> str:
    """' (scaling: ...)' for --print-plan when the file is not used as stored, else ''."""
    s = plan.intensity.get(Path(path)) if plan.intensity else None
    if s is None or s == AS_STORED:
        return ""
    return f" (scaling: {s.how}; x{s.factor:.6g})" if s.factor != 1.0 else f" ({s.how})"

