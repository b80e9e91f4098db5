"""Small file helpers of the report and group code: atomic writes and software versions.

Atomic: the content goes to a temporary file in the destination folder, is flushed to disk and
then renamed over the destination, so a reader (or a concurrent job) never sees half a file.
(``bids/derivatives.py`` of the participant workflow has the project-wide helpers; these are
kept local so the group level does not depend on the participant workflow being importable.)
"""
from __future__ import annotations

import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = ["write_bytes_atomic", "write_text_atomic", "software_versions"]


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


_PACKAGES = ("bids_agquant", "numpy", "scipy", "nibabel", "nipype", "antspyx", "pybids",
             "matplotlib")


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the numbers and figures."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "bids_agquant":
                from bids_agquant import __version__
                out[name] = __version__
            else:
                out[name] = "not installed"
    return out
