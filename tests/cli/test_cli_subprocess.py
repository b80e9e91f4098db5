"""``python -m bids_agquant`` as a real process: exit status and the first stderr line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*argv, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("NIPYPE_NO_ET", None)
    return subprocess.run([sys.executable, "-m", "bids_agquant", *map(str, argv)], env=env,
                          cwd=cwd or REPO, capture_output=True, text=True, timeout=300)


def test_version():
    proc = run("--version")
    assert proc.returncode == 0
    from bids_agquant import __version__
    assert proc.stdout.strip() == f"bids-agquant {__version__}"


def test_process_exit_code_and_one_line(short_ds, tmp_path):
    proc = run(short_ds, short_ds, "participant")
    assert proc.returncode == 64
    assert proc.stderr.splitlines()[0].startswith(
        f"bids-agquant: error: OUTPUT_DIR {short_ds} is BIDS_DIR itself")
    assert len(proc.stderr.splitlines()) == 1


def test_print_plan_in_a_process(short_ds, tmp_path):
    proc = run(short_ds, tmp_path / "out", "participant", "--print-plan", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ses-D1 AGuIX (agent AGuIX; pre: ses-D0)" in proc.stdout
    assert proc.stderr == ""                       # no library warnings on the console
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bids"]   # nothing written, not even crash files
