"""The column registry: one row per column of every table the app writes.

``bids_agquant/data/columns.tsv`` holds, per ``table`` (``lesions`` for the participant lesion
table ``sub-<p>_desc-lesions_stats.tsv``, else the group table's file stem) and ``column``: the
``description`` and ``units`` of the BIDS JSON data dictionary, ``levels`` (a JSON object of the
dictionary's ``Levels``, or ``n/a``) and the ``header`` the reports display (``n/a``: the column
name). The table's row order is its column order.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Iterable

from bids_agquant.bids.tables import cell, read_tsv

__all__ = ["REGISTRY", "LESION_TABLE", "RESOURCES_TABLE", "QA_TABLE", "PARTICIPANT_TABLES", "tables", "columns", "dictionary", "header", "headers"]

REGISTRY = "columns.tsv"
#: Registry name of the participant lesion table.
LESION_TABLE = "lesions"
#: Registry name of the participant level's node resource table (``--resource-monitor``).
RESOURCES_TABLE = "resources"
#: Registry name of the participant QA table (``sub-<p>_desc-qa_stats.tsv``, qmri/qa.py).
QA_TABLE = "qa"
#: The tables the participant level writes (every other registered table is a group table).
PARTICIPANT_TABLES = (LESION_TABLE, RESOURCES_TABLE, QA_TABLE)


@lru_cache(maxsize=1)
def _rows() -> tuple[dict, ...]:
    path = resources.files("bids_agquant") / "data" / REGISTRY
    with resources.as_file(path) as p:
        df = read_tsv(p)
    return tuple({k: cell(r, k) for k in ("table", "column", "description", "units", "levels",
                                          "header")} for r in df.to_dict("records"))


def _table_rows(table: str) -> list[dict]:
    rows = [r for r in _rows() if r["table"] == table]
    if not rows:
        raise KeyError(f"no table {table!r} in the column registry {REGISTRY}")
    return rows


def tables() -> list[str]:
    """Registered tables, in registry order."""
    return list(dict.fromkeys(r["table"] for r in _rows()))


def columns(table: str) -> tuple[str, ...]:
    """The columns of ``table`` in order."""
    return tuple(r["column"] for r in _table_rows(table))


def dictionary(table: str, present_columns: Iterable[str] | None = None) -> dict:
    """BIDS JSON data dictionary of ``table``: ``{column: {"Description", "Units", "Levels"}}``.

    ``present_columns`` (default: every registered column) gives the columns and their order;
    a column without a registry row raises ``KeyError``.
    """
    by_column = {r["column"]: r for r in _table_rows(table)}
    out = {}
    for c in present_columns if present_columns is not None else by_column:
        try:
            r = by_column[c]
        except KeyError:
            raise KeyError(f"column {c!r} of table {table!r} has no row in {REGISTRY}") from None
        entry = {"Description": r["description"]}
        if r["units"]:
            entry["Units"] = r["units"]
        if r["levels"]:
            entry["Levels"] = json.loads(r["levels"])
        out[c] = entry
    return out


def header(table: str, column: str) -> str:
    """Display header of a column in the reports (the column name when none is registered)."""
    return headers(table).get(column, column)


def headers(table: str) -> dict[str, str]:
    """``{column: display header}`` of the columns of ``table`` that have one."""
    return {r["column"]: r["header"] for r in _table_rows(table) if r["header"]}
