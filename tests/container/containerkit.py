"""The engine and image the container checks use (set by scripts/container_check.sh), and the
helpers of the checks: running a command or the image, checksums, comparing output folders."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from evaldata import REPO

ENGINE = os.environ.get("BIDS_AGQUANT_CONTAINER_ENGINE", "podman")
IMAGE = os.environ.get("BIDS_AGQUANT_IMAGE")
#: the image's own user (Dockerfile ``useradd --uid``)
IMAGE_UID = 1000
VENV_APP = Path(sys.executable).parent / "bids-agquant"
COMPARE = REPO / "scripts" / "compare_outputs.py"
TIMES: dict[str, float] = {}


def run(cmd, *, timeout=1800, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kw)


def engine_run(image, *args, mounts=(), options=(), timeout=1800):
    """``ENGINE run --rm`` of the image; mounts are (host, inside, mode or None)."""
    cmd = [ENGINE, "run", "--rm", *options]
    for host, inside, mode in mounts:
        cmd += ["-v", f"{host}:{inside}" + (f":{mode}" if mode else "")]
    return run([*cmd, image, *args], timeout=timeout)


def writable_mode(folder: Path) -> str | None:
    """The mount mode that lets the image's user write ``folder``: podman hands it over itself
    (``:U``); docker has no such option, so the folder is given to that uid first (as a site
    does with chown)."""
    if ENGINE == "podman":
        return "U"
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    return None


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def timed(label, fn):
    t0 = time.time()
    out = fn()
    TIMES[label] = time.time() - t0
    print(f"\n[container timing] {ENGINE} {label}: {TIMES[label]:.0f} s")
    return out


def ok(proc, what):
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


def same_outputs(before: Path, after: Path, bids: Path) -> str:
    """compare_outputs.py: the venv run read ``bids``, the container the same data as /bids."""
    proc = run([sys.executable, COMPARE, before, after, "--same-path", bids, "/bids"])
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout.strip().splitlines()[-1]
