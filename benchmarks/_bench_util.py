"""Helpers of the workflow benchmarks: run a command while sampling the memory of its process tree."""
from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (bytes)."""
    kids = _children()
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(kids.get(p, []))
    return total


def run_measured(cmd, *, env=None, cwd=None, interval=0.2, log=None) -> dict:
    """Run ``cmd``; wall time, peak RSS of the whole process tree (sampled), exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    code = proc.wait()
    stop.set()
    th.join()
    return {"wall_s": time.perf_counter() - t0, "peak_rss_gb": peak / 1e9, "code": code}


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)")


def node_times(work_dir: Path) -> list[tuple[str, float]]:
    """(node path, seconds) of every nipype node result under ``work_dir``."""
    from nipype.utils.filemanip import loadpkl

    out = []
    for f in Path(work_dir).rglob("result_*.pklz"):
        try:
            res = loadpkl(f)
            out.append((str(f.parent.relative_to(work_dir)), float(res.runtime.duration)))
        except Exception:
            continue
    return sorted(out, key=lambda kv: -kv[1])
