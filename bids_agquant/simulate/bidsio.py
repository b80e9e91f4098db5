"""Bit-reproducible writers: NIfTI (gzip without timestamp or file name), JSON, TSV, and the
BIDS names and sidecars of the phantom dataset."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from ..bids.tables import tsv_text

__all__ = ["write_nifti", "write_json", "write_tsv", "t1w_name", "vfa_name", "b1_name",
           "b1_method_name", "BIDS_VERSION"]

BIDS_VERSION = "1.10.0"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, dtype=None,
                slope: float | None = None, compresslevel: int = 6) -> Path:
    """Write ``data`` as NIfTI-1 (``.nii.gz``: deterministic gzip, mtime 0, no name in header).

    Integer ``dtype`` with ``slope``: stores ``round(data / slope)`` and sets ``scl_slope``.
    qform and sform both hold ``affine`` (code 1, scanner), units mm.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        scaled = arr / slope if slope else arr
        arr = np.clip(np.rint(scaled), info.min, info.max).astype(dtype)
    elif dtype is not None:
        arr = arr.astype(dtype)
    img = nib.Nifti1Image(arr, affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr.set_data_dtype(arr.dtype)
    if slope:
        hdr.set_slope_inter(slope, 0.0)
    else:
        hdr.set_slope_inter(1.0, 0.0)
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw, compresslevel=compresslevel, mtime=0))
    else:
        path.write_bytes(raw)
    return path


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


#: Significant digits of the phantom's table cells (the app's cell rule, more digits).
TSV_DIGITS = 10


def write_tsv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tsv_text(rows, columns, TSV_DIGITS))
    return path


def _prefix(sub: str, ses: str) -> str:
    return f"sub-{sub}_ses-{ses}"


def t1w_name(sub: str, ses: str, agent: str | None) -> str:
    ce = f"_ce-{agent}" if agent else ""
    return f"sub-{sub}/ses-{ses}/anat/{_prefix(sub, ses)}{ce}_T1w.nii.gz"


def vfa_name(sub: str, ses: str, agent: str | None, flip_index: int) -> str:
    """qMRI BIDS VFA name; entity order sub, ses, ce, flip (BIDS schema)."""
    ce = f"_ce-{agent}" if agent else ""
    return f"sub-{sub}/ses-{ses}/anat/{_prefix(sub, ses)}{ce}_flip-{flip_index}_VFA.nii.gz"


def b1_name(sub: str, ses: str) -> str:
    return f"sub-{sub}/ses-{ses}/fmap/{_prefix(sub, ses)}_TB1map.nii.gz"


def b1_method_name(sub: str, ses: str, suffix: str, entities: str) -> str:
    """A B1 method's image, ``entities`` in BIDS order (e.g. ``acq-tr1``, ``echo-1_flip-2``)."""
    return f"sub-{sub}/ses-{ses}/fmap/{_prefix(sub, ses)}_{entities}_{suffix}.nii.gz"


def sidecar_path(nii_rel: str) -> str:
    return nii_rel[: -len(".nii.gz")] + ".json"
