"""Shared test fixtures.

External reference data (``../shared/eval`` beside the checkout, or ``$BIDS_AGQUANT_EVAL_DIR``) are
read in place, never copied into the repository. On a user's machine without them the tests that
need them skip with a reason; under CI (``CI=true``) a missing file is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BIDS = REPO / "data" / "sample_bids"


def eval_dir() -> Path:
    env = os.environ.get("BIDS_AGQUANT_EVAL_DIR")
    return Path(env) if env else REPO.parent / "shared" / "eval"


def require_eval(*parts: str) -> Path:
    """Path to an external reference file; skip (or fail under CI) when it is absent."""
    path = eval_dir().joinpath(*parts)
    if not path.exists():
        msg = (f"external reference data {path} not found; set BIDS_AGQUANT_EVAL_DIR to the "
               f"folder holding osipi_t1/, osipi_conc/, qmrlab_vfa/, ismrm2020_t1_challenge/")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path
