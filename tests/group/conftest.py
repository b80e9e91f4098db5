"""Fixtures of the group-level tests (the cohort builder is in ``paper_cohort.py``)."""
from __future__ import annotations

import pytest
from paper_cohort import write_paper_cohort


@pytest.fixture(scope="session")
def paper_group(tmp_path_factory):
    """The paper cohort after run_group: (bids_dir, output_dir)."""
    from bids_agquant.config import Config
    from bids_agquant.group import run_group
    bids, out = write_paper_cohort(tmp_path_factory.mktemp("paper"))
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    return bids, out
