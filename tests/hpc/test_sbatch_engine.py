"""The Slurm scripts refuse a container engine they cannot run, before anything starts.

Run directly (as Slurm would run the batch script, with the task's variables set); the engine
really used by a job is tested on a cluster in tests/container/test_container_slurm.py.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from evaldata import REPO, SAMPLE_BIDS


@pytest.mark.parametrize("script", ["sbatch_participant.sh", "sbatch_group.sh"])
def test_unknown_engine_is_refused_with_exit_64(script, tmp_path):
    env = {**os.environ, "BIDS_DIR": str(SAMPLE_BIDS), "OUTPUT_DIR": str(tmp_path / "out"),
           "SLURM_ARRAY_TASK_ID": "1", "IMAGE": "bids_agquant:0.1.0",
           "CONTAINER_ENGINE": "rkt", "WORK_ROOT": str(tmp_path / "work"),
           "STATUS_DIR": str(tmp_path / "status")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / script)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 64, proc.stderr
    assert "CONTAINER_ENGINE=rkt: use apptainer, singularity, podman or docker" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_engine_missing_on_the_node_is_named(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BIDS_DIR": str(SAMPLE_BIDS),
           "OUTPUT_DIR": str(tmp_path / "out"), "SLURM_ARRAY_TASK_ID": "1",
           "IMAGE": str(tmp_path / "bids_agquant.sif"), "WORK_ROOT": str(tmp_path / "work"),
           "STATUS_DIR": str(tmp_path / "status")}
    if any(os.access(os.path.join(d, e), os.X_OK) for d in ("/usr/bin", "/bin")
           for e in ("apptainer", "singularity")):
        pytest.skip("apptainer or singularity is installed here")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "sbatch_participant.sh")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 64, proc.stderr
    assert "CONTAINER_ENGINE=singularity: singularity is not on PATH" in proc.stderr
