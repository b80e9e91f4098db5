"""Fixtures for the HPC tests: a running Slurm cluster (scripts/slurm_local.sh) or a skip."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def slurm_problem() -> str | None:
    """Why the Slurm tests cannot run here, or None when a cluster answers."""
    if not os.environ.get("SLURM_CONF"):
        return "no Slurm cluster: SLURM_CONF is not set (eval \"$(scripts/slurm_local.sh start)\")"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm cluster: sinfo/sbatch not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm cluster: sinfo failed ({exc})"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no usable Slurm node: sinfo said {out.stdout.strip() or out.stderr.strip()!r}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """Skip unless a Slurm cluster answers; make sure LOGNAME is set for nipype."""
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)
    from bids_agquant.cli.plugin import ensure_logname
    ensure_logname()
    return os.environ["SLURM_CONF"]
