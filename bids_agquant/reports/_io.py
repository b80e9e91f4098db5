"""Small file helpers of the report and group code: atomic writes.

Atomic: the content goes to a temporary file in the destination folder, is flushed to disk and
then renamed over the destination, so a reader (or a concurrent job) never sees half a file.
The implementation is the project's one in :mod:`bids_agquant.bids.atomic`; these names are
kept for the report and group code.
"""
from __future__ import annotations

from pathlib import Path

from bids_agquant.bids.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["write_bytes_atomic", "write_text_atomic"]


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``); returns the path."""
    return atomic_write_bytes(path, data)


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_text(path, text)
