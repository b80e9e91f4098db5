"""End-to-end time and memory of one clinical-size participant; writes results/participant.md.

    python benchmarks/bench_participant.py [--nprocs 2] [--seed 3] [--bids DIR] [--note TEXT]

1. a clinical-size phantom (``bids-agquant-simulate --preset clinical``: 1 mm T1w over a whole
   head, 2 x 2 x 3 mm VFA with 4 flip angles, 4 sessions = 6 contrast states, 6 lesions);
2. ``bids-agquant BIDS OUT participant -w WORK --nprocs N`` (the real command line: pybids
   indexing, plan, nipype MultiProc graph, derivatives): wall time and peak resident memory of the
   whole process tree (sampled every 0.2 s, all worker processes summed);
3. the same command again with the same work dir (resume: nothing recomputed);
4. the same registrations, fits, resamplings and statistics called one after the other from a
   plain Python script (no nipype, no pybids, no derivatives written), on one core;
5. per-node times from the nipype work dir.

Target (issue "participant app"): under 3 minutes wall and 4 GB peak on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = REPO / "benchmarks" / "results" / "participant.md"
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
       "NIPYPE_NO_ET": "1"}

from _bench_util import machine, node_times, run_measured  # noqa: E402


def plain_script(bids_dir: Path) -> dict:
    """The workflow's computations called directly, sequentially, in this process."""
    import numpy as np

    from bids_agquant.bids.layout import build_plans
    from bids_agquant.config import Config
    from bids_agquant.interfaces import geometry as G
    from bids_agquant.interfaces.lesions import prepare_regions, region_rows
    from bids_agquant.interfaces.masks import signal_mask
    from bids_agquant.interfaces.registration import register_rigid
    from bids_agquant.qmri.concentration import concentration_mM, delta_r1
    from bids_agquant.qmri.enhancement import signal_enhancement_percent
    from bids_agquant.qmri.relaxivity import get_relaxivity
    from bids_agquant.qmri.vfa import VFAModel

    times = defaultdict(float)
    t = time.perf_counter()
    config = Config(bids_dir=bids_dir, output_dir=bids_dir.parent / "unused",
                    analysis_level="participant")
    (plan,) = build_plans(config)
    times["plan (pybids)"] += time.perf_counter() - t
    ref, ref_aff, _ = G.load(plan.reference_t1w)
    r1_ref, t1w_ref = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="plain_"))
    for s in plan.states:
        t = time.perf_counter()
        t_ref = np.eye(4)
        if s.t1w is not None and s.t1w != plan.reference_t1w:
            img, aff, _ = G.load(s.t1w)
            t_ref = register_rigid(ref, ref_aff, img, aff, seed=config.ants_seed)
            t1w_ref[s.key] = G.resample(img, aff, ref.shape, ref_aff, t_ref, fill=0.0)
        elif s.t1w is not None:
            t1w_ref[s.key] = ref
        target, target_aff = (G.load(s.t1w)[:2] if s.t1w is not None else (ref, ref_aff))
        sig, vaff = G.load_many(s.vfa.files)
        t_vfa = np.linalg.inv(register_rigid(sig[..., -1], vaff, target, target_aff,
                                             seed=config.ants_seed))
        times["registrations"] += time.perf_counter() - t
        t = time.perf_counter()
        b1 = None
        if s.vfa.b1map is not None:
            b1d, b1aff, _ = G.load(s.vfa.b1map)
            b1 = G.resample(b1d * s.vfa.b1_scale, b1aff, sig.shape[:3], vaff, None,
                            nan_aware=True, dtype=np.float64)
        fit = VFAModel(s.vfa.flip_angles_deg, s.vfa.tr_s).fit(
            sig, mask=signal_mask(sig.mean(-1)), b1=b1)
        times["VFA fits"] += time.perf_counter() - t
        t = time.perf_counter()
        r1_ref[s.key], _ = G.resample_many([fit.r1, fit.m0], vaff, ref.shape, ref_aff,
                                           t_ref @ t_vfa)
        times["resampling to the reference"] += time.perf_counter() - t
    t = time.perf_counter()
    base = plan.state(plan.baseline_session, None)
    G.save_like(1.0 / r1_ref[base.key], ref_aff, tmp / "t1.nii")
    lesions, controls, _, info, _, _ = prepare_regions(
        reference_file=plan.reference_t1w, lesion_file=plan.lesion_mask.path,
        lesion_kind=plan.lesion_mask.kind, t1_file=tmp / "t1.nii")
    times["regions"] += time.perf_counter() - t
    t = time.perf_counter()
    n_rows = 0
    for s in plan.post_states:
        pre = plan.pre_state_for(s)
        rel = get_relaxivity(s.agent, s.vfa.field_strength_t)
        d = delta_r1(r1_ref[s.key], r1_ref[pre.key])
        maps = {"delta_r1": d, "conc": concentration_mM(d, rel),
                "t1_pre": 1.0 / r1_ref[pre.key], "t1_post": 1.0 / r1_ref[s.key],
                "t1w_pre": t1w_ref[pre.key], "t1w_post": t1w_ref[s.key],
                "se": signal_enhancement_percent(t1w_ref[s.key], t1w_ref[pre.key])}
        n_rows += len(region_rows(regions=info, lesion_labels=lesions, control_labels=controls,
                                  maps=maps, base={}, relaxivity=rel))
    times["quantification + statistics"] += time.perf_counter() - t
    times["rows"] = n_rows
    return dict(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--bids", type=Path, help="existing clinical phantom (skip the simulation)")
    ap.add_argument("--note", default="")
    ap.add_argument("--plain", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plain:                      # child mode: the plain script, timed by the parent
        t0 = time.perf_counter()
        times = plain_script(args.plain)
        times["total"] = time.perf_counter() - t0
        print(repr(times))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bench_participant_"))
    py = sys.executable
    lines = [f"# Participant level, clinical-size phantom ({dt.date.today()})", ""]
    lines += [f"Machine: {machine()} (before the run).", ""]
    if args.note:
        lines += [args.note, ""]
    bids = args.bids
    if bids is None:
        bids = tmp / "bids"
        gen = run_measured([py, "-m", "bids_agquant.simulate.cli", str(bids), "--preset",
                            "clinical", "--seed", str(args.seed)], env=ENV)
        if gen["code"]:
            raise SystemExit("phantom generation failed")
        lines += [f"Phantom: `bids-agquant-simulate {bids.name} --preset clinical --seed "
                  f"{args.seed}` ({gen['wall_s']:.0f} s): 1 mm T1w 180 x 220 x 180 mm, VFA "
                  "2 x 2 x 3 mm x 4 flip angles, sessions D0 (pre + Dotarem), D1 (AGuIX), "
                  "D8 (AGuIX), D28 (pre + Dotarem): 6 contrast states, 6 lesions.", ""]
    out, work = tmp / "out", tmp / "work"
    cmd = [py, "-m", "bids_agquant", str(bids), str(out), "participant", "-w", str(work),
           "--nprocs", str(args.nprocs)]
    with open(tmp / "run1.log", "w") as log:
        first = run_measured(cmd, env=ENV, log=log)
    if first["code"]:
        raise SystemExit(f"pipeline failed, see {tmp / 'run1.log'}")
    with open(tmp / "run2.log", "w") as log:
        second = run_measured(cmd, env=ENV, log=log)
    plain = run_measured([py, __file__, "--plain", str(bids)], env=ENV,
                         log=open(tmp / "plain.log", "w"))
    plain_times = eval((tmp / "plain.log").read_text().strip().splitlines()[-1])  # noqa: S307

    import re
    wf_s = [float(x) for x in re.findall(r"finished in (\d+) s", (tmp / "run1.log").read_text())]
    # per-node times from the command's own progress lines ("[k/n] node: done in X s")
    nodes = [(m[0], float(m[1])) for m in
             re.findall(r"\] (\S+): done in ([0-9.]+) s", (tmp / "run1.log").read_text())]
    nodes = nodes or node_times(work)
    groups = defaultdict(lambda: [0.0, 0])
    for name, sec in nodes:
        leaf = re.split(r"[./]", name)[-1]
        kind = leaf if not leaf.startswith("ds_") else "ds_<state> (derivatives)"
        groups[kind][0] += sec
        groups[kind][1] += 1
    n_out = sum(1 for _ in out.rglob("*.nii.gz"))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6

    lines += ["## Results", "",
              f"| run | wall (s) | peak RSS, whole process tree (GB) |", "|---|---:|---:|",
              f"| `bids-agquant ... participant --nprocs {args.nprocs}` (first run) | "
              f"{first['wall_s']:.0f} | {first['peak_rss_gb']:.2f} |",
              f"| same command, same work dir (resume) | {second['wall_s']:.0f} | "
              f"{second['peak_rss_gb']:.2f} |",
              f"| plain script, same computations, sequential, 1 core | {plain['wall_s']:.0f} | "
              f"{plain['peak_rss_gb']:.2f} |", "",
              f"Target: < 180 s and < 4 GB on 2 cores. Outputs: {n_out} NIfTI maps, "
              f"{size:.0f} MB in total. Of the first run, the nipype workflow itself took "
              f"{wf_s[0] if wf_s else float('nan'):.0f} s; the rest is start-up, pybids "
              "indexing and plan validation, and the participant HTML report (written by the "
              "command line after the workflow; it is most of the resume time).", "",
              "Plain script, seconds by step (one process, one core):", "",
              "| step | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in plain_times.items() if k not in ("rows",)]
    lines += ["", f"Workflow nodes, summed CPU-side time by kind ({len(nodes)} nodes; "
              f"the sum exceeds the wall time because {args.nprocs} run at once):", "",
              "| node | count | total s |", "|---|---:|---:|"]
    lines += [f"| {k} | {n} | {s:.1f} |" for k, (s, n) in
              sorted(groups.items(), key=lambda kv: -kv[1][0])]
    lines += ["", f"Sum over nodes: {sum(s for _, s in nodes):.0f} s.", "",
              f"Machine after the runs: {machine()}.", "",
              "Notes: every node is single-threaded (ANTs is forced to one thread for "
              "bit-identical reruns), so `--nprocs 2` runs two nodes at a time; the plain "
              "script shows the cost of the computations themselves. Timings on this shared "
              "machine are noisy: other sessions were running (see the load averages).", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"work files in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
