"""Group level, sites: where each session was acquired, and its QA, for a multi-centre cohort.

- :func:`session_sites`: per participant and session the ``site`` (``participants.tsv``
  column ``site`` when present, else n/a), ``manufacturer``, ``manufacturers_model_name`` and
  ``magnetic_field_strength_t`` (from the sidecars of the session's T1 maps in OUTPUT_DIR, which
  keep these acquisition fields of the input), and the session's QA (``session_qa_flagged``,
  ``session_qa_flags``) from the participant QA tables (``sub-<p>_desc-qa_stats.tsv``; n/a for
  outputs of versions before them).
- :func:`qa_by_site`: the ``qa_by_site`` group table, one row per site and scanner: sessions,
  flagged sessions, how often each metric was flagged and the median of the main metrics.

With ``--exclude-qa-flagged`` the group level leaves the rows of flagged sessions out of every
statistic (:func:`exclude_flagged`); without it they are kept and annotated.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bids_agquant.bids import derivatives as D
from bids_agquant.bids import tables as T
from bids_agquant.errors import GroupDataError

__all__ = ["SITE_COLUMNS", "read_qa_tables", "session_sites", "qa_by_site", "exclude_flagged"]

#: Columns :func:`session_sites` adds to every lesion row.
SITE_COLUMNS = ("site", "manufacturer", "manufacturers_model_name", "magnetic_field_strength_t",
                "session_qa_flagged", "session_qa_flags")
#: Metrics whose median per site the ``qa_by_site`` table gives (column name -> metric).
_MEDIANS = {"nawm_t1_median_s": "nawm_t1_s", "snr_t1w_median": "snr_t1w",
            "registration_ncc_median": "registration_ncc",
            "vfa_systematic_residual_median": "vfa_systematic_residual"}
_SIDECAR = {"manufacturer": "Manufacturer", "manufacturers_model_name": "ManufacturersModelName",
            "magnetic_field_strength_t": "MagneticFieldStrength"}


def read_qa_tables(output_dir: Path, participants) -> pd.DataFrame:
    """Every participant QA table found (``participant``, ``session`` labels without prefix,
    ``metric``, ``value`` float, ``qa_flag`` bool, ``contrast_state``, ``item``)."""
    frames = []
    for p in participants:
        path = Path(output_dir) / D.participant_path("qa_table", p)
        if not path.is_file():
            continue
        try:
            df = T.read_tsv(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise GroupDataError(f"cannot read {path}: {exc}; rerun the participant level for "
                                 f"sub-{p}") from exc
        missing = {"session_id", "metric", "value", "qa_flag"} - set(df.columns)
        if missing:
            raise GroupDataError(f"{path}: no column {', '.join(sorted(missing))} (not a QA "
                                 f"table of this app); rerun the participant level for sub-{p}")
        frames.append(pd.DataFrame({
            "participant": p, "session": df["session_id"].str.removeprefix("ses-"),
            "contrast_state": df.get("contrast_state"), "item": df.get("item"),
            "metric": df["metric"], "value": pd.to_numeric(df["value"], errors="coerce"),
            "qa_flag": df["qa_flag"].astype(str).str.lower().eq("true")}))
    if not frames:
        return pd.DataFrame(columns=["participant", "session", "contrast_state", "item",
                                     "metric", "value", "qa_flag"])
    return pd.concat(frames, ignore_index=True)


def _scanner(output_dir: Path, participant: str, session: str) -> dict:
    """Manufacturer, model and field strength from the first T1 map sidecar of the session."""
    folder = Path(output_dir) / f"sub-{participant}" / f"ses-{session}" / "anat"
    for side in sorted(folder.glob("*_T1map.json")):
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        return {k: meta.get(v) for k, v in _SIDECAR.items()}
    return {k: None for k in _SIDECAR}


def _site_column(participants_tsv: pd.DataFrame | None) -> dict:
    if participants_tsv is None or "site" not in participants_tsv.columns:
        return {}
    labels = participants_tsv["participant_id"].astype(str).str.removeprefix("sub-")
    sites = participants_tsv["site"]
    return {p: (None if pd.isna(s) else str(s)) for p, s in zip(labels, sites)}


def session_sites(output_dir: Path, bids_dir: Path | None, lesions: pd.DataFrame,
                  qa: pd.DataFrame) -> pd.DataFrame:
    """One row per (participant, session) of ``lesions`` with :data:`SITE_COLUMNS`."""
    raw = None
    if bids_dir is not None and (Path(bids_dir) / "participants.tsv").is_file():
        try:
            raw = T.read_participants(bids_dir)
        except (OSError, UnicodeDecodeError, ValueError):
            raw = None          # read_participants of the group level reports it
    site = _site_column(raw)
    has_qa = set(qa["participant"]) if len(qa) else set()
    rows = []
    for p, s in dict.fromkeys(zip(lesions["participant"], lesions["session"])):
        flagged = qa.loc[(qa["participant"] == p) & (qa["session"] == s)
                         & qa["qa_flag"].astype(bool)]
        names = "; ".join(f"{c} {i} {m}" for c, i, m in
                          zip(flagged["contrast_state"], flagged["item"], flagged["metric"]))
        rows.append({"participant": p, "session": s, "site": site.get(p),
                     **_scanner(output_dir, p, s),
                     "session_qa_flagged": (bool(len(flagged)) if p in has_qa else None),
                     "session_qa_flags": names or None})
    return pd.DataFrame(rows, columns=["participant", "session", *SITE_COLUMNS])


def exclude_flagged(lesions: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows of sessions without a QA flag, and the sessions left out (``sub-<p> ses-<s>``)."""
    flagged = lesions["session_qa_flagged"].eq(True)
    left_out = list(dict.fromkeys(f"sub-{p} ses-{s}" for p, s in
                                  zip(lesions.loc[flagged, "participant"],
                                      lesions.loc[flagged, "session"])))
    return lesions[~flagged].reset_index(drop=True), left_out


def qa_by_site(sites: pd.DataFrame, qa: pd.DataFrame) -> list[dict]:
    """Rows of the ``qa_by_site`` table (site n/a groups the sessions without a site)."""
    keys = ["site", "manufacturer", "manufacturers_model_name", "magnetic_field_strength_t"]
    frame = sites.copy()
    for k in keys:
        frame[k] = frame[k].astype(object).where(frame[k].notna(), "n/a")
    merged = qa.merge(frame[["participant", "session", *keys]], on=["participant", "session"],
                      how="inner")
    out = []
    for key, group in frame.groupby(keys, sort=True):
        q = merged
        for k, v in zip(keys, key):
            q = q[q[k] == v]
        flagged = q.loc[q["qa_flag"].astype(bool)]
        counts = flagged["metric"].value_counts()
        row = dict(zip(keys, (None if v == "n/a" else v for v in key)))
        row.update({
            "n_participants": int(group["participant"].nunique()),
            "n_sessions": int(len(group)),
            "n_sessions_with_qa": int(group["session_qa_flagged"].notna().sum()),
            "n_sessions_flagged": int(group["session_qa_flagged"].eq(True).sum()),
            "flagged_metrics": "; ".join(f"{m} ({n})" for m, n in counts.items()) or None})
        for col, metric in _MEDIANS.items():
            v = q.loc[q["metric"] == metric, "value"].to_numpy(float)
            v = v[np.isfinite(v)]
            row[col] = float(np.median(v)) if v.size else None
        out.append(row)
    _relative_to_field(out)
    return out


def _relative_to_field(rows: list[dict]) -> None:
    """``nawm_t1_relative_to_field``: each row's NAWM T1 median over the median of those of
    every row at the same field strength. The VFA T1 of one phantom differs between platforms
    by 11-23 % (Bane et al. 2018, MRM), and healthy white matter is a phantom every session
    carries: a site far from the others at its field strength reads T1 (and concentration)
    with a bias of its own."""
    for row in rows:
        peers = [r["nawm_t1_median_s"] for r in rows
                 if r["magnetic_field_strength_t"] == row["magnetic_field_strength_t"]
                 and r["magnetic_field_strength_t"] is not None
                 and r["nawm_t1_median_s"] is not None]
        own = row["nawm_t1_median_s"]
        row["nawm_t1_relative_to_field"] = (float(own / np.median(peers))
                                            if own is not None and peers else None)
