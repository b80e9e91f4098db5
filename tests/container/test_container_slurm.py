"""The image under Slurm, as a cluster site runs it (issue 14): scripts/submit_slurm.sh with
``CONTAINER_ENGINE=podman`` on the one-node cluster that CI starts (scripts/slurm_local.sh).
One array task per participant runs the image (the job's own uid, /bids read-only, no network),
then the group level runs in the image after the array; every map and table equals the venv run.

Needs a built image and a cluster: skipped without them on a user's machine, a failure in CI
(``CI=true``), where .ci/run starts the cluster before scripts/container_check.sh.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from containerkit import ENGINE, checksums, same_outputs, timed
from evaldata import REPO
from testkit import slurm_problem

pytestmark = [pytest.mark.container, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster():
    problem = slurm_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)
    from bids_agquant.cli.plugin import ensure_logname
    ensure_logname()


def wait_for(jobs: str, limit_s: float = 1800) -> None:
    deadline = time.monotonic() + limit_s
    while subprocess.run(["squeue", "-h", "-j", jobs, "-o", "%i"], capture_output=True,
                         text=True).stdout.strip():
        assert time.monotonic() < deadline, f"jobs {jobs} still queued after {limit_s} s"
        time.sleep(1)


def test_array_job_runs_the_image(image, cluster, bids_copy, venv_outputs, tmp_path):
    before = checksums(bids_copy)
    out = tmp_path / "out"
    env = {**os.environ, "IMAGE": image, "CONTAINER_ENGINE": ENGINE,
           "WORK_ROOT": str(tmp_path / "work"), "STATUS_DIR": str(tmp_path / "status")}
    env.pop("AGQUANT_CMD", None)

    def submit_and_wait():
        proc = subprocess.run([str(REPO / "scripts" / "submit_slurm.sh"), str(bids_copy),
                               str(out), "--", "--time=30", "--cpus-per-task=1"],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        array, group = proc.stdout.split()
        wait_for(f"{array},{group}")
        return array, group

    array, group = timed("Slurm array + group in the image", submit_and_wait)
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.out")))
    # every task really ran the image, with the job's uid and no network
    assert logs.count(f"{ENGINE} run --rm --network none") >= 2, logs[-3000:]
    status = {}
    for f in (tmp_path / "status").glob("sub-*.tsv"):
        row = f.read_text().splitlines()[1].split("\t")
        status[row[0]] = int(row[1])
    participants = sorted(p.name for p in venv_outputs.glob("sub-*") if p.is_dir())
    assert status == {p: 0 for p in participants}, logs[-3000:]
    shown = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True,
                           text=True).stdout.splitlines()
    assert len(shown) == len(participants)
    assert all("JobState=COMPLETED" in s and "ExitCode=0:0" in s for s in shown), shown
    group_job = subprocess.run(["scontrol", "-o", "show", "job", group], capture_output=True,
                               text=True).stdout
    assert "JobState=COMPLETED" in group_job, logs[-3000:]

    assert checksums(bids_copy) == before, "a job changed the read-only input dataset"
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Container"]["Type"] == Path(ENGINE).name
    print(f"\n[container compare] Slurm array in the image vs venv: "
          f"{same_outputs(venv_outputs, out, bids_copy)}")
