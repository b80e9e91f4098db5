"""Fixtures of the container checks: a built image and a real engine (scripts/container_check.sh),
the sample dataset and the venv run the container runs are compared with.

The tests run only when ``BIDS_AGQUANT_IMAGE`` names a built image (the script sets it after
building); otherwise they are skipped with that reason, also in CI, where the script runs them.
``BIDS_AGQUANT_SAMPLE_REFERENCE`` (set by .ci/run and the script) is a folder where the venv run
is kept, so that the Slurm tests, the podman and the docker pass compare with one venv run.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from containerkit import ENGINE, IMAGE, TIMES, VENV_APP, run
from testkit import sample_reference_run


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


@pytest.fixture(scope="session")
def reference(image, tmp_path_factory) -> tuple[Path, Path]:
    """(the sample dataset, copied so that a change by a container would be seen; the venv run's
    participant + group outputs of that copy): testkit.sample_reference_run, shared with the
    Slurm tests when BIDS_AGQUANT_SAMPLE_REFERENCE keeps it."""
    bids, out, seconds = sample_reference_run(tmp_path_factory, [VENV_APP])
    TIMES["venv participant"] = seconds
    print(f"\n[container timing] venv participant: {seconds:.0f} s")
    return bids, out


@pytest.fixture(scope="session")
def bids_copy(reference) -> Path:
    return reference[0]


@pytest.fixture(scope="session")
def venv_outputs(reference) -> Path:
    return reference[1]
