"""Group level, reading: participant lesion tables and covariates into typed pandas DataFrames.

BIDS ``n/a`` and the TSV rules are those of :mod:`bids_agquant.bids.tables` (read once there);
this module types what the group level needs:

- :func:`read_lesion_tables`: the cohort's lesion rows, one DataFrame (the required columns of a
  lesion table are :data:`LESION_TABLE_COLUMNS`): ``participant`` and ``session`` labels without
  prefixes, ``agent_label`` as written and ``agent`` canonical (None when missing), booleans
  ``is_control`` and ``measurable``, every number float64 (NaN for ``n/a``), in file and line
  order; the uncertainty columns (:data:`UNCERTAINTY_COLUMNS`, :data:`UNCERTAINTY_FLAGS`) where
  the table has them (NaN / None otherwise: tables of versions before them);
- :func:`read_participants`: covariates indexed by participant label (``dose_mg_per_kg``,
  ``weight_kg`` float64, NaN when missing or not a positive number; ``primary_tumor`` text or
  None);
- :func:`order_sessions`: the time order of a participant's sessions: the order the participant
  level recorded in its lesion table (``session_order``: sessions.tsv, scans.tsv, sidecar times)
  when every row has it, else ``acq_time`` of ``sessions.tsv`` when every session has one, else
  natural label order.

Numbers are parsed by :func:`pandas.to_numeric`; a cell that is neither missing nor a number is a
:class:`GroupDataError` in a lesion table and a warning (then missing) in ``participants.tsv``.
"""
from __future__ import annotations

import csv
import logging
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from bids_agquant.bids import evidence as E
from bids_agquant.bids import tables as T
from bids_agquant.errors import GroupDataError, GroupInputError
from bids_agquant.qmri.relaxivity import canonical_agent

__all__ = ["GroupInputError", "GroupDataError", "LESION_TABLE_COLUMNS", "COVARIATES",
           "UNCERTAINTY_COLUMNS", "UNCERTAINTY_FLAGS",
           "find_lesion_tables", "read_lesion_table", "read_lesion_tables", "read_participants",
           "order_sessions", "as_text", "warn"]

LOG = logging.getLogger("bids_agquant.group")

#: Columns every participant lesion table must have (interface.md).
LESION_TABLE_COLUMNS = (
    "participant_id", "session_id", "contrast_agent", "lesion_id", "longest_diameter_mm",
    "measurable", "volume_mm3", "se_mean_percent", "se_sd_percent", "t1_pre_mean_s",
    "t1_post_mean_s", "delta_r1_mean_per_s", "conc_mean_mM", "conc_sd_mM", "conc_mean_mg_per_L",
    "n_voxels")
_FLOAT_COLUMNS = ("longest_diameter_mm", "volume_mm3", "se_mean_percent", "se_sd_percent",
                  "t1_pre_mean_s", "t1_post_mean_s", "delta_r1_mean_per_s", "conc_mean_mM",
                  "conc_sd_mM", "conc_mean_mg_per_L", "n_voxels")
#: Columns of the participant level's uncertainty (issue 16; absent from tables of older
#: versions, then NaN / None): numbers, then flags.
UNCERTAINTY_COLUMNS = ("conc_stderr_mM", "conc_ci_low_mM", "conc_ci_high_mM", "conc_lod_mM",
                       "conc_loq_mM", "conc_stderr_mg_per_L")
UNCERTAINTY_FLAGS = ("conc_detected", "conc_quantifiable")
#: Covariate columns of participants.tsv the group level uses (numbers, then the tumour).
COVARIATES = ("dose_mg_per_kg", "weight_kg", "primary_tumor")
_TRUE = frozenset({"true", "1", "yes", "y", "t", "1.0"})
_READ_ERRORS = (OSError, UnicodeDecodeError, csv.Error, ValueError)


def as_text(column: pd.Series) -> pd.Series:
    """Text cells as Python objects, None where missing."""
    return column.astype(object).where(column.notna(), None)


def _numbers(text: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """float64 values of text columns (NaN where missing) and where a cell is not a number."""
    flat = pd.to_numeric(text.to_numpy(object).ravel(), errors="coerce")
    values = pd.DataFrame(np.asarray(flat, dtype="float64").reshape(text.shape),
                          index=text.index, columns=text.columns)
    return values, text.notna() & values.isna()


def _flags(raw: pd.DataFrame, column: str) -> pd.Series:
    """True / False / None (missing, n/a or absent) of a boolean column."""
    if column not in raw:
        return pd.Series(None, index=raw.index, dtype=object)
    text = as_text(raw[column])
    return pd.Series([None if v is None else str(v).lower() in _TRUE for v in text],
                     index=raw.index, dtype=object)


def _optional_numbers(raw: pd.DataFrame, path: Path) -> dict:
    """float64 columns of :data:`UNCERTAINTY_COLUMNS` (all NaN when a column is absent)."""
    present = [c for c in UNCERTAINTY_COLUMNS if c in raw]
    values, bad = _numbers(raw[present]) if present else (pd.DataFrame(index=raw.index), None)
    if bad is not None and bad.to_numpy().any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        c = bad.columns[bad.iloc[i].to_numpy()][0]
        raise GroupDataError(f"{path}, line {i + 2}: column {c} holds {raw.at[i, c]!r}, not a "
                             f"number or n/a")
    return {c: values[c] if c in present else pd.Series(np.nan, index=raw.index)
            for c in UNCERTAINTY_COLUMNS}


def _labels(column: pd.Series, prefix: str) -> pd.Series:
    return pd.Series([T.strip_prefix(v, prefix) for v in as_text(column)], index=column.index,
                     dtype=object)


def find_lesion_tables(output_dir: Path, participants: Iterable[str] = ()) -> list[Path]:
    """Participant lesion tables under ``output_dir`` (restricted to ``participants`` if given)."""
    wanted = {T.strip_prefix(p, "sub-") for p in participants}
    found = sorted(Path(output_dir).glob("sub-*/sub-*_desc-lesions_stats.tsv"))
    return [p for p in found if not wanted or T.strip_prefix(p.parent.name, "sub-") in wanted]


def read_lesion_table(path: Path) -> pd.DataFrame:
    """One participant lesion table as typed columns (see the module docstring)."""
    folder_participant = T.strip_prefix(path.parent.name, "sub-")
    try:
        raw = T.read_tsv(path)
    except _READ_ERRORS as exc:
        raise GroupDataError(f"cannot read {path}: {exc} (a truncated or edited table?); rerun "
                             f"the participant level for sub-{folder_participant}") from exc
    missing = [c for c in LESION_TABLE_COLUMNS if c not in raw.columns]
    if missing:
        raise GroupDataError(f"{path}: missing column(s) {', '.join(missing)}; the lesion table "
                             f"must have the columns of interface.md (rerun the participant level)")
    raw = raw.reset_index(drop=True)
    numbers, bad = _numbers(raw[list(_FLOAT_COLUMNS)])
    if bad.to_numpy().any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        c = bad.columns[bad.iloc[i].to_numpy()][0]
        raise GroupDataError(f"{path}, line {i + 2}: column {c} holds {raw.at[i, c]!r}, not a "
                             f"number or n/a")
    participant = _labels(raw["participant_id"], "sub-")
    label = as_text(raw["contrast_agent"]).fillna("")
    lesion_id = as_text(raw["lesion_id"]).fillna("")
    canonical = {a: canonical_agent(a) or a for a in set(label) if a}
    is_control = lesion_id.str.startswith("control").astype(bool)
    truthy = as_text(raw["measurable"]).fillna("").str.lower().isin(_TRUE)
    # the time order the participant level decided (absent from tables of older versions)
    rank = (_numbers(raw[["session_order"]])[0]["session_order"] if "session_order" in raw
            else pd.Series(np.nan, index=raw.index))
    rank_source = (as_text(raw["session_order_source"]) if "session_order_source" in raw
                   else pd.Series(None, index=raw.index, dtype=object))
    return pd.DataFrame({
        "participant": participant.where(participant != "", folder_participant),
        "session": _labels(raw["session_id"], "ses-"),
        "agent_label": label, "lesion_id": lesion_id,
        "agent": pd.Series([canonical.get(a) for a in label], index=raw.index, dtype=object),
        "is_control": is_control, "measurable": truthy & ~is_control,
        **{c: numbers[c] for c in _FLOAT_COLUMNS},
        **_optional_numbers(raw, path), **{c: _flags(raw, c) for c in UNCERTAINTY_FLAGS},
        "session_order": rank, "session_order_source": rank_source})


def read_lesion_tables(paths: Iterable[Path]) -> pd.DataFrame:
    """Every lesion table of the cohort, one row per table row, in path then line order."""
    return pd.concat([read_lesion_table(p) for p in paths], ignore_index=True)


def _covariate_warnings(raw: pd.DataFrame, duplicated: pd.Series) -> list[str]:
    """Warnings on the covariates of ``participants.tsv``, row by row as the rows come."""
    events = [(i, 0, f"participants.tsv has several rows for sub-{raw.at[i, 'participant']}; "
                     f"using the first") for i in np.flatnonzero(duplicated)]
    values, bad = _numbers(raw[list(COVARIATES[:2])])
    invalid = values.notna() & ~(values > 0) | np.isinf(values)
    for k, c in enumerate(COVARIATES[:2], start=1):
        for i in np.flatnonzero((bad[c] | invalid[c]) & ~duplicated):
            what = "a number" if bad[c].iloc[i] else "a positive number"
            events.append((i, k, f"participants.tsv: {c} of sub-{raw.at[i, 'participant']} is "
                                 f"{raw.at[i, c]!r}, not {what}; treated as missing"))
    return [message for *_, message in sorted(events)]


def read_participants(bids_dir: Path | None, warnings: list[str]) -> pd.DataFrame:
    """Covariates (:data:`COVARIATES`) indexed by participant label; the first row counts."""
    path = Path(bids_dir) / "participants.tsv" if bids_dir else None
    try:
        raw = T.read_participants(bids_dir) if bids_dir else None
    except _READ_ERRORS as exc:
        raise GroupDataError(f"cannot read {path}: {exc}") from exc
    empty = pd.DataFrame({"dose_mg_per_kg": pd.Series(dtype="float64"),
                          "weight_kg": pd.Series(dtype="float64"),
                          "primary_tumor": pd.Series(dtype=object)},
                         index=pd.Index([], dtype=object, name="participant"))
    if raw is None:
        _warn(warnings, f"no participants.tsv in {bids_dir}: dose, weight and primary tumour are "
                        f"unknown, so every statistic that needs them is skipped")
        return empty
    if "participant_id" not in raw.columns:
        raise GroupDataError(f"{path}: no participant_id column (BIDS requires it)")
    for c in COVARIATES:
        if c not in raw.columns:
            _warn(warnings, f"participants.tsv has no {c} column: statistics that need it are "
                            f"skipped")
            raw[c] = None
    raw = raw.reset_index(drop=True)
    raw["participant"] = as_text(raw["participant"]).fillna("")
    duplicated = raw["participant"].duplicated()
    for message in _covariate_warnings(raw, duplicated):
        _warn(warnings, message)
    kept = raw[~duplicated]
    out = _numbers(kept[list(COVARIATES[:2])])[0]
    out = out.where((out > 0) & np.isfinite(out))
    out["primary_tumor"] = as_text(kept["primary_tumor"])
    out.index = pd.Index(kept["participant"].to_list(), dtype=object, name="participant")
    return out if len(out) else empty


def _parse_time(text) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t.replace(tzinfo=None)


def recorded_order(rows: pd.DataFrame) -> tuple[list[str], str] | None:
    """The session order a participant's lesion rows carry (``session_order``, written by the
    participant level), or None when a row lacks it (tables of an older version)."""
    if "session_order" not in rows.columns or rows["session_order"].isna().any() or rows.empty:
        return None
    ranks = rows.groupby("session", sort=False)["session_order"].agg(["min", "max"])
    if (ranks["min"] != ranks["max"]).any() or ranks["min"].duplicated().any():
        return None                          # inconsistent ranks: do not trust them
    source = "; ".join(dict.fromkeys(as_text(rows.get("session_order_source",
                                                       pd.Series(dtype=object))).dropna()))
    return list(ranks["min"].sort_values(kind="stable").index), source or "participant level"


def order_sessions(participant: str, sessions: Iterable[str], bids_dir: Path | None,
                   rows: pd.DataFrame | None = None) -> tuple[list[str], str]:
    """Sessions in time order and how it was decided (:func:`recorded_order` of the lesion
    ``rows``, else ``acq_time`` of sessions.tsv, else natural label order)."""
    sessions = sorted(set(sessions), key=T.natural_key)
    recorded = recorded_order(rows) if rows is not None else None
    if recorded is not None and set(recorded[0]) == set(sessions):
        return recorded
    try:
        df = T.read_sessions(bids_dir, participant) if bids_dir else None
    except _READ_ERRORS:
        df = None
    if df is not None and "session" in df.columns:
        acq = as_text(df["acq_time"]) if "acq_time" in df.columns else [None] * len(df)
        times = dict(zip(as_text(df["session"]).fillna(""), map(_parse_time, acq)))
        if sessions and all(times.get(s) is not None for s in sessions):
            return sorted(sessions, key=lambda s: (times[s], T.natural_key(s))), \
                E.SOURCE_SESSIONS_TSV
    return sessions, E.SOURCE_LABELS


def _warn(warnings: list[str], message: str) -> None:
    if message not in warnings:
        warnings.append(message)
        LOG.warning(message)


warn = _warn
