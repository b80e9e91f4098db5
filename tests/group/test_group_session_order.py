"""The group level orders a participant's sessions as the participant level recorded it.

The participant level decides the time order from sessions.tsv, scans.tsv or the sidecars'
acquisition times (bids/evidence.py) and writes it into every lesion row (``session_order``,
``session_order_source``); the group level must not fall back to label order when that exists.
"""
from __future__ import annotations

import pandas as pd

from bids_agquant.bids.evidence import SOURCE_LABELS, SOURCE_SCANS_TSV, SOURCE_SESSIONS_TSV
from bids_agquant.group.load import order_sessions, recorded_order


def rows(ranks: dict[str, float | None], source=SOURCE_SCANS_TSV) -> pd.DataFrame:
    data = [(s, r, source) for s, r in ranks.items() for _ in range(2)]   # 2 rows per session
    return pd.DataFrame(data, columns=["session", "session_order", "session_order_source"])


def test_recorded_order_wins_over_labels(tmp_path):
    # label order would be early < late < mid; the acquisition times say mid was second
    r = rows({"early": 1, "late": 3, "mid": 2})
    assert order_sessions("01", r["session"], tmp_path, r) == (["early", "mid", "late"],
                                                                 SOURCE_SCANS_TSV)


def test_without_recorded_order_sessions_tsv_then_labels(tmp_path):
    r = rows({"v10": None, "v2": None})
    assert recorded_order(r) is None
    assert order_sessions("01", r["session"], tmp_path, r) == (["v2", "v10"], SOURCE_LABELS)
    sub = tmp_path / "sub-01"
    sub.mkdir()
    (sub / "sub-01_sessions.tsv").write_text("session_id\tacq_time\nses-v2\t2024-03-01T10:00:00\n"
                                             "ses-v10\t2024-01-01T10:00:00\n")
    assert order_sessions("01", r["session"], tmp_path, r) == (["v10", "v2"],
                                                                 SOURCE_SESSIONS_TSV)


def test_inconsistent_or_partial_ranks_are_not_trusted(tmp_path):
    bad = rows({"a": 2, "b": 1})
    bad.loc[0, "session_order"] = 1                    # session a with ranks 1 and 2
    assert recorded_order(bad) is None
    assert recorded_order(rows({"a": 1, "b": 1})) is None        # two sessions, one rank
    partial = rows({"a": 2, "b": None})
    assert order_sessions("01", partial["session"], tmp_path, partial)[1] == SOURCE_LABELS
