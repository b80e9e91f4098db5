"""Validation of the inputs before any computation: one clear line per problem, with an exit code.

Two layers:

- metadata (called by ``layout.py`` while it builds the plan): :func:`flip_angle_deg`,
  :func:`repetition_time_s`, :func:`check_vfa_set`;
- images (called on a finished plan by :func:`validate_plan`): every file is opened with nibabel
  and its data read once (that is the only way to find a truncated ``.nii.gz``), then checked for
  dimensionality, affine, qform/sform agreement, emptiness and non-finite voxels; VFA sets must
  share one grid; a TB1map must cover at least half of its VFA field of view (another grid is fine: it
  is resampled in world coordinates; head voxels outside it are filled at run time) and is converted when stored in percent; a lesion mask must hold at least
  one lesion and sits on the grid of one of the participant's T1w images (axes in any order or
  direction: re-indexed), else it is resampled onto its session's T1w with a warning giving the
  change of the lesion diameters.

Fatal problems raise :class:`~bids_agquant.errors.BadDataError` (65) or
:class:`~bids_agquant.errors.MissingInputError` (66). Per-voxel problems are not fatal:
NaN/Inf voxels are counted and reported as a warning (they become NaN in the maps).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bids_agquant.bids.plan import LesionMask, ParticipantPlan
from bids_agquant.bids.sidecars import MetaSource, json_text, own_sidecar
from bids_agquant.qmri import geometry as G
from bids_agquant.qmri import lesions as L
from bids_agquant.qmri.b1 import MIN_COVERED_FRACTION
from bids_agquant.qmri import b1methods as B1M
from bids_agquant.qmri.b1methods import DAM_RATIO_TOL
from bids_agquant.errors import BadDataError, MissingInputError

__all__ = ["ImageInfo", "inspect_image", "number", "flip_angle_deg", "repetition_time_s", "check_vfa_set",
           "grid_mismatch_mm", "b1_scale", "check_b1_coverage", "b1_box_coverage",
           "b1_method_params", "computed_b1_median",
           "validate_plan",
           "MAX_TR_S", "B1_PERCENT_MEDIAN"]

LOGGER = logging.getLogger("bids_agquant.validate")

#: A TR above this (in seconds) in a VFA sidecar is taken for milliseconds and refused.
MAX_TR_S = 1.0
#: A TB1map whose median (inside its support) exceeds this is taken to be in percent.
B1_PERCENT_MEDIAN = 10.0
#: Plausible range of a B1+ factor map's median (after a percent conversion): transmit fields
#: of head coils stay within about 0.6-1.4 of nominal over the head at 1.5-7 T; a median outside
#: this range is a map in other units (or scaled by a converter), never a field to correct with.
B1_FACTOR_RANGE = (0.4, 1.6)
#: Two grids are the same when their corner voxel centres move less than this fraction of the
#: smallest voxel size.
GRID_TOLERANCE_VOXELS = 0.25
#: qform and sform agree when corner voxel centres move less than this fraction of the smallest
#: voxel: the float32 quaternion of a qform near a 180 degree rotation is off by ~0.1 mm over a
#: head, which is harmless; a header edited on one side only is off by millimetres.
QFORM_TOLERANCE_VOXELS = 0.5


def _show(path: Path | str, root: Path | None = None) -> str:
    path = Path(path)
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _sidecar_of(where) -> str:
    """The JSON sidecar to add a missing field to (the image's own)."""
    return own_sidecar(Path(where)).name


# ---------------------------------------------------------------------------------------------
# metadata


def number(meta: dict, key: str, where: str):
    """A finite real number from a sidecar field, or BadDataError naming file and field."""
    if key not in meta or meta[key] is None:
        return None
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadDataError(f"{where}: {key} = {value!r}{json_text(where, key)} is not a number",
                           fix=f"write {key} as a single number in its JSON sidecar")
    try:
        number = float(value)
    except ValueError:
        raise BadDataError(f"{where}: {key} = {value!r}{json_text(where, key)} is not a number",
                           fix=f"write {key} as a single number in its JSON sidecar") from None
    if not math.isfinite(number):
        raise BadDataError(f"{where}: {key} = {value!r}{json_text(where, key)} is not finite",
                           fix=f"write the real {key} in its JSON sidecar")
    return number


def flip_angle_deg(meta: dict, where: str) -> float:
    """Nominal flip angle in degrees from a VFA sidecar (``FlipAngle``)."""
    fa = number(meta, "FlipAngle", where)
    if fa is None:
        raise BadDataError(f"{where}: FlipAngle is missing from the JSON sidecar "
                           f"({_sidecar_of(Path(where))})",
                           fix="add the nominal flip angle in degrees (e.g. \"FlipAngle\": 10)")
    if not 0.0 < fa < 180.0:
        raise BadDataError(f"{where}: FlipAngle = {fa:g}{json_text(where, 'FlipAngle')} is "
                           f"outside (0, 180) degrees",
                           fix="write the nominal flip angle in degrees")
    return fa


def repetition_time_s(meta: dict, where: str) -> float:
    """Excitation repetition time in seconds: ``RepetitionTimeExcitation``, else ``RepetitionTime``.

    BIDS stores times in seconds. A value above :data:`MAX_TR_S` is refused rather than guessed
    (a VFA spoiled gradient echo has TR of a few ms; 15 means someone wrote milliseconds).
    """
    key = "RepetitionTimeExcitation"
    tr = number(meta, key, where)
    if tr is None:
        key = "RepetitionTime"
        tr = number(meta, key, where)
    if tr is None:
        raise BadDataError(f"{where}: neither RepetitionTimeExcitation nor RepetitionTime is in "
                           f"the JSON sidecar ({_sidecar_of(Path(where))})",
                           fix="add \"RepetitionTimeExcitation\" in seconds (e.g. 0.015)")
    if tr <= 0:
        raise BadDataError(f"{where}: {key} = {tr:g} s{json_text(where, key)} is not positive",
                           fix="write the repetition time in seconds")
    if tr > MAX_TR_S:
        raise BadDataError(f"{where}: {key} = {tr:g}{json_text(where, key)} looks like "
                           f"milliseconds (BIDS uses seconds)",
                           fix=f"write it in seconds ({tr / 1000:g}) in the JSON sidecar")
    return tr


def check_vfa_set(files: Sequence[Path], flip_angles_deg: Sequence[float],
                  trs_s: Sequence[float], where: str
                  ) -> tuple[tuple[Path, ...], tuple[float, ...], float]:
    """Sort a VFA set by flip angle and check it: 2+ distinct angles, one TR.

    Returns (files, flip_angles_deg, tr_s) sorted by ascending flip angle.
    """
    if len(files) < 2:
        only = f" ({Path(files[0]).name})" if files else ""
        raise BadDataError(f"{where}: the VFA set has {len(files)} flip angle{only}; "
                           f"a T1 fit needs two or more",
                           fix="add the other flip angles (..._flip-<i>_VFA.nii.gz) or remove "
                               "the set")
    order = np.argsort(np.asarray(flip_angles_deg, float), kind="stable")
    files = tuple(Path(files[i]) for i in order)
    fas = tuple(float(flip_angles_deg[i]) for i in order)
    trs = [float(trs_s[i]) for i in order]
    for a, b, fa, fb in zip(files, files[1:], fas, fas[1:]):
        if abs(fb - fa) < 1e-3:
            raise BadDataError(f"{where}: duplicate flip angle {fa:g} deg in {a.name} and {b.name}",
                               fix="remove the repeated acquisition or correct FlipAngle in "
                                   "its sidecar")
    tr0 = trs[0]
    for f, tr in zip(files, trs):
        if abs(tr - tr0) > max(1e-7, 1e-4 * tr0):
            raise BadDataError(f"{where}: mixed repetition times in one VFA set "
                               f"({files[0].name}: {tr0:g} s, {f.name}: {tr:g} s)",
                               fix="all flip angles of a VFA set must share one TR; "
                                   "fix the sidecars or split the set (acq-<label>)")
    return files, fas, tr0


def _sidecar_number(meta: dict, key: str, where: str, example: str) -> float:
    """A required positive number of a B1 method's sidecar, else BadDataError naming the JSON."""
    value = number(meta, key, where)
    if value is None:
        raise BadDataError(f"{where}: {key} is missing from the JSON sidecar "
                           f"({_sidecar_of(Path(where))})",
                           fix=f"add it (e.g. \"{key}\": {example}), or run with "
                               f"--b1-correction off")
    if value <= 0:
        raise BadDataError(f"{where}: {key} = {value:g} in {_sidecar_of(Path(where))} is not "
                           f"positive", fix=f"write the real {key} in its JSON sidecar")
    return value


def _seconds(meta: dict, key: str, where: str, example: str) -> float:
    value = _sidecar_number(meta, key, where, example)
    if value > MAX_TR_S:
        raise BadDataError(f"{where}: {key} = {value:g} in {_sidecar_of(Path(where))} looks like "
                           f"milliseconds (BIDS uses seconds)",
                           fix=f"write it in seconds ({value / 1000:g}) in the JSON sidecar")
    return value


def b1_method_params(method: str, files: Sequence[tuple[str, dict, str]]) -> dict:
    """Protocol values of a B1 method's file collection from its sidecars (BIDS qMRI appendix;
    :data:`bids_agquant.qmri.b1methods.METHODS`): ``files`` are (role, sidecar, shown path) in
    collection order (TB1EPI: se, ste per flip angle). Missing or contradicting fields are exit
    65 naming the JSON file."""
    by_role: dict[str, list[tuple[dict, str]]] = {}
    for role, meta, where in files:
        by_role.setdefault(role, []).append((meta, where))
    return _METHOD_PARAMS[method](by_role)


def _same_angle(other, fa: float) -> bool:
    """A second image's FlipAngle agrees with ``fa`` (or is not given)."""
    return other is None or abs(other - fa) < 1e-3


def _afi_params(by_role) -> dict:
    (m1, w1), (m2, w2) = by_role["tr1"][0], by_role["tr2"][0]
    tr1 = _seconds(m1, "RepetitionTime", w1, "0.02")
    tr2 = _seconds(m2, "RepetitionTime", w2, "0.1")
    if tr2 <= tr1:
        raise BadDataError(f"{w2}: RepetitionTime = {tr2:g} s of acq-tr2 is not longer than "
                           f"that of acq-tr1 ({tr1:g} s, {Path(w1).name})",
                           fix="acq-tr1 is the image of the shorter TR: correct the labels "
                               "or the RepetitionTime of the JSON sidecars")
    fa = flip_angle_deg(m1, w1)
    _require_same_angle(m2, w2, fa, f"that of acq-tr1 ({fa:g}, {Path(w1).name})",
                        "both AFI images share one nominal flip angle")
    return {"tr1_s": tr1, "tr2_s": tr2, "flip_angle_deg": fa}


def _require_same_angle(meta, where, fa: float, other: str, rule: str) -> None:
    """Exit 65 unless the image's FlipAngle equals ``fa`` (the nominal angle of ``other``)."""
    if not _same_angle(number(meta, "FlipAngle", where), fa):
        raise BadDataError(f"{where}: FlipAngle = {meta['FlipAngle']}"
                           f"{json_text(where, 'FlipAngle')} differs from {other}",
                           fix=f"{rule}: correct the JSON sidecars")


def _dam_params(by_role) -> dict:
    (m1, w1), (m2, w2) = by_role["alpha"][0], by_role["2alpha"][0]
    fa1, fa2 = flip_angle_deg(m1, w1), flip_angle_deg(m2, w2)
    if abs(fa2 / (2 * fa1) - 1) > DAM_RATIO_TOL:
        raise BadDataError(f"{w2}: FlipAngle = {fa2:g} in {_sidecar_of(Path(w2))} is not "
                           f"twice the FlipAngle of flip-1 ({fa1:g}, {Path(w1).name})",
                           fix="flip-1 is the image at alpha, flip-2 at 2 alpha: correct the "
                               "labels or the JSON sidecars")
    return {"flip_angle_deg": fa1}


def _tfl_params(by_role) -> dict:
    meta, where = by_role["famp"][0]
    return {"flip_angle_deg": flip_angle_deg(meta, where)}


def _epi_params(by_role) -> dict:
    fas, tms = [], []
    for (m_se, w_se), (m_ste, w_ste) in zip(by_role["se"], by_role["ste"]):
        fa = flip_angle_deg(m_se, w_se)
        _require_same_angle(m_ste, w_ste, fa, f"that of its spin echo ({fa:g}, "
                            f"{Path(w_se).name})",
                            "echo-1 and echo-2 of one flip- share its nominal flip angle")
        fas.append(fa)
        tms.append(_seconds(m_se, "MixingTime", w_se, "0.0338"))
    if len(set(fas)) < len(fas):
        shown = ", ".join(f"{a:g}" for a in fas)
        raise BadDataError(f"{by_role['se'][0][1]}: TB1EPI flip angles repeat ({shown})",
                           fix="give each flip-<index> its own nominal FlipAngle")
    if max(tms) - min(tms) > 1e-6:
        raise BadDataError(f"{by_role['se'][0][1]}: the TB1EPI images give several MixingTime "
                           f"values",
                           fix="one MixingTime for the collection: correct the JSON sidecars")
    return {"flip_angles_deg": tuple(fas), "mixing_time_s": tms[0]}


_METHOD_PARAMS = {"TB1AFI": _afi_params, "TB1DAM": _dam_params, "TB1TFL": _tfl_params,
                  "TB1RFM": lambda by_role: {}, "TB1EPI": _epi_params}


# ---------------------------------------------------------------------------------------------
# images


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    zooms: tuple[float, ...]
    n_nonfinite: int
    median_positive: float | None = None     # median of finite values > 0 (B1 maps)
    n_positive: int | None = None            # number of voxels > 0 (lesion masks)
    is_integer_valued: bool | None = None    # all finite values are integers (dseg)
    max_value: float | None = None


def _corners(shape) -> np.ndarray:
    """Homogeneous voxel coordinates (4 x 8) of the corner voxel centres of a 3D grid."""
    n = [max(int(s) - 1, 0) for s in shape[:3]]
    pts = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    return pts.T


def grid_mismatch_mm(shape, affine_a, affine_b) -> float:
    """Largest distance (mm) between the corner voxel centres of one grid under two affines."""
    c = _corners(shape)
    moved = (np.asarray(affine_a) @ c - np.asarray(affine_b) @ c)[:3]
    return float(np.max(np.linalg.norm(moved, axis=0)))


def same_grid(info_a: ImageInfo, info_b: ImageInfo) -> bool:
    if tuple(info_a.shape[:3]) != tuple(info_b.shape[:3]):
        return False
    tol = GRID_TOLERANCE_VOXELS * min(min(info_a.zooms[:3]), min(info_b.zooms[:3]))
    return grid_mismatch_mm(info_a.shape, info_a.affine, info_b.affine) <= tol


def inspect_image(path: Path, root: Path | None = None, *, what: str = "image",
                  stats: str = "") -> ImageInfo:
    """Open a NIfTI image, read its data once, and check what every input image must satisfy.

    ``stats`` may contain "b1" (median of positive values) and/or "mask" (positive count,
    integer-valued). Raises BadDataError / MissingInputError with the file named; logs a warning
    for non-finite voxels.
    """
    import nibabel as nib  # slow to import; the CLI imports this module even for --help
    from nibabel.filebasedimages import ImageFileError  # (idem)

    path = Path(path)
    show = _show(path, root)
    if not path.exists():
        if path.is_symlink():
            raise MissingInputError(f"{show} is a broken symbolic link (annexed content not "
                                    f"retrieved?)",
                                    fix="fetch the file (e.g. datalad get) and rerun")
        raise MissingInputError(f"{show} does not exist", fix="restore the file and rerun")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for bad headers
        why = "not a NIfTI file" if isinstance(exc, ImageFileError) else _why(exc)
        raise BadDataError(f"{show}: cannot read the NIfTI header ({why})",
                           fix="re-export or re-convert the file") from exc
    shape, affine, zooms = _check_geometry(img, show, what)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip: EOFError, zlib.error, OSError, ValueError...
        raise BadDataError(f"{show}: the image data cannot be read; the file is truncated or "
                           f"corrupt ({_why(exc)})", fix="copy or convert the file again") from exc
    values, n_nonfinite, vmax = _check_values(data, show, stats)
    extra = {}
    if "b1" in stats:
        pos = values[values > 0]
        extra["median_positive"] = float(np.median(pos)) if pos.size else None
    if "mask" in stats:
        extra["n_positive"] = int(np.count_nonzero(values > 0))
        extra["is_integer_valued"] = bool(np.all(np.mod(values, 1) == 0))
        extra["max_value"] = vmax
    del data, values
    return ImageInfo(path, shape, affine, zooms, n_nonfinite, **extra)


def _check_geometry(img, show: str, what: str):
    """(shape, affine, zooms) of a 3D image with an invertible affine and agreeing q/sform."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 3:
        kind = f"{len(shape)}D" if len(shape) != 4 else "4D"
        raise BadDataError(f"{show} is {kind} (shape {shape}) where a 3D {what} is expected",
                           fix="store one 3D volume per file (one file per flip angle for VFA)")
    if min(shape) < 1:
        raise BadDataError(f"{show} has an empty dimension (shape {shape})",
                           fix="re-export or re-convert the file")
    affine = np.asarray(img.affine, dtype=float)
    lin = affine[:3, :3]
    det = float(np.linalg.det(lin)) if np.all(np.isfinite(lin)) else float("nan")
    if not np.all(np.isfinite(affine)) or not math.isfinite(det) or abs(det) < 1e-9:
        raise BadDataError(f"{show}: the voxel-to-world affine is not invertible "
                           f"(determinant {det:g})",
                           fix="fix the header (pixdim and qform/sform) of the file")
    zooms = tuple(float(z) for z in np.sqrt(np.sum(lin ** 2, axis=0)))
    header = img.header
    if hasattr(header, "get_qform") and hasattr(header, "get_sform"):
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        if qcode and scode and qform is not None and sform is not None:
            mismatch = grid_mismatch_mm(shape, qform, sform)
            if mismatch > QFORM_TOLERANCE_VOXELS * min(zooms):
                raise BadDataError(f"{show}: qform and sform disagree (voxels {mismatch:.1f} mm "
                                   f"apart), so tools would place the image differently",
                                   fix="rewrite the header with one orientation (e.g. set the "
                                       "qform from the sform) after checking which is right")
        elif not qcode and not scode:
            LOGGER.warning("%s: neither qform nor sform is set; the image has no scanner "
                           "orientation, so its position relative to other images is a guess", show)
    return shape, affine, zooms


def _check_values(data, show: str, stats: str):
    """(finite values, number of non-finite voxels, maximum) of image data worth quantifying."""
    if data.dtype.kind == "c":
        raise BadDataError(f"{show} holds complex values", fix="store the magnitude image")
    n_nonfinite = 0
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        n_nonfinite = int(data.size - np.count_nonzero(finite))
        if n_nonfinite == data.size:
            raise BadDataError(f"{show}: every voxel is NaN or Inf", fix="convert the file again")
        values = data[finite] if n_nonfinite else data
    else:
        values = data
    vmin, vmax = float(np.min(values)), float(np.max(values))
    if vmax == 0.0 and vmin == 0.0:
        if "mask" in stats:
            raise BadDataError(f"{show}: the lesion mask holds no lesion (all voxels are 0)",
                               fix="draw the lesions, or remove the mask to get the maps "
                                   "without lesion statistics")
        raise BadDataError(f"{show}: every voxel is 0 (empty image)", fix="convert the file again")
    if vmax == vmin and not stats:     # a constant B1 map or all-lesion mask is plausible
        raise BadDataError(f"{show}: every voxel has the same value ({vmin:g})",
                           fix="convert the file again")
    if n_nonfinite:
        LOGGER.warning("%s: %d non-finite voxels (NaN/Inf) of %d; they become NaN in the maps",
                       show, n_nonfinite, data.size)
    return values, n_nonfinite, vmax


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


#: TB1map sidecar ``Units`` read as percent of the nominal flip angle, and as a factor (1 =
#: nominal); other units are refused; none, or arbitrary units, leave it to the median.
B1_PERCENT_UNITS = ("%", "percent", "percentage", "pct", "p.u.")
B1_FACTOR_UNITS = ("1", "factor", "fraction", "ratio", "relative", "dimensionless")
B1_UNKNOWN_UNITS = ("", "a.u.", "au", "arbitrary", "arbitrary units", "n/a")


def _b1_units_scale(units, show: str) -> float | None:
    """Scale from the sidecar's ``Units`` (None: not given, or arbitrary)."""
    if units is None:
        return None
    word = str(units).strip().lower()
    if word in B1_PERCENT_UNITS:
        return 0.01
    if word in B1_FACTOR_UNITS:
        return 1.0
    if word in B1_UNKNOWN_UNITS:
        return None
    raise BadDataError(f"{show}: Units = {units!r}{json_text(show, 'Units')} is neither a B1+ "
                       f"factor nor percent of the nominal flip angle",
                       fix="store the map as a factor (1 = nominal flip angle) with \"Units\": "
                           "\"1\" (or percent with \"%\"), or run with --b1-correction off")


def b1_scale(info: ImageInfo, root: Path | None = None, units=None) -> float:
    """Factor turning the stored TB1map into a B1+ factor (1.0, or 0.01 for percent): from the
    sidecar's ``units`` when given (:data:`B1_PERCENT_UNITS`, :data:`B1_FACTOR_UNITS`), else from
    the median (above :data:`B1_PERCENT_MEDIAN`: percent); the converted median must lie in
    :data:`B1_FACTOR_RANGE` either way."""
    show = MetaSource(info.path, root) if root is not None else _show(info.path, root)
    median = info.median_positive
    if median is None:
        raise BadDataError(f"{show}: the TB1map has no positive value", fix="convert it again or "
                           "run with --b1-correction off")
    given = _b1_units_scale(units, show)
    scale = 1.0 if given is None else given
    if given is None and median > B1_PERCENT_MEDIAN:
        scale = 0.01
        LOGGER.warning("%s: TB1map values look like percent (median %.3g); dividing by 100",
                       show, median)
    lo, hi = B1_FACTOR_RANGE
    if given is not None and not lo <= median * scale <= hi:
        raise BadDataError(f"{show}: TB1map median {median:.3g} with Units = {units!r}"
                           f"{json_text(show, 'Units')} is no B1+ factor in {lo:g}-{hi:g}",
                           fix="correct Units in its sidecar (\"1\" for a factor, \"%\" for "
                               "percent) or the map, or run with --b1-correction off")
    if not lo <= median * scale <= hi:
        raise BadDataError(f"{show}: TB1map median {median:.3g} is neither a B1+ factor "
                           f"({lo:g}-{hi:g}) nor percent ({100 * lo:g}-{100 * hi:g})",
                           fix="store the map as a multiplicative factor, or run with "
                               "--b1-correction off")
    return scale


def _in_field_of_view(image: ImageInfo, world, margin_vox: float) -> np.ndarray:
    """Boolean per homogeneous world point (4 x N): inside the image's field of view, i.e. at
    most ``margin_vox`` voxels beyond its outer voxel centres (0.5: the field-of-view edge)."""
    ijk = (np.linalg.inv(image.affine) @ world)[:3]
    upper = np.asarray(image.shape[:3], float)[:, None] - 1 + margin_vox
    return np.all((ijk >= -margin_vox) & (ijk <= upper), axis=0)


def b1_box_coverage(b1: ImageInfo, vfa: ImageInfo) -> float:
    """Fraction of the VFA grid's voxel centres inside the TB1map's field of view (world
    coordinates; the field of view reaches half a B1 voxel beyond its outer voxel centres)."""
    shape = [int(n) for n in vfa.shape[:3]]
    step = [max(1, n // 48) for n in shape]                 # at most ~48^3 points are tested
    axes = [np.arange(0, n, st, dtype=float) for n, st in zip(shape, step)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1)
    pts = np.vstack([ijk, np.ones((1, ijk.shape[1]))])
    inside = _in_field_of_view(b1, vfa.affine @ pts, margin_vox=0.5 + 1e-3)
    return float(inside.mean())


def check_b1_coverage(b1: ImageInfo, vfa: ImageInfo, root: Path | None = None,
                      what: str = "TB1map") -> float:
    """Fraction of the VFA field of view the TB1map covers (1.0 on the same grid); exit 65 below
    :data:`bids_agquant.qmri.b1.MIN_COVERED_FRACTION` of it. Head voxels outside a partial map
    are filled at run time (:mod:`bids_agquant.qmri.b1`), with a warning giving their share."""

    if same_grid(b1, vfa):
        return 1.0
    fraction = b1_box_coverage(b1, vfa)
    if fraction < MIN_COVERED_FRACTION:
        raise BadDataError(f"{_show(b1.path, root)}: the {what} field of view covers "
                           f"{100 * fraction:.0f} % of the VFA images' "
                           f"({_show(vfa.path, root)}), less than "
                           f"{100 * MIN_COVERED_FRACTION:.0f} %",
                           fix="acquire a B1 map covering the VFA volume, or run with "
                               "--b1-correction off")
    return fraction


def _t1w_images(plan: ParticipantPlan) -> list[tuple[str, str | None, Path]]:
    out = []
    for st in plan.states:
        if st.t1w is not None:
            out.append((st.session, st.agent_label, st.t1w))
    return out


def validate_plan(plan: ParticipantPlan, root: Path | None = None
                  ) -> tuple[ParticipantPlan, list[str]]:
    """Check every image of a plan; return the plan (B1 scale and mask grid filled in) and warnings.

    Raises BadDataError / MissingInputError at the first fatal problem, naming the file.
    """
    warnings: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    LOGGER.addHandler(handler)
    try:
        infos: dict[Path, ImageInfo] = {}

        def info(path, what, stats=""):
            if path not in infos:
                infos[path] = inspect_image(path, root, what=what, stats=stats)
            return infos[path]

        for _, _, t1w in _t1w_images(plan):
            info(t1w, "T1w image")
        b1_scales: dict[Path, float] = {}
        new_states = []
        for st in plan.states:
            vfa = st.vfa
            if vfa is not None:
                first = info(vfa.files[0], "VFA image")
                for f in vfa.files[1:]:
                    other = info(f, "VFA image")
                    if not same_grid(first, other):
                        raise BadDataError(
                            f"{_show(f, root)}: not on the grid of {vfa.files[0].name} "
                            f"(shapes {first.shape} and {other.shape})",
                            fix="every flip angle of a VFA set must share one grid")
                if vfa.b1_computed:
                    vfa = _check_computed_b1(vfa, first, info, root)
                elif vfa.b1map is not None:
                    b1 = info(vfa.b1map, "TB1map", stats="b1")
                    if vfa.b1map not in b1_scales:
                        b1_scales[vfa.b1map] = b1_scale(b1, root, vfa.b1_units)
                    coverage = check_b1_coverage(b1, first, root)
                    if not same_grid(b1, first):
                        LOGGER.info("%s: on another grid than %s (covering %.0f %% of it); it "
                                    "will be resampled", _show(vfa.b1map, root),
                                    vfa.files[0].name, 100 * coverage)
                    vfa = dataclasses.replace(vfa, b1_scale=b1_scales[vfa.b1map],
                                              b1_coverage=coverage)
                st = dataclasses.replace(st, vfa=vfa)
            new_states.append(st)
        mask = plan.lesion_mask
        if mask is not None:
            mask = _check_mask(plan, mask, info, root)
            _check_lesions_in_b1(mask, new_states, info, root)
        plan = dataclasses.replace(plan, states=tuple(new_states), lesion_mask=mask,
                                   warnings=tuple(plan.warnings) + tuple(warnings))
    finally:
        LOGGER.removeHandler(handler)
    return plan, warnings


def computed_b1_median(vfa, root: Path | None = None) -> float | None:
    """Median of the B1+ factor computed from a method's images (finite voxels; None: none)."""
    import nibabel as nib

    arrays = [np.asarray(nib.load(str(f)).dataobj, dtype=np.float64) for f in vfa.b1_files]
    arrays = [a.reshape(a.shape[:3]) for a in arrays]
    factor = B1M.factor_map(vfa.b1_method, B1M.images_by_role(vfa.b1_method, vfa.b1_roles, arrays),
                            dict(vfa.b1_params))
    finite = factor[np.isfinite(factor)]
    return float(np.median(finite)) if finite.size else None


def _check_computed_b1(vfa, first: ImageInfo, info, root):
    """A computed B1 method: its images share one grid, its factor's median is a B1+ factor
    (:data:`B1_FACTOR_RANGE`), its field of view covers the VFA set's (as for a TB1map)."""
    method = vfa.b1_method
    ref = info(vfa.b1_files[0], f"{method} image")
    for f in vfa.b1_files[1:]:
        other = info(f, f"{method} image")
        if not same_grid(ref, other):
            raise BadDataError(f"{_show(f, root)}: not on the grid of {vfa.b1_files[0].name} "
                               f"(shapes {ref.shape} and {other.shape})",
                               fix=f"the images of one {method} collection share one grid; "
                                   f"convert them again, or run with --b1-correction off")
    median = computed_b1_median(vfa, root)
    lo, hi = B1_FACTOR_RANGE
    show = _show(vfa.b1_files[0], root)
    names = " and ".join(_sidecar_of(f) for f in vfa.b1_files[:2]) + (
        ", ..." if len(vfa.b1_files) > 2 else "")
    if median is None:
        raise BadDataError(f"{show}: the {method} images give no B1+ factor in any voxel (no "
                           f"signal, or signal ratios no flip angle explains)",
                           fix=f"check the images and the sidecars ({names}), or run with "
                               f"--b1-correction off")
    if not lo <= median <= hi:
        raise BadDataError(f"{show}: the B1+ factor computed from the {method} images has median "
                           f"{median:.3g}, outside {lo:g}-{hi:g}",
                           fix=f"check FlipAngle, RepetitionTime, MixingTime in the sidecars "
                               f"({names}) and the acq-/flip-/echo- labels, or run with "
                               f"--b1-correction off")
    coverage = check_b1_coverage(ref, first, root, what=method)
    return dataclasses.replace(vfa, b1_scale=1.0, b1_coverage=coverage)


def _check_mask(plan: ParticipantPlan, mask: LesionMask, info, root) -> LesionMask:
    m = info(mask.path, "lesion mask", stats="mask")
    show = _show(mask.path, root)
    if mask.kind == "dseg" and not m.is_integer_valued:
        raise BadDataError(f"{show}: a dseg must hold integer lesion labels",
                           fix="save it with integer labels (0 = background)")
    if mask.kind == "mask" and m.max_value is not None and m.max_value != 1:
        LOGGER.warning("%s: mask values go up to %g; every voxel > 0 counts as lesion", show,
                       m.max_value)
    candidates = []   # (priority, session, t1w): pre-contrast T1w of the named session first
    for st in plan.states:
        if st.t1w is None:
            continue
        prio = (st.session != mask.session, st.is_post)
        candidates.append((prio, st.session, st.t1w))
    candidates.sort(key=lambda c: c[0])
    for _, session, t1w in candidates:
        other = info(t1w, "T1w image")
        if same_grid(m, other) or _reindexing(m, other) is not None:
            if session != mask.session:
                LOGGER.warning("%s: named for ses-%s but on the grid of %s; using that image",
                               show, mask.session, Path(t1w).name)
            elif not same_grid(m, other):
                LOGGER.info("%s: the voxels of %s in another axis order; re-indexed", show,
                            Path(t1w).name)
            return dataclasses.replace(mask, session=session, drawn_on=t1w)
    own = [c for c in candidates if c[1] == mask.session]
    if not own:
        raise BadDataError(f"{show}: its grid (shape {m.shape}, voxel {_fmt_zooms(m.zooms)} mm) "
                           f"matches no T1w image of sub-{plan.participant}, and ses-"
                           f"{mask.session} has no T1w whose world space it could be in",
                           fix="draw or resample the mask on the pre-contrast T1w of one session")
    _, session, t1w = own[0]
    change = _resampling_change(mask, info(t1w, "T1w image"), show)
    LOGGER.warning("%s: its grid (shape %s, voxel %s mm) is no T1w grid; resampled (nearest "
                   "neighbour) onto %s in the world space of ses-%s, lesion longest diameters "
                   "change by up to %.1f mm; draw the mask on a T1w grid to keep them exact", show,
                   m.shape[:3], _fmt_zooms(m.zooms), Path(t1w).name, session, change)
    return dataclasses.replace(mask, session=session, drawn_on=t1w)


#: A lesion with less than this fraction of its voxels inside a partial TB1map's field of view
#: (in the world space of the map's session) is refused: its B1 would be extrapolated.
LESION_MIN_IN_B1 = 0.5


def _check_lesions_in_b1(mask: LesionMask, states, info, root) -> None:
    """Exit 65 when a lesion lies outside the field of view of a partial TB1map (one covering
    less than the whole VFA box); judged in world coordinates, so for another session than the
    mask's within that session's head motion (hence the tolerant :data:`LESION_MIN_IN_B1`)."""
    partial = {st.vfa.b1_reference for st in states
               if st.vfa is not None and st.vfa.b1_reference is not None
               and st.vfa.b1_coverage < 1.0}
    if not partial:
        return
    import nibabel as nib

    img = nib.load(str(mask.path))
    labelled = L.label_lesions(np.asarray(img.dataobj, dtype=np.float64).reshape(img.shape[:3]),
                               mask.kind)
    ijk = np.argwhere(labelled.labels > 0)
    labels = labelled.labels[tuple(ijk.T)]
    world = img.affine @ np.vstack([ijk.T, np.ones(len(ijk))])
    for b1map in sorted(partial):
        b1 = info(b1map, "TB1map", stats="b1")
        inside = _in_field_of_view(b1, world, margin_vox=0.5)
        for k, original in enumerate(labelled.original_ids, start=1):
            share = float(inside[labels == k].mean())
            if share < LESION_MIN_IN_B1:
                raise BadDataError(
                    f"{_show(b1map, root)}: lesion {original} of {_show(mask.path, root)} lies "
                    f"outside the TB1map's field of view ({100 * share:.0f} % of its voxels "
                    f"inside); its B1 would be extrapolated",
                    fix="acquire a B1 map covering the lesions, or run with --b1-correction off")


def _reindexing(a: ImageInfo, b: ImageInfo):
    """:func:`bids_agquant.qmri.geometry.reindexing` of two images' grids (tolerance of
    :func:`same_grid`)."""

    tol = GRID_TOLERANCE_VOXELS * min(min(a.zooms[:3]), min(b.zooms[:3]))
    return G.reindexing(a.shape, a.affine, b.shape, b.affine, tol)


def _resampling_change(mask: LesionMask, t1w: ImageInfo, show: str) -> float:
    """Largest change (mm) of a lesion's longest axial diameter when the mask is resampled
    (nearest neighbour, world coordinates) onto the grid of ``t1w``; a lesion that vanishes on
    that grid is exit 65."""
    import nibabel as nib

    img = nib.load(str(mask.path))
    data = np.asarray(img.dataobj, dtype=np.float64).reshape(img.shape[:3])
    labelled = L.label_lesions(data, mask.kind)
    ids = np.asarray((0,) + tuple(labelled.original_ids), dtype=np.int32)
    native = ids[labelled.labels]
    moved = G.resample(native, img.affine, t1w.shape[:3], t1w.affine, order=0)
    before = L.lesion_diameters(labelled.labels, img.affine)
    after = L.lesion_diameters(moved, t1w.affine)
    lost = [int(ids[k]) for k in before if int(ids[k]) not in after]
    if lost:
        raise BadDataError(f"{show}: lesion(s) {', '.join(map(str, lost))} vanish when the mask "
                           f"is resampled onto the T1w grid ({t1w.path.name}): they lie outside "
                           "it or are smaller than its voxels",
                           fix="draw the mask on the pre-contrast T1w of one session")
    return max((abs(after[int(ids[k])].longest_axial_mm - size.longest_axial_mm)
                for k, size in before.items()), default=0.0)


def _fmt_zooms(zooms: Iterable[float]) -> str:
    return "x".join(f"{z:.3g}" for z in list(zooms)[:3])
