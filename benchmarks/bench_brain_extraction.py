"""Brain extraction on real-anatomy phantoms; writes results/brain_extraction.md.

    python benchmarks/bench_brain_extraction.py [--seeds 505 606 707] [--tuned 101]
        [--work DIR] [--also DIR ...] [--note TEXT]

Candidates, each on the baseline pre-contrast T1w of a ``--clinical --anatomy mni`` phantom (1 mm
T1w 180 x 220 x 180, SNR 40; each participant its own warped MNI152 brain with skull, muscle,
neck), scored against the truth's intracranial fraction map on the same grid:

* ours: ``bids_agquant.interfaces.brain.extract_brain`` with the T1 and M0 maps the participant
  level wrote for the baseline pre-contrast state (two affine registrations of the nilearn
  MNI152 template with antspyx, then the T1/M0 maps decide each voxel);
* old: ``bids_agquant.qmri.masks.brain_mask_from_t1`` on the same T1 map (a T1 window, opening,
  largest component), the mask before issue 12;
* brainextractor (PyPI, MIT, a re-implementation of FSL BET): its command line in a subprocess
  from a separate virtual environment (``BIDS_AGQUANT_BET_VENV``, e.g. /tmp/bet_venv; not a
  project dependency), default settings (fractional threshold 0.5, 1000 iterations); skipped
  with a message when that variable is unset or the venv has no ``brainextractor``.

Metrics: Dice against the true intracranial mask (fraction > 0.5); extracranial fraction of
the mask (sum over mask voxels of 1 - true intracranial fraction / mask voxels); missed
fraction (true intracranial voxels outside the mask / true intracranial voxels); wall time of
the extraction alone (inputs loaded; brainextractor: the whole subprocess, numba compilation
included, as a user would run it). Criteria of issue 12: Dice >= 0.95, extracranial <= 2 %.
For ours also: tissue probabilities against the truth fractions inside the mask (mean absolute
error of parenchyma = GM + WM, and of CSF), and, from the participant level's outputs, each
control sphere's true composition and concentration and the SE of far healthy parenchyma.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from _bench_util import (MASK_MAX_EXTRACRANIAL, MASK_MIN_DICE, anatomy_truth,  # noqa: E402
                         code_version, controls_markdown, far_se_markdown, load_image,
                         machine, mask_scores, real_anatomy_checks, real_anatomy_criteria,
                         run_measured, subprocess_env)
from bids_agquant.interfaces.brain import extract_brain  # noqa: E402
from bids_agquant.qmri.masks import brain_mask_from_t1  # noqa: E402
from bids_agquant.simulate import load_truth, simulate_dataset  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "brain_extraction.md"
ENV = subprocess_env(REPO)
BET_VENV_VAR = "BIDS_AGQUANT_BET_VENV"


def bet_command() -> tuple[list[str] | None, str]:
    """The brainextractor command of the venv in BET_VENV_VAR, or None and why not."""
    venv = os.environ.get(BET_VENV_VAR)
    if not venv:
        return None, f"skipped: {BET_VENV_VAR} is not set (path of a venv with brainextractor)"
    exe = Path(venv) / "bin" / "brainextractor"
    if not exe.is_file():
        return None, f"skipped: {exe} not found ({BET_VENV_VAR}={venv})"
    return [str(exe)], f"brainextractor of {venv} ({venv_summary(Path(venv))})"


def venv_summary(venv: Path) -> str:
    """Size on disk and installed distributions of a virtual environment."""
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    dists = sorted(d.name[: -len(".dist-info")].replace("_", "-")
                   for d in venv.glob("lib/python*/site-packages/*.dist-info"))
    return f"{size / 1e6:.0f} MB installed: {', '.join(dists)}"


def phantom(work: Path, seed: int, nprocs: int) -> dict:
    """Simulate the phantom of ``seed`` and run the participant level (unless done before)."""
    name = f"mni{seed}"
    paths = {k: work / f"{name}_{k}" for k in ("bids", "truth", "out", "work")}
    paths["name"], paths["seed"] = name, seed
    done = paths["out"] / "dataset_description.json"
    if (paths["truth"] / "truth.json").exists() and done.exists():
        return paths
    simulate_dataset(paths["bids"], truth_dir=paths["truth"], preset="clinical", anatomy="mni",
                     seed=seed, overwrite=True)
    with open(work / f"{name}.log", "w") as log:
        run = run_measured([sys.executable, "-m", "bids_agquant", str(paths["bids"]),
                            str(paths["out"]), "participant", "-w", str(paths["work"]),
                            "--nprocs", str(nprocs)], env=ENV, log=log)
    if run["code"]:
        raise SystemExit(f"{name}: participant level failed, see {work / (name + '.log')}")
    (work / f"{name}_run.json").write_text(json.dumps(run))
    return paths


def accuracy_phantoms(folder: Path) -> list[dict]:
    """The real-anatomy phantoms of a bench_accuracy work folder (``<X>_bids/_truth/_out``)."""
    out = []
    for t in sorted(folder.glob("*_truth")):
        meta = json.loads((t / "truth.json").read_text())
        name = t.name[: -len("_truth")]
        if meta["config"].get("anatomy") == "mni" and (folder / f"{name}_out").is_dir():
            out.append({"name": f"accuracy {name}", "seed": meta["config"]["seed"],
                        "bids": folder / f"{name}_bids", "truth": t,
                        "out": folder / f"{name}_out"})
    return out


def inputs(paths: dict):
    """(truth, participant, T1w path, T1w, affine, T1 map, M0 map) of a phantom's baseline."""
    truth = load_truth(paths["truth"])
    p = truth.participants[0]
    base = truth.sessions(p)[0]
    t1w_file = (paths["bids"] / f"sub-{p}" / f"ses-{base}" / "anat"
                / f"sub-{p}_ses-{base}_T1w.nii.gz")
    anat = paths["out"] / f"sub-{p}" / f"ses-{base}" / "anat"
    t1_file, = [f for f in anat.glob("*_T1map.nii.gz") if "_ce-" not in f.name]
    m0_file, = [f for f in anat.glob("*_M0map.nii.gz") if "_ce-" not in f.name]
    img = nib.load(str(t1w_file))
    return (truth, p, t1w_file, np.asarray(img.dataobj, dtype=np.float32), img.affine,
            load_image(t1_file), load_image(m0_file))


def run_bet(cmd: list[str], t1w_file: Path) -> tuple[np.ndarray | None, float, str]:
    with tempfile.TemporaryDirectory(prefix="bench_bet_") as tmp:
        out = Path(tmp) / "mask.nii.gz"
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, str(t1w_file), str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode or not out.exists():
            return None, wall, f"failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
        return load_image(out) > 0.5, wall, ""


def tissue_errors(result, maps) -> dict:
    mask = result.mask
    par = (result.tissues.gm + result.tissues.wm)[mask]
    return {"mae_parenchyma": float(np.abs(par - maps["parenchyma"][mask]).mean()),
            "mae_csf": float(np.abs(result.tissues.csf[mask] - maps["csf"][mask]).mean())}


def evaluate(paths: dict, bet: list[str] | None) -> dict:
    truth, p, t1w_file, t1w, aff, t1, m0 = inputs(paths)
    maps = anatomy_truth(truth, p)
    scores, notes = {}, {}
    t0 = time.perf_counter()
    result = extract_brain(t1w, aff, t1, m0)
    scores["ours"] = {**mask_scores(result.mask, maps["intracranial"], aff),
                      "wall_s": time.perf_counter() - t0, **tissue_errors(result, maps)}
    t0 = time.perf_counter()
    old = brain_mask_from_t1(t1, aff)
    scores["old"] = {**mask_scores(old, maps["intracranial"], aff),
                     "wall_s": time.perf_counter() - t0}
    if bet is not None:
        mask, wall, why = run_bet(bet, t1w_file)
        if mask is None:
            notes["brainextractor"] = why
        else:
            scores["brainextractor"] = {**mask_scores(mask, maps["intracranial"], aff),
                                        "wall_s": wall}
    return {"scores": scores, "notes": notes, "checks": real_anatomy_checks(paths["out"], truth, p),
            "true_ml": float((maps["intracranial"] > 0.5).sum()
                             * abs(np.linalg.det(aff[:3, :3])) / 1000.0)}


def score_lines(label: str, ev: dict) -> list[str]:
    rows = []
    for cand, s in ev["scores"].items():
        ok = s["dice"] >= MASK_MIN_DICE and s["extracranial"] <= MASK_MAX_EXTRACRANIAL
        tissue = (f"{100 * s['mae_parenchyma']:.1f} / {100 * s['mae_csf']:.1f}"
                  if "mae_csf" in s else "")
        rows.append(f"| {label} | {cand} | {s['dice']:.4f} | {100 * s['extracranial']:.2f} | "
                    f"{100 * s['missed']:.2f} | {s['volume_ml']:.0f} / {ev['true_ml']:.0f} | "
                    f"{s['wall_s']:.1f} | {tissue} | {'yes' if ok else '**NO**'} |")
    rows += [f"| {label} | {cand} | - | - | - | - | - | - | {why} |"
             for cand, why in ev["notes"].items()]
    return rows


TABLE_HEAD = ["| phantom | candidate | Dice | extracranial % | missed % | volume / true (mL) "
              "| time (s) | tissue MAE % (parenchyma / CSF) | criteria |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]


def participant_lines(label: str, ev: dict) -> list[str]:
    crit = real_anatomy_criteria(ev["checks"])
    return [f"### {label}: the participant level's outputs", "",
            "| criterion | pass | detail |", "|---|---|---|",
            *[f"| {k} | {'yes' if ok else '**NO**'} | {d} |" for k, ok, d in crit], "",
            *controls_markdown(ev["checks"]["controls"]), "",
            "SE of healthy parenchyma (true parenchyma > 0.9, >= 10 mm from every lesion):", "",
            *far_se_markdown(ev["checks"]["se"]), ""]


def collect(args) -> list[tuple[str, dict, bool]]:
    """(label, paths, tuned on) of every phantom to measure."""
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_brain_"))
    work.mkdir(parents=True, exist_ok=True)
    found = [p for folder in args.also for p in accuracy_phantoms(folder)]
    have = {p["seed"] for p in found}
    out = [(f"{p['name']} (seed {p['seed']})", p, False) for p in found]
    for seed in args.seeds:
        if seed not in have:
            out.append((f"seed {seed}", phantom(work, seed, args.nprocs), False))
    for seed in args.tuned:
        out.append((f"seed {seed} (tuned on)", phantom(work, seed, args.nprocs), True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[505, 606, 707])
    ap.add_argument("--tuned", type=int, nargs="*", default=[101])
    ap.add_argument("--work", type=Path, default=None, help="work folder (reused when it holds "
                    "a phantom's outputs already)")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="bench_accuracy work folders: their real-anatomy phantoms count too "
                         "(a seed found there is not simulated again)")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    bet, bet_msg = bet_command()
    print(bet_msg)
    phantoms = collect(args)
    lines = [f"# Brain extraction on real-anatomy phantoms ({dt.date.today()})", "",
             __doc__.split("\n\n", 2)[2].strip(), "", f"Machine: {machine()}.",
             f"Code: commit {code_version(REPO)}.",
             f"brainextractor: {bet_msg}.", ""]
    if args.note:
        lines += [args.note, ""]
    held = [lab for lab, _, tuned in phantoms if not tuned]
    lines += [f"Held out (not tuned on): {', '.join(held)}. Tuned on: "
              f"{', '.join(lab for lab, _, tuned in phantoms if tuned) or 'none'}.", "",
              "## Brain masks", "", *TABLE_HEAD]
    evals = []
    for label, paths, _ in phantoms:
        print(f"{label} ...", flush=True)
        evals.append((label, evaluate(paths, bet)))
        lines += score_lines(label, evals[-1][1])
    lines += ["", "## Control spheres and healthy-parenchyma SE (participant level)", ""]
    for label, ev in evals:
        lines += participant_lines(label, ev)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
