"""Group-level benchmark: the dose slope with lesions nested in participants, on the
15-participant phantom cohort, mixed model beside lesion-level OLS beside the simulated slope.

The phantom (``bids_agquant.simulate``, preset ``small``) makes the trial's cohort: 15
participants, 3 per AGuIX dose, tumours as in the trial. Its truth table gives the true peak SE
of every lesion. Running the participant level on 15 phantoms takes about 13 min on 2 cores
(``benchmarks/results/group.md``), so by default the lesion tables are the truth with
measurement noise: each lesion SE times ``1 + N(0, noise)`` (default 3 %, about the median
lesion error of the pipeline on these phantoms in ``group.md``). ``--pipeline-out`` runs the
group level on real participant outputs instead.

The phantom has no participant effect unless ``participant_uptake_sd`` is set (a lognormal
factor per participant on every lesion's AGuIX uptake); the benchmark runs each value of
``--participant-sd`` (default 0 and 0.3), so the singular case and a clustered one are both
shown. The *simulated* slope is the OLS slope of the noise-free true peak SE of the measurable
lesions on dose: the slope of this cohort, participant effects drawn included.

    python benchmarks/bench_group_mixed_model.py
    python benchmarks/bench_group_mixed_model.py --participant-sd 0.3 --noise 0.05
    python benchmarks/bench_group_mixed_model.py --bids BIDS --pipeline-out OUT   # real outputs

Writes ``benchmarks/results/group_mixed_model.md``. Exit code 0 when every mixed-model CI with
status ok or singular holds the simulated slope, 1 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _bench_util import number, read_tsv_rows  # noqa: E402
from bench_group import DOSES, TUMORS, truth_lesion_tables  # noqa: E402

from bids_agquant.config import Config  # noqa: E402
from bids_agquant.group import run_group  # noqa: E402
from bids_agquant.qmri import cohort  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "group_mixed_model.md"
#: the same table for real participant-level outputs (--pipeline-out)
RESULTS_PIPELINE = REPO / "benchmarks" / "results" / "group_mixed_model_pipeline.md"


def simulate(root: Path, preset: str, seed: int, participant_sd: float) -> Path:
    from bids_agquant.simulate.dataset import simulate_dataset
    simulate_dataset(root / "bids", truth_dir=root / "truth", preset=preset, n_participants=15,
                     doses=DOSES, primary_tumors=TUMORS, seed=seed, overwrite=True,
                     participant_uptake_sd=participant_sd)
    return root / "truth"


def simulated_slope(truth: Path) -> float:
    """OLS slope of the true peak SE of the measurable lesions on dose (first AGuIX state)."""
    rows = [r for r in read_tsv_rows(truth / "lesions.tsv") if r["contrast_agent"] == "AGuIX"
            and r["measurable"].lower() == "true"]
    first = {}
    for r in rows:                        # the peak: the first AGuIX session of a participant
        first.setdefault(r["participant_id"], r["session_id"])
    peak = [r for r in rows if r["session_id"] == first[r["participant_id"]]]
    return cohort.linear_regression([number(r["dose_mg_per_kg"]) for r in peak],
                                    [number(r["se_percent"]) for r in peak]).slope


def noisy_truth(truth: Path, dest: Path, noise: float, seed: int) -> Path:
    """A copy of the truth table with every SE times 1 + N(0, noise)."""
    rng = np.random.default_rng(seed)
    rows = read_tsv_rows(truth / "lesions.tsv")
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "lesions.tsv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            se = number(r["se_percent"])
            w.writerow({**r, "se_percent": repr(se * (1.0 + noise * rng.standard_normal()))})
    return dest


def dose_rows(out: Path) -> dict[str, dict]:
    return {("mixed" if r["method"].startswith("mixed") else "lesion"): r
            for r in read_tsv_rows(out / "group" / "mixed_models.tsv")
            if r["model"] == "dose response"}


def one_setting(root: Path, args, participant_sd: float) -> dict:
    t0 = time.perf_counter()
    if args.reuse and (root / "truth" / "lesions.tsv").is_file():
        truth, t_sim = root / "truth", float("nan")         # simulated by an earlier run
    else:
        truth = simulate(root, args.preset, args.seed, participant_sd)
        t_sim = time.perf_counter() - t0
    tables = root / "tables"
    shutil.rmtree(tables, ignore_errors=True)
    truth_lesion_tables(noisy_truth(truth, root / "noisy_truth", args.noise, args.seed), tables)
    t0 = time.perf_counter()
    run_group(Config(bids_dir=root / "bids", output_dir=tables, analysis_level="group"))
    return {"source": f"truth x (1 + N(0, {args.noise:g})), participant_uptake_sd "
                      f"{participant_sd:g}", "simulated": simulated_slope(truth),
            "rows": dose_rows(tables), "seconds": {"simulate": t_sim,
                                                   "group": time.perf_counter() - t0}}


def _f(v, d=3) -> str:
    v = number(v)
    return f"{v:.{d}f}" if np.isfinite(v) else "n/a"


def write_results(info: dict, results: list[dict], path: Path = RESULTS) -> None:
    lines = ["# Group level: dose slope with lesions nested in participants", "",
             f"Run {info['date']} on {info['machine']} (`benchmarks/bench_group_mixed_model.py "
             f"{info['argv']}`), phantom preset `{info['preset']}`, seed {info['seed']}, 15 "
             "participants (3 per dose 15, 30, 50, 75, 100 mg/kg). Lesion tables: the phantom "
             "truth with multiplicative measurement noise unless the source says pipeline.", "",
             "| source | simulated slope | mixed model slope (95 % CI) | status | participant "
             "variance / residual | lesion-level OLS slope (95 % CI) | lesions / participants "
             "| simulated slope inside mixed CI |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        m, n = r["rows"]["mixed"], r["rows"]["lesion"]
        inside = (number(m["ci_low"]) <= r["simulated"] <= number(m["ci_high"])
                  if np.isfinite(r["simulated"]) else None)
        lines.append(
            f"| {r['source']} | {_f(r['simulated'])} | {_f(m['estimate'])} ({_f(m['ci_low'])} "
            f"to {_f(m['ci_high'])}) | {m['status']} | {_f(m['participant_variance'], 1)} / "
            f"{_f(m['residual_variance'], 1)} | {_f(n['estimate'])} ({_f(n['ci_low'])} to "
            f"{_f(n['ci_high'])}) | {m['n_lesions']} / {m['n_participants']} | "
            f"{'n/a' if inside is None else ('yes' if inside else 'NO')} |")
    lines += [""] + [f"- {r['source']}: {r['rows']['mixed']['note'] or 'no note'}; simulate "
                     f"{_f(r['seconds'].get('simulate'), 0)} s (n/a: reused), group level "
                     f"{r['seconds']['group']:.1f} s" for r in results]
    singular = [r["source"] for r in results if r["rows"]["mixed"]["status"] == "singular"]
    lines += ["", "The simulated slope is this cohort's own (noise-free truth, participant effects "
              "drawn included); the mixed and lesion-level fits see the noisy tables."]
    if singular:
        from bids_agquant.simulate.config import make_config
        lo, hi = make_config(info["preset"]).aguix_conc_mM_per_100mg_kg
        m0 = results[0]["rows"]["mixed"]
        per = int(m0["n_lesions"]) / int(m0["n_participants"])
        lines += ["", f"Singular ({'; '.join(singular)}): REML put the participant variance at "
                  "its boundary, so the row reports OLS with participant-clustered (CR1) "
                  "standard errors (docs/group_statistics.md). Without participant_uptake_sd the "
                  "phantom draws every lesion alike and has no participant effect to find; a "
                  "small factor is lost beside the phantom's lesion-to-lesion spread of uptake "
                  f"(leakiness uniform over a {hi / lo:g}-fold range of AGuIX uptake) with "
                  f"{per:.3g} measurable lesions per participant."]
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/bids_agquant_bench_mixed"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--noise", type=float, default=0.03,
                    help="relative SD of the measurement noise on each lesion SE (default 0.03)")
    ap.add_argument("--participant-sd", type=float, nargs="+", default=[0.0, 0.3],
                    help="phantom participant_uptake_sd values, one cohort each")
    ap.add_argument("--bids", type=Path, help="with --pipeline-out: the BIDS dataset")
    ap.add_argument("--pipeline-out", type=Path,
                    help="participant-level outputs of the app: run the group level on them")
    ap.add_argument("--truth", type=Path, help="with --pipeline-out: the phantom truth folder")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse ROOT/sd<value>/ phantoms of an earlier run (same seed, preset)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    results = []
    if args.pipeline_out:
        t0 = time.perf_counter()
        run_group(Config(bids_dir=args.bids, output_dir=args.pipeline_out,
                         analysis_level="group"))
        results.append({"source": f"pipeline outputs {args.pipeline_out}",
                        "simulated": simulated_slope(args.truth) if args.truth else float("nan"),
                        "rows": dose_rows(args.pipeline_out),
                        "seconds": {"group": time.perf_counter() - t0}})
    else:
        for sd in args.participant_sd:
            results.append(one_setting(args.root / f"sd{sd:g}", args, sd))
            r = results[-1]
            print(f"{r['source']}: simulated {r['simulated']:.4f}, mixed "
                  f"{number(r['rows']['mixed']['estimate']):.4f} [{r['rows']['mixed']['ci_low']}, "
                  f"{r['rows']['mixed']['ci_high']}] {r['rows']['mixed']['status']}, lesion "
                  f"{number(r['rows']['lesion']['estimate']):.4f} [{r['rows']['lesion']['ci_low']},"
                  f" {r['rows']['lesion']['ci_high']}]", flush=True)
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "preset": args.preset, "seed": args.seed,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}",
            "argv": " ".join(argv if argv is not None else sys.argv[1:])}
    if not args.no_write:
        path = RESULTS_PIPELINE if args.pipeline_out else RESULTS
        write_results(info, results, path)
        print(f"results in {path}")
    ok = all(number(r["rows"]["mixed"]["ci_low"]) <= r["simulated"]
             <= number(r["rows"]["mixed"]["ci_high"]) for r in results
             if r["rows"]["mixed"]["status"] in ("ok", "singular") and np.isfinite(r["simulated"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
