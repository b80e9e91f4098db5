"""Fixtures of the container checks: a built image and a real engine (scripts/container_check.sh).

The tests run only when ``BIDS_AGQUANT_IMAGE`` names a built image (the script sets it after
building); otherwise they are skipped with that reason, also in CI, where the script runs them.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from containerkit import ENGINE, IMAGE


def image_problem() -> str | None:
    if not IMAGE:
        return ("no image: BIDS_AGQUANT_IMAGE is not set (scripts/container_check.sh builds the "
                "image and runs these tests)")
    if shutil.which(ENGINE) is None:
        return f"no container engine: {ENGINE} is not on PATH"
    found = subprocess.run([ENGINE, "image", "exists", IMAGE], capture_output=True)
    if found.returncode != 0:
        return f"{ENGINE} has no image {IMAGE}"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    problem = image_problem()
    if problem:
        pytest.skip(problem)
    return IMAGE
