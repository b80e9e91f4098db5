"""Warnings of nodes taken from the cache are shown again (log, console, report).

A rerun with the same work dir does not run cached nodes, so their worker-side warnings would
be missing from the new run's log and report.  Here a control diameter that cannot fit makes
the region node warn; a second run into another output folder, same work dir, takes that node
from the cache and must still log the warning and show it in the participant report.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NIPYPE_NO_ET": "1"}
    return subprocess.run([sys.executable, "-m", "bids_agquant", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=900)


def test_a_cached_node_repeats_its_warning(tmp_path):
    from bids_agquant.simulate import simulate_dataset

    ds = tmp_path / "bids"
    simulate_dataset(ds, preset="small", n_participants=1, sessions=["pre", "inj"], seed=12)
    work = tmp_path / "work"
    runs = {}
    for name in ("first", "again"):
        out = tmp_path / name
        res = _run(ds, out, "participant", "-w", work, "--nprocs", "2",
                   "--control-diameter-mm", "60")
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = (out, res)
    for name, (out, res) in runs.items():
        shrunk = [ln for ln in res.stdout.splitlines()
                  if "WARNING" in ln and "control regions shrunk from 60 to" in ln]
        assert len(shrunk) == 1, (name, res.stdout[-3000:])
        (log,) = (out / "logs").glob("sub-01_*.log")
        assert "control regions shrunk from 60 to" in log.read_text()
        assert "control regions shrunk from 60 to" in (out / "sub-01.html").read_text()
    again = runs["again"][1].stdout
    assert "regions_wf.prepare_regions: cached" in again      # the node did not run again
