"""Fixtures for the HPC tests: a running Slurm cluster (scripts/slurm_local.sh) or a skip."""
from __future__ import annotations

import os

import pytest

from testkit import slurm_problem


@pytest.fixture(scope="session")
def slurm_cluster():
    """Skip unless a Slurm cluster answers; make sure LOGNAME is set for nipype."""
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)
    from bids_agquant.cli.plugin import ensure_logname
    ensure_logname()
    return os.environ["SLURM_CONF"]
