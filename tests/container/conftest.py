"""Fixtures of the container checks: a built image and a real engine (scripts/container_check.sh),
the sample dataset and the venv run the container runs are compared with.

The tests run only when ``BIDS_AGQUANT_IMAGE`` names a built image (the script sets it after
building); otherwise they are skipped with that reason, also in CI, where the script runs them.
``BIDS_AGQUANT_CONTAINER_REFERENCE`` (set by the script) is a folder where the venv run is kept,
so that the podman and the docker pass compare with one venv run instead of making two.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from containerkit import ENGINE, IMAGE, TIMES, VENV_APP, ok, run
from evaldata import SAMPLE_BIDS


def image_problem() -> str | None:
    if not IMAGE:
        return ("no image: BIDS_AGQUANT_IMAGE is not set (scripts/container_check.sh builds the "
                "image and runs these tests)")
    if shutil.which(ENGINE) is None:
        return f"no container engine: {ENGINE} is not on PATH"
    found = run([ENGINE, "image", "inspect", IMAGE])
    if found.returncode != 0:
        return f"{ENGINE} has no image {IMAGE}: {found.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    problem = image_problem()
    if problem:
        pytest.skip(problem)
    return IMAGE


def _reference_root(tmp_path_factory) -> Path:
    kept = os.environ.get("BIDS_AGQUANT_CONTAINER_REFERENCE")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="session")
def reference(image, tmp_path_factory) -> tuple[Path, Path]:
    """(the sample dataset, copied so that a change by a container would be seen; the venv run's
    participant + group outputs of that copy)."""
    root = _reference_root(tmp_path_factory)
    bids, out, done = root / "bids", root / "venv_out", root / "venv_seconds"
    if done.is_file():
        TIMES["venv participant"] = float(done.read_text())
        return bids, out
    for stale in (bids, out, root / "venv_work"):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(SAMPLE_BIDS, bids)
    os.chmod(root, 0o755)
    t0 = time.time()
    ok(run([VENV_APP, bids, out, "participant", "-w", root / "venv_work", "--nprocs", "2"]),
       "venv participant")
    seconds = time.time() - t0
    ok(run([VENV_APP, bids, out, "group"]), "venv group")
    shutil.rmtree(root / "venv_work", ignore_errors=True)
    TIMES["venv participant"] = seconds
    print(f"\n[container timing] venv participant: {seconds:.0f} s")
    done.write_text(f"{seconds:.1f}")
    return bids, out


@pytest.fixture(scope="session")
def bids_copy(reference) -> Path:
    return reference[0]


@pytest.fixture(scope="session")
def venv_outputs(reference) -> Path:
    return reference[1]
