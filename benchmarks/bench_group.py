"""Group-level benchmark: does a 15-participant phantom cohort give back its dose response?

The phantom (``bids_agquant.simulate``) makes the trial's cohort: 15 participants, 3 per AGuIX dose
(15, 30, 50, 75, 100 mg/kg), primary tumours as in the trial, AGuIX concentrations proportional to
the dose. Its truth table gives the true SE of every lesion; the regression of the true per-dose
mean SE on dose is the *simulated* dose-response slope. The whole app then runs on the images
(participant level for everyone, then the group level) and the benchmark checks that the
simulated slope lies inside the 95 % confidence interval of the measured one. It also times every
step and writes ``benchmarks/results/group.md`` (and the measured dose-response figure
``benchmarks/results/group_dose_response.png``).

    python benchmarks/bench_group.py                     # full run (pipeline + group)
    python benchmarks/bench_group.py --truth-only        # group level on the truth tables only
    python benchmarks/bench_group.py --root /tmp/bench_group --nprocs 2 --preset small

Exit code 0 when the slope is recovered, 1 when it is not, 2 when the pipeline could not run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _bench_util import number, read_tsv_rows  # noqa: E402

from bids_agquant.config import Config  # noqa: E402
from bids_agquant.qmri import cohort  # noqa: E402
from bids_agquant.group import LESION_TABLE_COLUMNS, run_group  # noqa: E402

DOSES = (15.0, 15.0, 15.0, 30.0, 30.0, 30.0, 50.0, 50.0, 50.0, 75.0, 75.0, 75.0,
         100.0, 100.0, 100.0)
TUMORS = ("melanoma", "NSCLC", "melanoma", "NSCLC", "melanoma", "melanoma", "NSCLC", "colon",
          "melanoma", "breast", "NSCLC", "melanoma", "NSCLC", "NSCLC", "breast")
RESULTS = REPO / "benchmarks" / "results" / "group.md"


def simulate(bids: Path, truth: Path, preset: str, seed: int) -> float:
    from bids_agquant.simulate.dataset import simulate_dataset
    t0 = time.perf_counter()
    simulate_dataset(bids, truth_dir=truth, preset=preset, n_participants=15, doses=DOSES,
                     primary_tumors=TUMORS, seed=seed, overwrite=True)
    return time.perf_counter() - t0


def truth_lesion_tables(truth: Path, out: Path) -> None:
    """The truth table written as participant lesion tables (the group level's input format)."""
    rows = read_tsv_rows(truth / "lesions.tsv")
    by_p: dict[str, list[dict]] = {}
    for r in rows:
        p = r["participant_id"] if r["participant_id"].startswith("sub-") else \
            f"sub-{r['participant_id']}"
        by_p.setdefault(p, []).append({
            "participant_id": p, "session_id": r["session_id"],
            "contrast_agent": r["contrast_agent"], "lesion_id": r["lesion_id"],
            "longest_diameter_mm": r.get("axial_diameter_mm") or r["longest_diameter_mm"],
            "measurable": r["measurable"], "volume_mm3": r.get("volume_mm3", "n/a"),
            "se_mean_percent": r["se_percent"], "se_sd_percent": "0",
            "t1_pre_mean_s": r.get("t1_pre_s", "n/a"), "t1_post_mean_s": r.get("t1_post_s", "n/a"),
            "delta_r1_mean_per_s": r.get("delta_r1_per_s", "n/a"),
            "conc_mean_mM": r.get("conc_mM", "n/a"), "conc_sd_mM": "0",
            "conc_mean_mg_per_L": r.get("conc_mg_per_L", "n/a"),
            "n_voxels": r.get("n_voxels", "n/a")})
    for p, prow in by_p.items():
        d = out / p
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{p}_desc-lesions_stats.tsv", "w") as fh:
            fh.write("\t".join(LESION_TABLE_COLUMNS) + "\n")
            for r in prow:
                fh.write("\t".join(str(r[c]) if r[c] not in ("", None) else "n/a"
                                   for c in LESION_TABLE_COLUMNS) + "\n")


def dose_fit(out: Path) -> dict:
    reg = {r["model"]: r for r in read_tsv_rows(out / "group" / "dose_response_regression.tsv")}
    return {k: {c: number(v[c]) for c in ("n", "slope", "slope_ci_low", "slope_ci_high",
                                        "intercept", "r2", "p_value")}
            for k, v in reg.items()}


def run_app(bids: Path, out: Path, work: Path, nprocs: int) -> tuple[float, float, str]:
    """Participant level for all, then group level, through the real command line."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bids_agquant", str(bids), str(out), "participant",
                        "-w", str(work), "--nprocs", str(nprocs)], env=env, capture_output=True,
                       text=True)
    t_part = time.perf_counter() - t0
    if p.returncode != 0:
        return t_part, float("nan"), (p.stderr or p.stdout).strip().splitlines()[:1][0] \
            if (p.stderr or p.stdout).strip() else f"exit {p.returncode}"
    t0 = time.perf_counter()
    g = subprocess.run([sys.executable, "-m", "bids_agquant", str(bids), str(out), "group"],
                       env=env, capture_output=True, text=True)
    t_group = time.perf_counter() - t0
    if g.returncode != 0:
        return t_part, t_group, (g.stderr or g.stdout).strip().splitlines()[0]
    return t_part, t_group, ""


def lesion_agreement(truth_out: Path, out: Path) -> dict:
    """Measured versus true peak SE per measurable lesion (same participant and lesion id)."""
    def peak(path):
        return {(r["participant_id"], r["lesion_id"]): number(r["se_mean_percent"])
                for r in read_tsv_rows(path / "group" / "cohort_lesions.tsv")
                if r["session_role"] == "peak" and r["measurable"] == "true"
                and r["is_control"] == "false"}
    t, m = peak(truth_out), peak(out)
    keys = sorted(set(t) & set(m))
    if not keys:
        return {"n": 0}
    fit = cohort.linear_regression([t[k] for k in keys], [m[k] for k in keys])
    rel = [abs(m[k] - t[k]) / abs(t[k]) for k in keys if t[k]]
    return {"n": len(keys), "slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2,
            "median_rel_error": sorted(rel)[len(rel) // 2] if rel else float("nan"),
            "max_rel_error": max(rel) if rel else float("nan")}


def _f(v, d=3):
    return "n/a" if not (isinstance(v, float) and math.isfinite(v)) else f"{v:.{d}f}"


def write_results(info: dict) -> None:
    t, m = info["truth_fit"], info.get("measured_fit")
    lines = [
        "# Group level: dose-response recovery on a 15-participant phantom cohort",
        "",
        f"Run {info['date']} on {info['machine']} (`benchmarks/bench_group.py "
        f"{info['argv']}`). The machine is shared by several agents: timings were taken under "
        "load and are indicative only.",
        "",
        f"Cohort: 15 participants, 3 per AGuIX dose (15, 30, 50, 75, 100 mg/kg), phantom preset "
        f"`{info['preset']}`, seed {info['seed']}; {info['n_measurable']} measurable lesions at "
        "the peak session.",
        "",
        "| dose response (mean SE per dose on dose) | slope (%/(mg/kg)) | 95 % CI | intercept "
        "| R2 |",
        "|---|---|---|---|---|",
        f"| simulated (phantom truth) | {_f(t['slope'])} | {_f(t['slope_ci_low'])} to "
        f"{_f(t['slope_ci_high'])} | {_f(t['intercept'], 1)} | {_f(t['r2'])} |",
    ]
    if m:
        lines.append(f"| measured by the app | {_f(m['slope'])} | {_f(m['slope_ci_low'])} to "
                     f"{_f(m['slope_ci_high'])} | {_f(m['intercept'], 1)} | {_f(m['r2'])} |")
    lines += ["", f"**Result:** {info['verdict']}", ""]
    if info.get("agreement", {}).get("n"):
        a = info["agreement"]
        lines += [f"Lesion by lesion (peak SE, {a['n']} measurable lesions): measured = "
                  f"{_f(a['slope'])} x true + {_f(a['intercept'], 2)}, R2 {_f(a['r2'])}, median "
                  f"relative error {100 * a['median_rel_error']:.1f} %, max "
                  f"{100 * a['max_rel_error']:.1f} %.", ""]
    lines += ["| step | wall time (s) |", "|---|---|"]
    for k, v in info["timings"].items():
        lines.append(f"| {k} | {_f(v, 1)} |")
    lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/bids_agquant_bench_group"))
    ap.add_argument("--preset", default="small", help="phantom preset (default: small)")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--truth-only", action="store_true",
                    help="skip the pipeline: group level on the truth tables only")
    ap.add_argument("--no-write", action="store_true", help="do not write results/group.md")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse ROOT/bids and ROOT/truth from an earlier run (skip the phantom)")
    args = ap.parse_args(argv)
    root = args.root
    bids, truth, out, work = root / "bids", root / "truth", root / "out", root / "work"
    truth_out = root / "truth_out"
    timings = {}
    reuse = args.reuse and (truth / "lesions.tsv").is_file() and (bids / "participants.tsv"
                                                                   ).is_file()
    if reuse:
        for d in (out, work, truth_out):
            shutil.rmtree(d, ignore_errors=True)
    else:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        timings["simulate 15 participants"] = simulate(bids, truth, args.preset, args.seed)
        print(f"simulated in {timings['simulate 15 participants']:.1f} s")

    truth_lesion_tables(truth, truth_out)
    t0 = time.perf_counter()
    run_group(Config(bids_dir=bids, output_dir=truth_out, analysis_level="group"))
    timings["group level on the truth tables"] = time.perf_counter() - t0
    truth_fit = dose_fit(truth_out)["mean SE per dose on dose"]
    print(f"simulated slope {truth_fit['slope']:.4f} (CI {truth_fit['slope_ci_low']:.4f} to "
          f"{truth_fit['slope_ci_high']:.4f}), R2 {truth_fit['r2']:.3f}")
    n_meas = json.loads((truth_out / "group" / "summary.json").read_text())[
        "n_measurable_lesions_peak"]
    info = {"date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}",
            "argv": " ".join(argv if argv is not None else sys.argv[1:]), "preset": args.preset,
            "seed": args.seed, "truth_fit": truth_fit, "n_measurable": n_meas,
            "timings": timings}
    code = 0
    if args.truth_only:
        info["verdict"] = ("pipeline not run (--truth-only): the group level reproduced the "
                           "phantom's own dose response only.")
    else:
        t_part, t_group, err = run_app(bids, out, work, args.nprocs)
        timings["participant level, 15 participants"] = t_part
        timings["group level (CLI)"] = t_group
        if err:
            info["verdict"] = f"the pipeline could not run: {err}"
            print(info["verdict"])
            code = 2
        else:
            m = dose_fit(out)["mean SE per dose on dose"]
            info["measured_fit"] = m
            info["agreement"] = lesion_agreement(truth_out, out)
            inside = m["slope_ci_low"] <= truth_fit["slope"] <= m["slope_ci_high"]
            info["verdict"] = (
                f"the simulated slope {truth_fit['slope']:.3f} is "
                f"{'inside' if inside else 'OUTSIDE'} the measured 95 % CI "
                f"[{m['slope_ci_low']:.3f}, {m['slope_ci_high']:.3f}] (measured slope "
                f"{m['slope']:.3f}, {100 * (m['slope'] / truth_fit['slope'] - 1):+.1f} %).")
            print(info["verdict"])
            code = 0 if inside else 1
            fig = out / "group" / "figure_dose_response.png"
            if fig.is_file() and not args.no_write:      # the README shows it
                shutil.copyfile(fig, RESULTS.parent / "group_dose_response.png")
    if not args.no_write:
        write_results(info)
        print(f"results in {RESULTS}")
    return code


if __name__ == "__main__":
    sys.exit(main())
