"""BIDS tabular and JSON I/O of bids_agquant: the one place that reads and writes TSV cells.

Cells (:func:`format_cell`), the rule every TSV the app writes follows
-----------------------------------------------------------------------
- ``None``, NaN, +-inf and the empty string -> ``n/a`` (BIDS missing value);
- booleans (Python or numpy) -> ``true`` / ``false``;
- integers (Python or numpy) -> the integer, e.g. ``115``;
- floats -> 6 significant digits (``format(v, ".6g")``), and floats holding an integer below
  1e15 as that integer (no exponent): ``919.9999973109889`` -> ``920``, ``3.0`` -> ``3``,
  ``1234567.0`` -> ``1234567``, ``0.0123456789`` -> ``0.0123457``, ``1.5e-07`` -> ``1.5e-07``
  (``-0.0`` -> ``-0``, as the format prints it);
- anything else -> ``str(value)`` with tabs and newlines replaced by spaces.

Six significant digits are far below the noise of any quantity the app measures (a map voxel, a
region mean, a regression slope) and keep the tables readable. Every table of the app uses 6
(:data:`DIGITS`); the phantom simulator writes its raw and ground-truth tables with 10
(``digits=10``), the precision its published sample dataset was written with.

Reading (:func:`read_tsv`): every column is read as text, BIDS ``n/a`` and empty cells become
missing (NaN in pandas); numbers are converted by the caller, which knows its columns.

JSON (:func:`json_safe`): the one sanitiser before ``json.dumps``: NaN/inf -> ``null``, numpy
scalars and arrays -> Python, paths -> ``str``, tuples -> lists.

Also here: the one natural sort key (:func:`natural_key`), the readers of ``participants.tsv``
and ``sessions.tsv`` (:func:`read_participants`, :func:`read_sessions`) and the one list of
software whose versions the outputs record (:data:`SOFTWARE`, :func:`software_versions`).
"""
from __future__ import annotations

import csv
import json
import math
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from bids_agquant import __version__
from bids_agquant.bids.atomic import atomic_write_text

__all__ = ["DIGITS", "MISSING", "cell", "format_cell", "write_tsv", "tsv_text", "read_tsv", "json_safe",
           "natural_key", "strip_prefix", "json_text", "read_participants", "read_sessions", "SOFTWARE",
           "software_versions"]

#: Significant digits of a float cell in every table the app writes.
DIGITS = 6

#: Cell texts read as missing (case-insensitive, after stripping).
MISSING = frozenset({"", "n/a", "na", "nan", "none", "null"})


# ------------------------------------------------------------------------------------ cells

def format_cell(value, digits: int = DIGITS) -> str:
    """One TSV cell by the rule of the module docstring (floats to ``digits`` significant)."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        if v.is_integer() and 10 ** digits <= abs(v) < 1e15:
            return str(int(v))           # below 10**digits the format prints the integer too
        return format(v, f".{digits}g")
    text = str(value)
    return text.replace("\t", " ").replace("\n", " ") if text else "n/a"


def _records(rows_or_df) -> Iterable[Mapping]:
    if isinstance(rows_or_df, pd.DataFrame):
        return rows_or_df.to_dict("records")
    return rows_or_df


def tsv_text(rows_or_df, columns: Iterable[str], digits: int = DIGITS) -> str:
    """The TSV text (header + one line per row) of dict rows or a DataFrame."""
    columns = list(columns)
    lines = ["\t".join(columns)]
    lines += ["\t".join(format_cell(r.get(c), digits) for c in columns)
              for r in _records(rows_or_df)]
    return "\n".join(lines) + "\n"


def write_tsv(path, rows_or_df, columns: Iterable[str], digits: int = DIGITS) -> Path:
    """Write a TSV atomically (:func:`bids_agquant.bids.atomic.atomic_write_text`)."""
    return atomic_write_text(path, tsv_text(rows_or_df, columns, digits))


def read_tsv(path, encoding: str = "utf-8-sig", short_rows_missing: bool = False) -> pd.DataFrame:
    """A BIDS TSV as a DataFrame of text columns; ``n/a`` and empty cells are missing (NaN).

    Header names and cells are stripped. Raises ``OSError``/``UnicodeDecodeError``/
    ``csv.Error`` as reading does; a row with more or fewer fields than the header raises
    ``ValueError`` naming its line, except that with ``short_rows_missing`` the cells a short row
    lacks are missing (``n/a``; hand-edited ``participants.tsv``/``sessions.tsv``, whose readers
    then warn per missing value).
    """
    with open(path, newline="", encoding=encoding) as fh:
        reader = csv.reader(fh, delimiter="\t")
        try:
            header = next(reader)
        except StopIteration:
            return pd.DataFrame()
        header = [h.strip() for h in header]
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if short_rows_missing and len(cells) < len(header):
                cells = cells + [""] * (len(header) - len(cells))
            if len(cells) != len(header):
                raise ValueError(f"{path}, line {line}: {len(cells)} fields where the header "
                                 f"has {len(header)}")
            rows.append([None if c.strip().lower() in MISSING else c.strip() for c in cells])
    return pd.DataFrame(rows, columns=header, dtype=object)


def cell(row: Mapping, column: str) -> str | None:
    """Text of ``column`` in a row of :func:`read_tsv` (None when missing or absent)."""
    v = row.get(column)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


# ------------------------------------------------------------------------------------- JSON

def json_safe(obj):
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python, paths -> str."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------------------ natural sort

def json_text(obj) -> str:
    """``obj`` as the JSON text every output file uses: sanitised (:func:`json_safe`), indented by
    2, with a final newline."""
    return json.dumps(json_safe(obj), indent=2) + "\n"


def natural_key(label) -> list:
    """Sort key ordering digit runs by value: ``D0 < D1 < D8 < D28``, ``01 < 2``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.findall(r"\d+|\D+", label or "")]


# ------------------------------------------------------------------ participants / sessions

def strip_prefix(label, prefix: str) -> str:
    """``label`` without a leading ``prefix`` (``sub-01`` -> ``01``), stripped of blanks."""
    label = "" if label is None else str(label).strip()
    return label[len(prefix):] if label.startswith(prefix) else label


def read_participants(bids_dir) -> pd.DataFrame | None:
    """``BIDS_DIR/participants.tsv`` as text columns (None when the file does not exist).

    Adds the column ``participant`` (the label without ``sub-``). Reading errors propagate
    (``OSError``, ``UnicodeDecodeError``, ``csv.Error``, ``ValueError``): each caller reports them
    its own way.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        return None
    df = read_tsv(path, short_rows_missing=True)
    if "participant_id" in df.columns:
        df["participant"] = [strip_prefix(cell(r, "participant_id"), "sub-")
                             for r in df.to_dict("records")]
    return df


def read_sessions(bids_dir, participant: str) -> pd.DataFrame | None:
    """``sub-<p>/sub-<p>_sessions.tsv`` as text columns (None when the file does not exist).

    Adds the column ``session`` (the label without ``ses-``). Errors propagate as in
    :func:`read_participants`.
    """
    path = Path(bids_dir) / f"sub-{participant}" / f"sub-{participant}_sessions.tsv"
    if not path.is_file():
        return None
    df = read_tsv(path, short_rows_missing=True)
    if "session_id" in df.columns:
        df["session"] = [strip_prefix(cell(r, "session_id"), "ses-") for r in df.to_dict("records")]
    return df


# ---------------------------------------------------------------------------- software list

#: Every distribution whose version an output records, in order, and whether it is part of the
#: computing stack listed in ``dataset_description.json`` (the reports and the group summary
#: list all of them, plus Python).
SOFTWARE: tuple[tuple[str, bool], ...] = (
    ("bids_agquant", False), ("numpy", True), ("scipy", True), ("nibabel", True),
    ("antspyx", True), ("nipype", True), ("pybids", True), ("matplotlib", False),
)


def software_versions(stack_only: bool = False) -> dict[str, str]:
    """Versions of :data:`SOFTWARE` (``stack_only``: the computing stack, without Python)."""
    out = {} if stack_only else {"python": platform.python_version()}
    for name, in_stack in SOFTWARE:
        if stack_only and not in_stack:
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "bids_agquant":
                out[name] = __version__
            else:
                out[name] = "not installed"
    return out
