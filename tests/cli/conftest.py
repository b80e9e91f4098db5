"""Fixtures for the command-line tests: tiny trial datasets (the in-process runner ``run_cli`` is
the root conftest's)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinybids  # noqa: E402

#: A short protocol (fast): baseline pre + Dotarem, then an AGuIX session.
SHORT_SESSIONS = {
    "D0": (True, ["Dotarem"], "2020-01-06T09:00:00"),
    "D1": (False, ["AGuIX"], "2020-01-07T11:00:00"),
}


@pytest.fixture
def short_ds(tmp_path) -> Path:
    """One participant, sessions D0 (pre + Dotarem) and D1 (AGuIX), B1 maps and a lesion mask."""
    return tinybids.make_dataset(tmp_path / "bids", participants=("01",), sessions=SHORT_SESSIONS,
                                 distractors=False)


@pytest.fixture
def trial_ds(tmp_path) -> Path:
    """Two participants over the four trial sessions, with FLAIR/SWI/DWI distractors."""
    return tinybids.make_dataset(tmp_path / "bids", participants=("01", "02"))
