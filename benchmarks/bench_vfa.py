"""Benchmark of VFA T1 fitting: throughput and accuracy, one core.

Compares, on the same simulated voxels (T1 0.3..4 s, B1 0.8..1.2, M0 800..1200, Rician noise):
  * linear DESPOT1 with the B1 map (vectorised),
  * nonlinear least squares without a B1 map (nominal angles; vectorised),
  * nonlinear least squares with the per-voxel B1 map (vectorised),
  * a per-voxel ``scipy.optimize.least_squares`` loop (with B1) on a subsample, extrapolated to
    the full voxel count (the way most published reference implementations fit), once with
    scipy's default tolerances and once with tight tolerances as the convergence reference.

Writes ``benchmarks/results/vfa.md``. Usage::

    python benchmarks/bench_vfa.py [--voxels 1000000] [--ls-voxels 2000] [--repeats 3]
"""
from __future__ import annotations

# one core: must be set before numpy is imported
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bids_agquant.qmri.spgr import spgr_signal  # noqa: E402
from bids_agquant.qmri.vfa import VFAModel  # noqa: E402

FLIP_ANGLES_DEG = np.array([2.0, 5.0, 10.0, 15.0])
TR_S = 0.005


def simulate(n, snr, seed):
    """Voxels with known truth; Rician magnitude noise of one sigma for the whole 'scan'."""
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(0.3, 4.0, n)
    b1 = rng.uniform(0.8, 1.2, n)
    m0 = rng.uniform(800.0, 1200.0, n)
    clean = spgr_signal(m0, t1, FLIP_ANGLES_DEG, TR_S, b1)
    sigma = float(np.median(clean.max(axis=-1))) / snr
    noisy = np.hypot(clean + rng.normal(0.0, sigma, clean.shape),
                     rng.normal(0.0, sigma, clean.shape))
    return noisy, t1, b1, m0, sigma


def timed(fn, repeats):
    """Best wall and CPU (process) time over repeats, and the last result."""
    best_wall = best_cpu = np.inf
    out = None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, out


def lsq_loop(signal, b1, start_m0, start_t1, tight):
    """Per-voxel scipy least_squares over (M0, T1) on the SPGR equation; returns T1 and M0."""
    t1 = np.full(len(signal), np.nan)
    m0 = np.full(len(signal), np.nan)
    opts = dict(jac="3-point", xtol=1e-14, ftol=1e-14, gtol=1e-14) if tight else {}
    for i, s in enumerate(signal):
        b = None if b1 is None else b1[i]
        m0_0, t1_0 = start_m0[i], start_t1[i]
        if not (np.isfinite(m0_0) and np.isfinite(t1_0) and m0_0 > 0 and t1_0 > 0):
            m0_0, t1_0 = float(np.max(s)) * 20.0, 1.0

        def resid(p, s=s, b=b):
            return spgr_signal(p[0], p[1], FLIP_ANGLES_DEG, TR_S, b) - s

        try:
            r = least_squares(resid, [m0_0, t1_0], x_scale=[m0_0, t1_0], **opts)
            if r.success and r.x[1] > 0 and r.x[0] > 0:
                m0[i], t1[i] = r.x
        except ValueError:
            pass
    return t1, m0


def ssr(signal, m0, t1, b1):
    """Sum of squared residuals of the SPGR model per voxel."""
    return np.sum((spgr_signal(m0, t1, FLIP_ANGLES_DEG, TR_S, b1) - signal) ** 2, axis=-1)


def rel_err(est, truth):
    return np.abs(est / truth - 1.0)


def pct(a, q):
    a = a[np.isfinite(a)]
    return float(np.percentile(a, q)) if a.size else float("nan")


def machine_info():
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "platform": platform.platform()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voxels", type=int, default=1_000_000)
    ap.add_argument("--ls-voxels", type=int, default=2000,
                    help="subsample fitted by the per-voxel least_squares loops")
    ap.add_argument("--snr", type=float, default=50.0,
                    help="median brightest-image signal / noise sigma")
    ap.add_argument("--repeats", type=int, default=3, help="timing: best of this many runs")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "vfa.md")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    n = args.voxels
    signal, t1_true, b1, m0_true, sigma = simulate(n, args.snr, args.seed)
    nls = min(args.ls_voxels, n)
    sub = np.random.default_rng(args.seed + 1).choice(n, nls, replace=False)

    linear = VFAModel(FLIP_ANGLES_DEG, TR_S, "linear")
    nonlinear = VFAModel(FLIP_ANGLES_DEG, TR_S, "nonlinear")
    rows = []

    def add(name, wall, cpu, n_fit, t1_est_sub, t1_est_all, failed, ls_ref_sub):
        rows.append({
            "method": name, "wall": wall, "cpu": cpu, "n": n_fit,
            "per_1e6": wall * 1e6 / n_fit, "vox_per_s": n_fit / wall,
            "med": pct(rel_err(t1_est_sub, t1_true[sub]), 50),
            "p95": pct(rel_err(t1_est_sub, t1_true[sub]), 95),
            "med_all": pct(rel_err(t1_est_all, t1_true), 50) if t1_est_all is not None else None,
            "p95_all": pct(rel_err(t1_est_all, t1_true), 95) if t1_est_all is not None else None,
            "failed": failed,
            "vs_ls_max": float(np.nanmax(rel_err(t1_est_sub, ls_ref_sub)))
            if ls_ref_sub is not None else None,
            "vs_ls_med": float(np.nanmedian(rel_err(t1_est_sub, ls_ref_sub)))
            if ls_ref_sub is not None else None,
        })

    print(f"{n} voxels x {FLIP_ANGLES_DEG.size} flip angles, least_squares subsample {nls}",
          flush=True)
    w, c, fit_lin = timed(lambda: linear.fit(signal, b1=b1), args.repeats)
    print(f"linear DESPOT1 + B1: {w:.3f} s", flush=True)
    w_nob1, c_nob1, fit_nob1 = timed(lambda: nonlinear.fit(signal), args.repeats)
    print(f"nonlinear, no B1: {w_nob1:.3f} s", flush=True)
    w_b1, c_b1, fit_b1 = timed(lambda: nonlinear.fit(signal, b1=b1), args.repeats)
    print(f"nonlinear + B1: {w_b1:.3f} s", flush=True)

    # per-voxel least squares on the subsample, starting from DESPOT1 like our fit
    lin_sub = linear.fit(signal[sub], b1=b1[sub])
    w0, c0 = time.perf_counter(), time.process_time()
    ls_default, ls_default_m0 = lsq_loop(signal[sub], b1[sub], lin_sub.m0, lin_sub.t1, tight=False)
    w_ls, c_ls = time.perf_counter() - w0, time.process_time() - c0
    print(f"least_squares loop (defaults), {nls} voxels: {w_ls:.2f} s", flush=True)
    w0, c0 = time.perf_counter(), time.process_time()
    ls_tight, ls_tight_m0 = lsq_loop(signal[sub], b1[sub], lin_sub.m0, lin_sub.t1, tight=True)
    w_lst, c_lst = time.perf_counter() - w0, time.process_time() - c0
    print(f"least_squares loop (tight), {nls} voxels: {w_lst:.2f} s", flush=True)
    lin_sub_nob1 = linear.fit(signal[sub])
    ls_tight_nob1, _ = lsq_loop(signal[sub], None, lin_sub_nob1.m0, lin_sub_nob1.t1, tight=True)

    add("linear DESPOT1, per-voxel B1 (vectorised)", w, c, n, fit_lin.t1[sub], fit_lin.t1,
        fit_lin.n_failed, ls_tight)
    add("nonlinear, no B1 map (vectorised)", w_nob1, c_nob1, n, fit_nob1.t1[sub], fit_nob1.t1,
        fit_nob1.n_failed, ls_tight_nob1)
    add("**nonlinear, per-voxel B1 (vectorised)**", w_b1, c_b1, n, fit_b1.t1[sub], fit_b1.t1,
        fit_b1.n_failed, ls_tight)
    add("scipy least_squares loop, per-voxel B1, default tolerances", w_ls, c_ls, nls, ls_default,
        None, int(np.count_nonzero(~np.isfinite(ls_default))), ls_tight)
    add("scipy least_squares loop, per-voxel B1, tol 1e-14 (reference)", w_lst, c_lst, nls,
        ls_tight, None, int(np.count_nonzero(~np.isfinite(ls_tight))), ls_tight)
    load_after = os.getloadavg()
    ssr_ls = ssr(signal[sub], ls_tight_m0, ls_tight, b1[sub])
    ssr_ours = ssr(signal[sub], fit_b1.m0[sub], fit_b1.t1[sub], b1[sub])
    ssr_lsdef = ssr(signal[sub], ls_default_m0, ls_default, b1[sub])
    both = np.isfinite(ssr_ls) & np.isfinite(ssr_ours)
    ratio_ours = ssr_ours[both] / ssr_ls[both] - 1
    ratio_lsdef = ssr_lsdef[both] / ssr_ls[both] - 1

    info = machine_info()
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        "# VFA T1 fit benchmark",
        "",
        f"Generated by `benchmarks/bench_vfa.py --voxels {n} --ls-voxels {nls} --snr {args.snr:g} "
        f"--repeats {args.repeats}` on {when}.",
        "",
        f"- Data: {n:,} voxels x {FLIP_ANGLES_DEG.size} flip angles "
        f"({', '.join(f'{a:g}' for a in FLIP_ANGLES_DEG)} deg), TR {TR_S * 1e3:g} ms; truth T1 "
        f"uniform 0.3..4 s, B1 0.8..1.2, M0 800..1200; Rician noise sigma {sigma:.3g} (SNR "
        f"{args.snr:g} on the median brightest image). The T1 errors of the no-B1 fit include "
        f"the B1 bias (the data have B1 errors), by design.",
        "- One core: OMP/OPENBLAS/MKL_NUM_THREADS=1 set before importing numpy. Times are the "
        f"best of {args.repeats} runs (wall clock; CPU time beside it) for the vectorised fits, "
        "one "
        "run for the least-squares loops; per-1e6 times of the loops are extrapolated from the "
        f"{nls}-voxel subsample.",
        "- Accuracy columns use the same subsample for every method: |T1/T1_true - 1| (median, "
        "95th percentile); 'all' columns over every voxel. 'vs LS' is |T1/T1_LS - 1| against the "
        "tight-tolerance least_squares fit with the same B1 handling (the no-B1 row against a "
        "no-B1 least_squares fit).",
        f"- Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['platform']}; "
        f"Python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}.",
        f"- Load: 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after. "
        "The machine is shared by other jobs; timings taken under load are pessimistic.",
        "",
        "| method | voxels timed | wall s | CPU s | s per 1e6 voxels | voxels/s | failed | "
        "median rel err | 95th pct rel err | median (all) | 95th pct (all) | max rel diff vs LS | "
        "median rel diff vs LS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(x, fmt):
        return "" if x is None else format(x, fmt)

    for r in rows:
        lines.append(
            f"| {r['method']} | {r['n']:,} | {r['wall']:.3f} | {r['cpu']:.3f} | "
            f"{r['per_1e6']:.3g} | {r['vox_per_s']:.3g} | {r['failed']} | {f(r['med'], '.4f')} | "
            f"{f(r['p95'], '.4f')} | {f(r['med_all'], '.4f')} | {f(r['p95_all'], '.4f')} | "
            f"{f(r['vs_ls_max'], '.2e')} | {f(r['vs_ls_med'], '.2e')} |")
    speedup = rows[3]["per_1e6"] / rows[2]["per_1e6"]
    lines += [
        "",
        f"Nonlinear with per-voxel B1: {rows[2]['wall']:.3f} s wall ({rows[2]['cpu']:.3f} s CPU) "
        f"for {n:,} voxels "
        f"({rows[2]['vox_per_s']:.3g} voxels/s), {speedup:.0f}x the per-voxel least_squares loop "
        f"(extrapolated {rows[3]['per_1e6']:.0f} s per 1e6 voxels); largest T1 difference from "
        f"the tight least_squares optimum {rows[2]['vs_ls_max']:.1e} relative "
        f"(least_squares with default tolerances: {rows[3]['vs_ls_max']:.1e}). "
        f"Sum of squared residuals (SSR) relative to the tight least_squares fit, over the "
        f"subsample: ours {np.min(ratio_ours):+.1e} .. {np.max(ratio_ours):+.1e} (median "
        f"{np.median(ratio_ours):+.1e}); default-tolerance least_squares "
        f"{np.min(ratio_lsdef):+.1e} .. {np.max(ratio_lsdef):+.1e}. SSR differences of 1e-11 are "
        f"float64 rounding when the residual is 1e-3 of the signal: there an optimiser driven by "
        f"the SSR (least_squares) cannot resolve T1 below about 1e-7, which is the size of the "
        f"T1 differences; both sit at the same minimum.",
        "",
        "For orientation (issue 2, measured on this machine class, one core, 1e6 x 4): per-voxel "
        "least squares about 770 s; NOVIFAST (no per-voxel B1) 1.23 s; a plain vectorised numpy "
        "Gauss-Newton with B1 2.6-3.0 s; vectorised DESPOT1 0.15 s.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
