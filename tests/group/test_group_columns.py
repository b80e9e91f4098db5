"""Every group table run_group writes has its columns in the registry, and its JSON dictionary
is the registry's text (bids_agquant.bids.columns)."""
from __future__ import annotations

import json

from bids_agquant.bids import columns as C
from bids_agquant.bids.tables import read_tsv


def test_group_tables_and_dictionaries_come_from_the_registry(paper_group):
    _, out = paper_group
    group = out / "group"
    written = sorted(p.stem for p in group.glob("*.tsv"))
    registered = [t for t in C.tables() if t not in C.PARTICIPANT_TABLES]
    assert written == sorted(registered)
    for name in written:
        header = list(read_tsv(group / f"{name}.tsv").columns)
        assert set(header) <= set(C.columns(name)), name
        dictionary = json.loads((group / f"{name}.json").read_text())
        assert dictionary == C.dictionary(name, header)
        assert list(dictionary) == header
