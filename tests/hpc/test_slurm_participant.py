"""The participant level of data/sample_bids on a real Slurm cluster equals a MultiProc run.

Two ways, as sites run it: nipype's SLURM plugin (`--use-plugin`, one job per pipeline node) and
an sbatch array (scripts/submit_slurm.sh: one task per participant, then the group level with
an afterok dependency). Every NIfTI (data array, affine, dtype) and every TSV must be identical
to the MultiProc outputs. Skipped unless a cluster answers (scripts/slurm_local.sh).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from testkit import sample_reference_run

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample_bids"
APP = [sys.executable, "-m", "bids_agquant"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                  os.environ.get("PYTHONPATH")]))}

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def participants() -> list[str]:
    with open(SAMPLE / "participants.tsv", newline="") as f:
        return [row["participant_id"] for row in csv.DictReader(f, delimiter="\t")]


def app(*args: str, timeout=1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([*APP, *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    return proc


def data_files(root: Path) -> dict[str, Path]:
    """Every NIfTI, TSV and transform of a derivatives folder, by relative path."""
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.name.endswith((".nii.gz", ".nii", ".tsv", ".mat", ".h5", ".txt"))}


def assert_same_outputs(reference: Path, other: Path, only: str = "sub-") -> None:
    ref = {k: v for k, v in data_files(reference).items() if k.startswith(only)}
    got = {k: v for k, v in data_files(other).items() if k.startswith(only)}
    assert ref, f"no outputs under {reference}"
    assert sorted(got) == sorted(ref)
    for rel, path in ref.items():
        if not rel.endswith((".nii.gz", ".nii")):
            assert got[rel].read_bytes() == path.read_bytes(), rel
            continue
        a, b = nib.load(path), nib.load(got[rel])
        assert a.shape == b.shape and a.get_data_dtype() == b.get_data_dtype(), rel
        assert np.array_equal(a.affine, b.affine), rel
        da, db = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
        assert np.array_equal(da, db, equal_nan=da.dtype.kind == "f"), rel


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """The reference: participant + group level of a copy of the sample data with MultiProc
    (testkit.sample_reference_run; kept for the container checks under .ci/run)."""
    if not (SAMPLE / "participants.tsv").is_file():
        pytest.fail(f"sample dataset {SAMPLE} is missing")
    bids, out, _ = sample_reference_run(tmp_path_factory, APP)
    return bids, out


@pytest.fixture(scope="module")
def multiproc(reference) -> Path:
    return reference[1]


def test_slurm_plugin_equals_multiproc(slurm_cluster, reference, multiproc, tmp_path):
    """One participant (CI time), one Slurm job per pipeline node."""
    label = participants()[0]
    plugin = tmp_path / "slurm.yml"
    plugin.write_text("plugin: SLURM\nplugin_args:\n  sbatch_args: '--time=30'\n")
    out, work = tmp_path / "out", tmp_path / "work"
    app(reference[0], out, "participant", "--participant-label", label, "-w", work,
        "--use-plugin", plugin)
    # the nodes really went through sbatch: nipype's job scripts and Slurm's job logs
    batch = list(work.rglob("batch/batchscript_*.sh"))
    logs = list(work.rglob("batch/slurm-*.out"))
    assert batch and len(logs) == len(batch)
    assert_same_outputs(multiproc, out, only=f"{label}/")


def test_array_job_equals_multiproc(slurm_cluster, reference, multiproc, tmp_path):
    """All participants at once, one CPU each (--nprocs 1 must not change a bit), then group."""
    out = tmp_path / "out"
    env = {**ENV, "AGQUANT_CMD": " ".join(APP), "WORK_ROOT": str(tmp_path / "work"),
           "STATUS_DIR": str(tmp_path / "status")}
    submit = subprocess.run([str(REPO / "scripts" / "submit_slurm.sh"), str(reference[0]),
                             str(out),
                             "--", "--time=30", "--cpus-per-task=1"],
                            capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert submit.returncode == 0, submit.stderr
    array, group = submit.stdout.split()
    # wait until both jobs have left the queue (the group level runs after the array)
    deadline = time.monotonic() + 1800
    while subprocess.run(["squeue", "-h", "-j", f"{array},{group}", "-o", "%i"],
                         capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "array job still queued after 30 min"
        time.sleep(1)

    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.out")))
    # one task per participant, each recorded with exit code 0
    status = {}
    for f in (tmp_path / "status").glob("sub-*.tsv"):
        row = f.read_text().splitlines()[1].split("\t")
        status[row[0]] = int(row[1])
    assert status == {p: 0 for p in participants()}, logs[-3000:]
    # Slurm's own record: every task COMPLETED with exit code 0, then the group job
    shown = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True,
                           text=True).stdout.splitlines()
    assert len(shown) == len(participants())
    assert all("JobState=COMPLETED" in s and "ExitCode=0:0" in s for s in shown), shown
    group_job = subprocess.run(["scontrol", "-o", "show", "job", group], capture_output=True,
                               text=True).stdout
    assert "JobState=COMPLETED" in group_job, logs[-3000:]

    assert_same_outputs(multiproc, out)
    assert_same_outputs(multiproc, out, only="group")
