"""Atomic file writes of bids_agquant (moved from :mod:`bids_agquant.bids.derivatives`).

A hidden temporary file in the target folder, flushed to disk, then ``os.replace``: readers and
concurrent jobs never see a half-written file.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_nifti", "remove_stale_temporaries"]


#: The writers' temporary files are hidden and sit beside their target:
#: ``.<target name>.<8 random characters from mkstemp>.tmp[<target extension>]``.
_TEMP_MARK = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(_TEMP_MARK)
                        + r"(\.[A-Za-z0-9.]+)?$")


def _temp_in(target: Path, suffix: str = "") -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                            suffix=_TEMP_MARK + suffix)


def remove_stale_temporaries(folder, beside=None) -> list[Path]:
    """Delete the temporary files of these writers that a killed run left; returns them.

    A SIGKILL (or a node killed by its scheduler) skips the writers' own cleanup. Looks in
    ``folder`` and below, and beside the single file ``beside`` (e.g. ``sub-<p>.html``, whose
    folder holds other jobs' files). Call it only for a folder one job owns (``sub-<p>/``,
    ``group/``): a dataset-level temporary may belong to a concurrent job.
    """
    folder = Path(folder)
    found = [p for p in folder.rglob(".*") if _TEMP_NAME.match(p.name)] if folder.is_dir() else []
    if beside is not None:
        beside = Path(beside)
        if beside.parent.is_dir():
            found += [p for p in beside.parent.glob(f".{beside.name}.*")
                      if _TEMP_NAME.match(p.name)]
    for p in found:
        _unlink(p)
    return found


def _complete_temp(target: Path, data: bytes) -> str:
    """A hidden temporary file beside ``target`` holding ``data``, flushed to disk, mode 0644."""
    fd, tmp = _temp_in(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    tmp = _complete_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_nifti(path, img) -> Path:
    """Atomic NIfTI write of a nibabel image (compressed when ``path`` ends with .gz)."""
    import nibabel as nib

    path = Path(path)
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = _temp_in(path, ext)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
