"""A phantom session as the scanner would send it: classic single-frame MR DICOM, Philips-like.

A site-side test tool (issue 13, item 6): it turns the images of one simulated BIDS session
(``simulate_dataset``) back into DICOM series, so that the whole path DICOM -> dcm2niix ->
dcm2bids (with the shipped configuration, ``bids_agquant/data/dcm2bids/``) -> bids-agquant can
be run for real and compared with the app's run on the phantom itself. Needs ``pydicom`` (test
extra); the app itself never reads DICOM.

What the series carry (one file per slice, Explicit VR Little Endian, uint16 stored values):

- geometry from the NIfTI affine (RAS) turned into DICOM patient coordinates (LPS):
  NIfTI axis i = DICOM column, j = DICOM row, k = slice; ``ImageOrientationPatient``,
  ``ImagePositionPatient`` of every slice, ``PixelSpacing``, ``SliceThickness`` and
  ``SpacingBetweenSlices``; the phantom's grids are oblique, so are the series;
- Philips intensity scaling (dcm2niix ``Philips/README.md``; Chenevert et al. 2014): stored
  values ``SV = round(FP * SS - RI / RS)`` with a rescale slope RS (0028,1053), rescale
  intercept RI (0028,1052) and private scale slope SS (2005,100E) drawn per series, so that
  RS x SS differ between the flip angles of a VFA set and between a pre/post T1w pair; then
  ``DV = SV * RS + RI`` (display value) and ``FP = DV / (RS * SS)`` = the phantom's value up
  to the rounding of SV (at most ``0.5 / SS``). The TB1map keeps its NIfTI slope as RS, with no
  private scale slope;
- ``FlipAngle``, ``RepetitionTime``, ``EchoTime`` (ms), ``MagneticFieldStrength``,
  ``Manufacturer`` "Philips", ``SeriesDescription`` from :data:`SERIES_DESCRIPTIONS` (what the
  shipped dcm2bids configuration matches), ``SeriesNumber``, study/series/acquisition dates
  and times of the visit (``AcquisitionDateTime`` too);
- fake identities (:data:`FAKE_IDENTITY`: patient name, ID, birth date, institution...), which
  must reach no file of the converted dataset or of the app's outputs. The phantom's contrast
  agent is *not* written (``ContrastBolusAgent`` is left out: dcm2niix would not carry it into
  the sidecar anyway); the agent of each visit is given at conversion (see docs/conversion.md).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["FAKE_IDENTITY", "IDENTIFYING", "SERIES_DESCRIPTIONS", "DicomSeries",
           "write_session_dicom", "series_description", "lps_affine", "main"]

#: Identifying values written into every file (all fake); none may survive the conversion.
FAKE_IDENTITY = {
    "PatientName": "FICTIF^JEANNE^MARIE",
    "PatientID": "NRDQX7731",
    "PatientBirthDate": "19580312",
    "PatientSex": "F",
    "PatientAge": "062Y",
    "PatientWeight": "63",
    "InstitutionName": "Hopital Imaginaire de Grenoble",
    "InstitutionAddress": "1 Rue Imaginaire 38000 Grenoble",
    "InstitutionalDepartmentName": "Neuroradiologie Fictive",
    "ReferringPhysicianName": "DOCTEUR^FAUXNOM",
    "OperatorsName": "TECHQX^UNE",
    "StationName": "PHMRQX01",
    "DeviceSerialNumber": "SNQX4471",
    "AccessionNumber": "ACCQX5521",
    "StudyID": "STQX9",
}
#: The values of :data:`FAKE_IDENTITY` that identify someone or somewhere (not sex, age, weight).
IDENTIFYING = tuple(v for k, v in FAKE_IDENTITY.items()
                    if k not in ("PatientSex", "PatientAge", "PatientWeight"))

#: SeriesDescription per image kind: what the scanner's protocol calls the series (and what
#: ``bids_agquant/data/dcm2bids/*.json`` matches). ``{fa}``: flip angle in degrees; ``_GD``:
#: acquired after a gadolinium injection during the same visit (the Dotarem series of the
#: baseline and follow-up visits). The AGuIX visits (the agent was injected hours before, no
#: pre-contrast acquisition) run the plain protocol: their series carry no ``_GD``.
SERIES_DESCRIPTIONS = {
    "T1w": "T1W_3D{gd}",
    "VFA": "VFA_FA{fa}{gd}",
    "TB1map": "B1MAP",
}
#: Per-series scaling, taken in turn (offset by the seed): rescale slope RS, the brightest stored
#: value as a fraction of 60000 (sets SS), and RI / RS (<= 0: stored values stay >= 0). Display
#: scales RS x SS of any four consecutive series differ pairwise by 1.2x or more (up to ~15x),
#: as between the flip angles of a VFA set in a tester's Philips data (1.9-5.8x).
_RS = (1.2, 3.7, 0.8, 2.5, 4.4, 1.6, 0.6)
_TOP = (0.9, 0.35, 0.6, 0.25, 0.4, 0.75, 0.15, 0.5)
_OFFSET = (0, -3, 0, -8, -1, 0, -16)


@dataclass(frozen=True)
class DicomSeries:
    """One written series: where, what it holds, and its scaling (RS, RI, SS; SS 0 = none)."""
    folder: Path
    source: Path
    description: str
    number: int
    rescale_slope: float
    rescale_intercept: float
    scale_slope: float


def series_description(kind: str, flip_angle_deg: float | None = None, post: bool = False) -> str:
    """The series description of an image kind ("T1w", "VFA", "TB1map")."""
    fa = "" if flip_angle_deg is None else f"{flip_angle_deg:g}"
    return SERIES_DESCRIPTIONS[kind].format(fa=fa, gd="_GD" if post else "")


def lps_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS+) voxel-to-world affine in DICOM patient coordinates (LPS+)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{value:.10g}"
    if len(text) > 16:
        text = f"{value:.8e}" if abs(value) < 1e-4 else f"{value:.9g}"
    return text[:16]


def _scaling(n: int, top: float) -> tuple[float, float, float]:
    """(RS, RI, SS) of the ``n``-th series whose brightest precise value is ``top``."""
    rs = _RS[n % len(_RS)]
    ss = round(_TOP[n % len(_TOP)] * 60000.0 / max(top, 1.0), 5)
    return rs, round(rs * _OFFSET[n % len(_OFFSET)], 6), ss


def _stored_values(fp: np.ndarray, rs: float, ri: float, ss: float) -> np.ndarray:
    """uint16 stored values whose precise values FP = (SV*RS + RI)/(RS*SS) are ``fp``."""
    sv = np.rint(fp * ss - ri / rs) if ss else np.rint((fp - ri) / rs)
    if sv.min() < 0 or sv.max() > 65535:
        raise ValueError(f"stored values {sv.min():g}..{sv.max():g} outside uint16")
    return sv.astype(np.uint16)


def _base_dataset(meta: dict, study: dict, series_uid: str, number: int, desc: str,
                  when: _dt.datetime) -> pydicom.Dataset:
    """The attributes shared by every slice of one series."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.Manufacturer = "Philips"
    ds.ManufacturerModelName = "Ingenia"
    ds.SoftwareVersions = "5.7.1"
    for key, value in FAKE_IDENTITY.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = study["uid"]
    day = study["start"].strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day
    ds.StudyTime = study["start"].strftime("%H%M%S.00")
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S.00")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S.00")
    ds.StudyDescription = "NANORAD^BRAIN"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.SeriesDescription = ds.ProtocolName = desc
    ds.FrameOfReferenceUID = study["frame_uid"]
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.MagneticFieldStrength = _ds(float(meta.get("MagneticFieldStrength", 3.0)))
    ds.ImagingFrequency = _ds(float(meta.get("ImagingFrequency", 127.7324)))
    for key, field in (("RepetitionTime", "RepetitionTime"), ("EchoTime", "EchoTime")):
        if meta.get(field) is not None:
            setattr(ds, key, _ds(1000.0 * float(meta[field])))            # DICOM: ms
    if meta.get("FlipAngle") is not None:
        ds.FlipAngle = _ds(float(meta["FlipAngle"]))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _geometry(ds: pydicom.Dataset, lps: np.ndarray, shape) -> None:
    """Orientation, spacing and size of the slices (NIfTI i = column, j = row)."""
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / zooms[0], lps[:3, 1] / zooms[1]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [_ds(zooms[1]), _ds(zooms[0])]             # row spacing, column spacing
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(zooms[2])
    ds.Columns, ds.Rows = int(shape[0]), int(shape[1])


def _write_series(meta: dict, folder: Path, *, study: dict, number: int, desc: str,
                  when: _dt.datetime, scaling: tuple[float, float, float], data: np.ndarray,
                  affine: np.ndarray) -> None:
    """Every slice of one image as its own DICOM file under ``folder``."""
    rs, ri, ss = scaling
    sv = _stored_values(data, rs, ri, ss)
    lps = lps_affine(affine)
    series_uid = generate_uid(entropy_srcs=[study["uid"], str(number), desc])
    base = _base_dataset(meta, study, series_uid, number, desc, when)
    _geometry(base, lps, data.shape)
    base.RescaleSlope, base.RescaleIntercept = _ds(rs), _ds(ri)
    base.RescaleType = "normalized"
    if ss:
        block = base.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        block.add_new(0x0E, "FL", float(ss))
    base.ImagesInAcquisition = data.shape[2]
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        ds = pydicom.Dataset()
        ds.update(base)
        uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.SOPInstanceUID = uid
        ds.InstanceNumber = k + 1
        pos = lps @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = [_ds(v) for v in pos[:3]]
        ds.SliceLocation = _ds(float(pos[:3] @ np.cross(lps[:3, 0], lps[:3, 1])
                                     / np.linalg.norm(np.cross(lps[:3, 0], lps[:3, 1]))))
        ds.PixelData = np.ascontiguousarray(sv[:, :, k].T).tobytes()    # rows = j, columns = i
        meta_info = FileMetaDataset()
        meta_info.MediaStorageSOPClassUID = MRImageStorage
        meta_info.MediaStorageSOPInstanceUID = uid
        meta_info.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta_info
        ds.save_as(folder / f"IM_{k + 1:04d}.dcm", enforce_file_format=True)


def _kind(path: Path) -> tuple[str, int | None, bool]:
    """(kind, flip index, post-contrast) from a phantom file name."""
    name = path.name
    kind = "TB1map" if name.endswith("_TB1map.nii.gz") else (
        "VFA" if name.endswith("_VFA.nii.gz") else "T1w")
    flip = re.search(r"_flip-(\d+)_", name)
    return kind, int(flip.group(1)) if flip else None, "_ce-" in name


def _session_images(session_dir: Path) -> list[Path]:
    """The session's T1w, VFA and TB1map files in acquisition order (pre, post, B1 last)."""
    files = [*sorted(session_dir.glob("anat/*_T1w.nii.gz")),
             *sorted(session_dir.glob("anat/*_VFA.nii.gz"))]
    files.sort(key=lambda p: (_kind(p)[2], _kind(p)[0] != "T1w", _kind(p)[1] or 0))
    return files + sorted(session_dir.glob("fmap/*_TB1map.nii.gz"))


def write_session_dicom(session_dir: Path, out_dir: Path, *, start: _dt.datetime,
                        seed: int = 0) -> list[DicomSeries]:
    """Write the T1w, VFA and TB1map images of one phantom session (``sub-*/ses-*`` folder) as
    DICOM series under ``out_dir/<number>_<description>/`` (one visit: one study, series 2
    minutes apart from ``start``); returns what was written. Deterministic for a seed."""
    session_dir, out_dir = Path(session_dir), Path(out_dir)
    study = {"uid": generate_uid(entropy_srcs=[str(session_dir.name), str(seed), "study"]),
             "frame_uid": generate_uid(entropy_srcs=[str(session_dir.name), str(seed), "frame"]),
             "start": start}
    written = []
    images = _session_images(session_dir)
    injected_here = any(not _kind(f)[2] for f in images if _kind(f)[0] != "TB1map")
    for n, src in enumerate(images, start=1):
        meta = json.loads(src.with_name(src.name[:-len(".nii.gz")] + ".json").read_text())
        kind, _, post = _kind(src)
        post = post and injected_here      # _GD: after an injection during this visit
        img = nib.load(str(src))
        data = np.asarray(img.get_fdata(), dtype=np.float64)
        if kind == "TB1map":
            slope = float(img.dataobj.slope)
            scaling = (slope, 0.0, 0.0)          # stored as in the NIfTI, no private scale
        else:
            scaling = _scaling(seed + n, float(np.max(data)))
        desc = series_description(kind, meta.get("FlipAngle") if kind == "VFA" else None, post)
        number = 100 * n + 1                     # Philips-like series numbers (101, 201, ...)
        folder = out_dir / f"{number:04d}_{desc}"
        _write_series(meta, folder, study=study, number=number, desc=desc,
                      when=start + _dt.timedelta(minutes=2 * n), scaling=scaling, data=data,
                      affine=img.affine)
        written.append(DicomSeries(folder, src, desc, number, *scaling))
    return written


def main(argv=None) -> int:
    """``python -m bids_agquant.simulate.dicom SESSION_DIR OUT_DIR [--start ISO] [--seed N]``."""
    p = argparse.ArgumentParser(prog="python -m bids_agquant.simulate.dicom",
                                description="Write one phantom session (sub-*/ses-* folder of a "
                                            "bids-agquant-simulate dataset) as Philips-like "
                                            "DICOM series (test tool; fake identities).")
    p.add_argument("session_dir")
    p.add_argument("out_dir")
    p.add_argument("--start", default="2021-03-01T09:00:00", help="visit start (ISO date-time)")
    p.add_argument("--seed", type=int, default=0, help="offset into the per-series scalings")
    args = p.parse_args(argv)
    for s in write_session_dicom(Path(args.session_dir), Path(args.out_dir),
                                 start=_dt.datetime.fromisoformat(args.start), seed=args.seed):
        print(f"{s.folder}  RS {s.rescale_slope:g}  RI {s.rescale_intercept:g}  "
              f"SS {s.scale_slope:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
