"""Group level, reading: participant lesion tables and covariates into typed rows.

BIDS ``n/a`` and the TSV rules are those of :mod:`bids_agquant.bids.tables` (read once there);
this module adds what the group level needs: the required columns of a lesion table
(:data:`LESION_TABLE_COLUMNS`), canonical agent names and the time order of each participant's
sessions (``acq_time`` of ``sessions.tsv`` when every session has one, else natural label order).
"""
from __future__ import annotations

import csv
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Iterable

from bids_agquant.bids import tables as T
from bids_agquant.errors import GroupDataError, GroupInputError
from bids_agquant.qmri.relaxivity import canonical_agent

__all__ = ["GroupInputError", "GroupDataError", "LESION_TABLE_COLUMNS", "find_lesion_tables",
           "read_lesion_table", "read_participants", "order_sessions", "warn"]

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
_MISSING = T.MISSING
_NAN = float("nan")


_strip = T.strip_prefix


def _to_float(text) -> float:
    if text is None:
        return _NAN
    s = str(text).strip()
    if s.lower() in _MISSING:
        return _NAN
    return float(s)


def _to_bool(text) -> bool | None:
    s = "" if text is None else str(text).strip().lower()
    if s in ("true", "1", "yes", "y", "t", "1.0"):
        return True
    if s in ("false", "0", "no", "n", "f", "0.0"):
        return False
    return None


def _rows(df) -> tuple[list[str], list[dict]]:
    """Columns and rows (text, None when missing) of a :func:`bids_agquant.bids.tables` frame."""
    return list(df.columns), [{k: T.cell(r, k) for k in df.columns} for r in df.to_dict("records")]


def _read_tsv(path: Path, hint: str = "") -> tuple[list[str], list[dict]]:
    try:
        return _rows(T.read_tsv(path))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise GroupDataError(f"cannot read {path}: {exc}{hint}") from exc


def find_lesion_tables(output_dir: Path, participants: Iterable[str] = ()) -> list[Path]:
    """Participant lesion tables under ``output_dir`` (restricted to ``participants`` if given)."""
    wanted = {_strip(p, "sub-") for p in participants}
    found = sorted(Path(output_dir).glob("sub-*/sub-*_desc-lesions_stats.tsv"))
    return [p for p in found if not wanted or _strip(p.parent.name, "sub-") in wanted]


def read_lesion_table(path: Path) -> list[dict]:
    """Parse one participant lesion table into typed rows (floats, bools, canonical agents)."""
    folder_participant = _strip(path.parent.name, "sub-")
    columns, raw = _read_tsv(path, f" (a truncated or edited table?); rerun the participant "
                                   f"level for sub-{folder_participant}")
    missing = [c for c in LESION_TABLE_COLUMNS if c not in columns]
    if missing:
        raise GroupDataError(f"{path}: missing column(s) {', '.join(missing)}; the lesion table "
                             f"must have the columns of interface.md (rerun the participant level)")
    rows = []
    for i, r in enumerate(raw, start=2):
        row = {"participant": _strip(r["participant_id"], "sub-") or folder_participant,
               "session": _strip(r["session_id"], "ses-"),
               "agent_label": (r["contrast_agent"] or "").strip(),
               "lesion_id": (r["lesion_id"] or "").strip()}
        label = row["agent_label"]
        row["agent"] = None if label.lower() in _MISSING else (canonical_agent(label) or label)
        row["is_control"] = row["lesion_id"].startswith("control")
        row["measurable"] = bool(_to_bool(r["measurable"])) and not row["is_control"]
        for c in _FLOAT_COLUMNS:
            try:
                row[c] = _to_float(r[c])
            except ValueError:
                raise GroupDataError(f"{path}, line {i}: column {c} holds {r[c]!r}, not a "
                                     f"number or n/a") from None
        rows.append(row)
    return rows


def read_participants(bids_dir: Path | None, warnings: list[str]) -> dict[str, dict]:
    """Covariates per participant label: dose_mg_per_kg, weight_kg (floats), primary_tumor."""
    path = Path(bids_dir) / "participants.tsv" if bids_dir else None
    try:
        df = T.read_participants(bids_dir) if bids_dir else None
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise GroupDataError(f"cannot read {path}: {exc}") from exc
    if df is None:
        _warn(warnings, f"no participants.tsv in {bids_dir}: dose, weight and primary tumour are "
                        f"unknown, so every statistic that needs them is skipped")
        return {}
    columns, raw = _rows(df)
    if "participant_id" not in columns:
        raise GroupDataError(f"{path}: no participant_id column (BIDS requires it)")
    for c in ("dose_mg_per_kg", "weight_kg", "primary_tumor"):
        if c not in columns:
            _warn(warnings, f"participants.tsv has no {c} column: statistics that need it are "
                            f"skipped")
    out = {}
    for r in raw:
        p = r.get("participant") or ""
        if p in out:      # as the participant level: the first row counts
            _warn(warnings, f"participants.tsv has several rows for sub-{p}; using the first")
            continue
        cov = {}
        for c in ("dose_mg_per_kg", "weight_kg"):
            try:
                cov[c] = _to_float(r.get(c))
            except ValueError:
                _warn(warnings, f"participants.tsv: {c} of sub-{p} is {r.get(c)!r}, not a "
                                f"number; treated as missing")
                cov[c] = _NAN
            if not (cov[c] > 0 and math.isfinite(cov[c])) and not math.isnan(cov[c]):
                _warn(warnings, f"participants.tsv: {c} of sub-{p} is {r.get(c)!r}, not a "
                                f"positive number; treated as missing")
                cov[c] = _NAN
        tumor = (r.get("primary_tumor") or "").strip()
        cov["primary_tumor"] = None if tumor.lower() in _MISSING else tumor
        out[p] = cov
    return out


def _parse_time(text) -> datetime | None:
    s = "" if text is None else str(text).strip()
    if not s or s.lower() in _MISSING:
        return None
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    return t.replace(tzinfo=None)


def order_sessions(participant: str, sessions: Iterable[str], bids_dir: Path | None
                   ) -> tuple[list[str], str]:
    """Sessions in time order and how it was decided (``acq_time`` or natural label order)."""
    sessions = sorted(set(sessions), key=T.natural_key)
    try:
        df = T.read_sessions(bids_dir, participant) if bids_dir else None
    except (OSError, UnicodeDecodeError, csv.Error, ValueError):
        df = None
    if df is not None:
        _, raw = _rows(df)
        times = {r.get("session") or "": _parse_time(r.get("acq_time")) for r in raw}
        if sessions and all(times.get(s) is not None for s in sessions):
            return sorted(sessions, key=lambda s: (times[s], T.natural_key(s))), \
                "sessions.tsv acq_time"
    return sessions, "session labels (natural order)"


def _warn(warnings: list[str], message: str) -> None:
    if message not in warnings:
        warnings.append(message)
        LOG.warning(message)


warn = _warn
