"""Fixtures for the command-line tests: tiny trial datasets and an in-process ``main`` runner."""
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


CliResult = tinybids.CliResult


@pytest.fixture
def run_cli(capsys):
    """Call ``bids_agquant.cli.run.main(argv)`` in-process; return code, stdout and stderr."""
    from bids_agquant.cli.run import main

    def _run(*argv) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@pytest.fixture
def short_ds(tmp_path) -> Path:
    """One participant, sessions D0 (pre + Dotarem) and D1 (AGuIX), B1 maps and a lesion mask."""
    return tinybids.make_dataset(tmp_path / "bids", participants=("01",), sessions=SHORT_SESSIONS,
                                 distractors=False)


@pytest.fixture
def trial_ds(tmp_path) -> Path:
    """Two participants over the four trial sessions, with FLAIR/SWI/DWI distractors."""
    return tinybids.make_dataset(tmp_path / "bids", participants=("01", "02"))
