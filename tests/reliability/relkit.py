"""Helpers of the reliability tests (unique module name: imported as ``relkit``)."""
from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[2]

# edit_json is the tiny datasets' own (one implementation)
sys.path.insert(0, str(REPO / "tests" / "cli"))
from tinybids import edit_json  # noqa: E402,F401


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst




def load(path: Path):
    img = nib.load(str(path))
    return img, np.asarray(img.dataobj)


def save_like(path: Path, data, ref: Path | None = None, dtype=None) -> None:
    """Write ``data`` with the affine of ``ref`` (default: ``path`` itself), float32 unless told."""
    img = nib.load(str(ref or path))
    data = np.asarray(data)
    out = nib.Nifti1Image(data.astype(dtype or (np.float32 if data.dtype.kind != "c" else data.dtype)),
                          img.affine)
    out.set_sform(img.affine, code=1)
    out.set_qform(img.affine, code=1)
    nib.save(out, str(path))


def patch_header(path: Path, **fields) -> None:
    """Rewrite header fields of a .nii.gz in place, bypassing nibabel's consistency checks
    (to write what a broken converter writes: a NaN sform, a shape the data do not have)."""
    raw = gzip.decompress(Path(path).read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw))
    for key, value in fields.items():
        if key == "shape":
            hdr.set_data_shape(value)
        else:
            hdr[key] = value
    block = hdr.binaryblock
    Path(path).write_bytes(gzip.compress(block + raw[len(block):]))
