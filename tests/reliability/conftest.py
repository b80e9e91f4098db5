"""Fixtures of the reliability tests: a small phantom dataset (the in-process runner ``run_cli``
is the root conftest's)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relkit  # noqa: E402


@pytest.fixture(scope="session")
def phantom_src(tmp_path_factory) -> Path:
    """One participant, sessions 'pre' (pre + Dotarem) and 'inj' (AGuIX), written once per worker.

    Tests never modify it: they break a copy (:func:`phantom_copy`)."""
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("rel_phantom")
    simulate.simulate_dataset(root / "bids", preset="small", n_participants=1,
                              sessions=["pre", "inj"], seed=3)
    return root / "bids"


@pytest.fixture
def phantom_copy(phantom_src, tmp_path) -> Path:
    """A private copy of the phantom, to break one thing in."""
    return relkit.copy_dataset(phantom_src, tmp_path / "bids")
