"""Slurm overheads on the one-node test cluster, and N phantom participants as a Slurm array
vs a serial loop. Writes benchmarks/results/hpc.md.

    eval "$(scripts/slurm_local.sh start)"
    python benchmarks/bench_hpc.py [--participants 8] [--preset small] [--skip-pipeline]
    scripts/slurm_local.sh stop

Parts:
A. scheduler: single no-op jobs (submit -> gone from squeue), and an array of N no-op tasks;
B. nipype: a chain of trivial nodes with MultiProc, SLURM and SLURMGraph -> seconds per node;
C. pipeline: N phantom participants (bids-agquant-simulate), `participant` level one after the
   other (--nprocs 1) vs scripts/sbatch_participant.sh as an array (--cpus-per-task=1, as many
   tasks at once as the node has CPUs); per-participant times from the status files.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "hpc.md"
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def sh(*cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=ENV, **kw).stdout


def wait_gone(job_ids: list[str], poll=0.05) -> None:
    ids = ",".join(job_ids)
    while sh("squeue", "-h", "-j", ids, "-o", "%i").strip():
        time.sleep(poll)


def job_times(job_id: str) -> list[dict]:
    """Submit/Start/End times (1 s resolution) of a job or all tasks of an array."""
    out = sh("scontrol", "-o", "show", "job", job_id)
    rows = []
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        rows.append({k: dt.datetime.fromisoformat(fields[k])
                     for k in ("SubmitTime", "StartTime", "EndTime")}
                    | {"state": fields["JobState"], "task": fields.get("ArrayTaskId", "")})
    return rows


# ------------------------------------------------------------------------------ A: scheduler
def bench_scheduler(n: int, tmp: Path) -> dict:
    singles = []
    for _ in range(5):
        t = time.perf_counter()
        job = sh("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true").strip()
        wait_gone([job])
        singles.append(time.perf_counter() - t)
        time.sleep(0.3)
    t = time.perf_counter()
    job = sh("sbatch", "--parsable", f"--array=1-{n}", "-o", "/dev/null", "--wrap", "true").strip()
    wait_gone([job])
    array_wall = time.perf_counter() - t
    return {"single_median_s": statistics.median(singles), "single_min_s": min(singles),
            "single_max_s": max(singles), "array_n": n, "array_wall_s": array_wall}


# ------------------------------------------------------------------------------ B: nipype
def _noop(x):
    return x + 1


def chain(name: str, n: int):
    from nipype import Function, Node, Workflow
    wf = Workflow(name=name)
    prev = None
    for i in range(n):
        node = Node(Function(input_names=["x"], output_names=["x"], function=_noop), name=f"n{i}")
        if prev is None:
            node.inputs.x = 0
        else:
            wf.connect(prev, "x", node, "x")
        prev = node
    return wf


def bench_nipype(n_nodes: int, tmp: Path) -> dict:
    from bids_agquant.cli.plugin import load_plugin_settings, run_workflow
    out = {}
    for plugin in ("MultiProc", "SLURM", "SLURMGraph"):
        yml = tmp / f"{plugin}.yml"
        yml.write_text(f"plugin: {plugin}\n")
        work = tmp / f"nipype_{plugin}"
        name, args = load_plugin_settings(None if plugin == "MultiProc" else yml, 2, work)
        t = time.perf_counter()
        graph = run_workflow(chain("chain", n_nodes), name, args, work)
        out[plugin] = time.perf_counter() - t
        last = [nd for nd in graph.nodes() if nd.name == f"n{n_nodes - 1}"][0]
        assert last.result.outputs.x == n_nodes, plugin
        t = time.perf_counter()
        run_workflow(chain("chain", n_nodes), name, args, work)          # cached rerun
        out[f"{plugin}_rerun"] = time.perf_counter() - t
    out["n_nodes"] = n_nodes
    return out


# ------------------------------------------------------------------------------ C: pipeline
def bench_pipeline(n: int, preset: str, tmp: Path) -> dict:
    bids = tmp / "bids"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bids_agquant.simulate.cli", str(bids), "--preset", preset,
                    "--participants", str(n), "--seed", "7"], check=True, env=ENV,
                   capture_output=True)
    simulate_s = time.perf_counter() - t
    labels = [f"{i + 1:02d}" for i in range(n)]
    app = [sys.executable, "-m", "bids_agquant"]

    # serial loop, one participant after the other, one CPU each
    serial = {}
    t0 = time.perf_counter()
    for label in labels:
        t = time.perf_counter()
        subprocess.run([*app, str(bids), str(tmp / "out_serial"), "participant",
                        "--participant-label", label, "-w", str(tmp / "work_serial"),
                        "--nprocs", "1", "--omp-nthreads", "1"], check=True, env=ENV,
                       capture_output=True)
        serial[label] = time.perf_counter() - t
    serial_wall = time.perf_counter() - t0

    # array: one task per participant, one CPU each
    status = tmp / "status"
    env = {**ENV, "BIDS_DIR": str(bids), "OUTPUT_DIR": str(tmp / "out_array"),
           "AGQUANT_CMD": " ".join(app), "WORK_ROOT": str(tmp / "work_array"),
           "STATUS_DIR": str(status)}
    (tmp / "logs").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    job = subprocess.run(["sbatch", "--parsable", f"--array=1-{n}", "--cpus-per-task=1",
                          "--export=ALL", str(REPO / "scripts" / "sbatch_participant.sh")],
                         check=True, capture_output=True, text=True, env=env, cwd=tmp
                         ).stdout.strip().split(";")[0]
    wait_gone([job], poll=0.2)
    array_wall = time.perf_counter() - t0
    tasks = job_times(job)
    codes, app_s, overhead = {}, {}, []
    run_by_task = {r["task"]: (r["EndTime"] - r["StartTime"]).total_seconds() for r in tasks}
    for f in sorted(status.glob("sub-*.tsv")):
        row = f.read_text().splitlines()[1].split("\t")
        codes[row[0]], app_s[row[0]] = int(row[1]), float(row[3])
        overhead.append(run_by_task[row[2].split("_")[-1]] - float(row[3]))
    wait = [(r["StartTime"] - r["SubmitTime"]).total_seconds() for r in tasks]
    run = list(run_by_task.values())
    return {"n": n, "preset": preset, "simulate_s": simulate_s,
            "serial_wall_s": serial_wall, "serial_per_participant_s": serial,
            "array_wall_s": array_wall, "array_app_s": app_s, "array_exit_codes": codes,
            "array_task_run_s": run, "array_task_wait_s": wait, "array_task_overhead_s": overhead,
            "cpus": int(sh("sinfo", "-h", "-o", "%c").split()[0])}


# ------------------------------------------------------------------------------ report
def write_report(a: dict, b: dict, c: dict | None, load: tuple, note: str) -> str:
    n = b["n_nodes"]
    lines = [
        "# Slurm on one node: overheads, and participants as an array vs a serial loop",
        "",
        f"Measured {dt.datetime.now():%Y-%m-%d %H:%M} with `python benchmarks/bench_hpc.py` on the "
        f"one-node cluster of `scripts/slurm_local.sh` ({platform.node()}, {os.cpu_count()} CPUs, "
        f"slurm {sh('sinfo', '-V').split()[-1]}, `batch_sched_delay=0`). Load average at start/end: "
        f"{load[0]:.1f} / {load[1]:.1f}: the machine was shared with other work, so times are "
        f"noisy.{(' ' + note) if note else ''}",
        "",
        "## A. Scheduler",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| one no-op job, submit -> gone from squeue (median of 5; min-max) | "
        f"{a['single_median_s']:.2f} ({a['single_min_s']:.2f}-{a['single_max_s']:.2f}) |",
        f"| array of {a['array_n']} no-op tasks, submit -> all gone | {a['array_wall_s']:.2f} "
        f"({a['array_wall_s'] / a['array_n']:.2f} per task) |",
        "",
        "Slurm starts queued jobs on a 1 s tick here, so a job waits 0-1 s before it starts.",
        "",
        f"## B. nipype plugins: a chain of {n} trivial nodes",
        "",
        "| plugin | run (s) | per node (s) | overhead per node vs MultiProc (s) | cached rerun (s) |",
        "|---|---|---|---|---|",
    ]
    for plugin in ("MultiProc", "SLURM", "SLURMGraph"):
        over = (b[plugin] - b["MultiProc"]) / n
        lines.append(f"| {plugin} | {b[plugin]:.1f} | {b[plugin] / n:.2f} | "
                     f"{'-' if plugin == 'MultiProc' else f'{over:.2f}'} | {b[plugin + '_rerun']:.2f} |")
    lines += ["", "Each Slurm node is one job: Python start and nipype import in the job "
              "(about 1 s), the scheduler tick (0-1 s) and, for SLURM, the squeue poll (1 s). "
              "SLURMGraph submits everything at once with afterok dependencies; bids_agquant "
              "then waits for the queue to drain (2 s poll).", ""]
    if c is None:
        lines += ["## C. Participants: array vs serial loop", "",
                  "Not run yet: the participant pipeline (`bids_agquant.workflows.participant`) "
                  "was not available when this was measured.", ""]
    else:
        serial = list(c["serial_per_participant_s"].values())
        app = list(c["array_app_s"].values())
        ideal = sum(app) / c["cpus"]
        speedup = c["serial_wall_s"] / c["array_wall_s"]
        lines += [
            f"## C. {c['n']} phantom participants (`--preset {c['preset']}`): array vs serial loop",
            "",
            f"Phantom written in {c['simulate_s']:.0f} s. Both ways give each participant one CPU "
            f"(`--nprocs 1`); the array runs {c['cpus']} tasks at once on the {c['cpus']}-CPU node.",
            "",
            "| | wall (s) | per participant (s), mean [min-max] |",
            "|---|---|---|",
            f"| serial loop | {c['serial_wall_s']:.0f} | {statistics.mean(serial):.1f} "
            f"[{min(serial):.1f}-{max(serial):.1f}] |",
            f"| Slurm array ({c['n']} tasks) | {c['array_wall_s']:.0f} | {statistics.mean(app):.1f} "
            f"[{min(app):.1f}-{max(app):.1f}] (inside the task) |",
            "",
            f"- speed-up: {speedup:.2f}x (ideal with {c['cpus']} CPUs: {c['cpus']}x; "
            + ("above the ideal because the load of the shared machine changed between the "
               "serial loop and the array" if speedup > c["cpus"] else
               f"per-participant time rises when {c['cpus']} run at once on a shared machine")
            + ");",
            f"- overhead per job: task run time by Slurm minus the app's own time "
            f"= {statistics.mean(c['array_task_overhead_s']):.1f} s "
            f"(Slurm times have 1 s resolution); queue wait of a task: "
            f"{statistics.mean(c['array_task_wait_s']):.1f} s on average (mostly waiting for a "
            f"free CPU); array wall minus ideal packing (sum of app times / CPUs = {ideal:.0f} s): "
            f"{c['array_wall_s'] - ideal:.0f} s;",
            f"- exit codes: {sorted(set(c['array_exit_codes'].values()))}.",
            "",
        ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=8)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--nodes", type=int, default=8, help="length of the nipype chain (part B)")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--note", default="", help="a sentence added to the report header")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    opts = ap.parse_args()
    if not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None:
        print("no Slurm cluster: eval \"$(scripts/slurm_local.sh start)\" first", file=sys.stderr)
        return 2
    from bids_agquant.cli.plugin import ensure_logname
    ensure_logname()
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_hpc_"))
    try:
        a = bench_scheduler(opts.participants, tmp)
        print("A", a, flush=True)
        b = bench_nipype(opts.nodes, tmp)
        print("B", b, flush=True)
        c = None
        if not opts.skip_pipeline:
            try:
                import bids_agquant.workflows.participant  # noqa: F401
            except ImportError as exc:
                print(f"part C skipped: {exc}", file=sys.stderr)
            else:
                c = bench_pipeline(opts.participants, opts.preset, tmp)
                print("C", c, flush=True)
        print(write_report(a, b, c, (load0, os.getloadavg()[0]), opts.note))
    finally:
        if opts.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
