"""Helpers of the workflow benchmarks: run a command while sampling the memory of its process
tree; scores of a brain mask, of the control spheres and of the SE of healthy parenchyma against
the truth of a real-anatomy (``--anatomy mni``) phantom."""
from __future__ import annotations

import csv
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

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


def subprocess_env(repo: Path) -> dict:
    """Environment of the pipeline subprocesses: ``repo`` first on PYTHONPATH, no nipype
    update check."""
    return {**os.environ, "NIPYPE_NO_ET": "1",
            "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)")


def code_version(repo: Path) -> str:
    """Commit of the code measured (with "+ changes" when the work tree differs from it)."""
    def git(*a):
        return subprocess.run(["git", "-C", str(repo), *a], capture_output=True,
                              text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


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


# --- real-anatomy phantoms (issue 12) --------------------------------------------------------

#: Criteria of issue 12 (Done-when).
MASK_MIN_DICE = 0.95
MASK_MAX_EXTRACRANIAL = 0.02
CONTROL_MIN_PARENCHYMA = 0.95
CONTROL_MAX_CONC_MM = 0.005
FAR_SE_MAX_PERCENT = 0.2
#: Healthy parenchyma for the SE check: true parenchyma fraction above this, and at least
#: FAR_FROM_LESION_MM from every true lesion voxel.
FAR_PARENCHYMA_FRACTION = 0.9
FAR_FROM_LESION_MM = 10.0


def load_image(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def mask_scores(mask, intracranial, affine) -> dict:
    """Dice against the true intracranial mask (fraction > 0.5), extracranial fraction of the
    mask (mean of 1 - true intracranial fraction over its voxels), missed fraction (true
    intracranial voxels outside the mask / true intracranial voxels)."""
    mask = np.asarray(mask, dtype=bool)
    true = intracranial > 0.5
    n = int(mask.sum())
    return {"dice": 2.0 * float((mask & true).sum()) / (n + int(true.sum())),
            "extracranial": float((1.0 - intracranial[mask]).sum()) / max(n, 1),
            "missed": float((true & ~mask).sum()) / max(int(true.sum()), 1),
            "volume_ml": n * float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0}


def anatomy_truth(truth, participant: str) -> dict:
    """The truth fraction maps used here (``intracranial``, ``parenchyma``, ``csf``), the lesion
    labels and the reference grid's affine."""
    maps = {k: truth.load_map(participant, k)[0].astype(np.float32)
            for k in ("intracranial", "parenchyma", "csf")}
    lesions, affine = truth.load_map(participant, "lesions")
    maps["lesions"] = lesions > 0
    maps["affine"] = affine
    return maps


def participant_files(out: Path, participant: str) -> dict:
    anat = Path(out) / f"sub-{participant}" / "anat"
    p = f"sub-{participant}_space-T1w"
    return {"brain": anat / f"{p}_desc-brain_mask.nii.gz",
            "controls": anat / f"{p}_desc-controls_dseg.nii.gz",
            "table": Path(out) / f"sub-{participant}" / f"sub-{participant}_desc-lesions_stats.tsv"}


def read_lesion_table(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


def control_composition(controls_dseg, maps, table: pd.DataFrame) -> pd.DataFrame:
    """One row per control sphere x post-contrast state: true parenchyma, CSF and extracranial
    fraction of the sphere (means of the truth maps over its voxels) and the table's values."""
    rows = []
    for k in sorted(int(v) for v in np.unique(controls_dseg) if v > 0):
        inside = controls_dseg == k
        truth_cols = {"true_parenchyma": float(maps["parenchyma"][inside].mean()),
                      "true_csf": float(maps["csf"][inside].mean()),
                      "true_extracranial": float(1.0 - maps["intracranial"][inside].mean())}
        for _, r in table[table.lesion_id == f"control-{k}"].iterrows():
            rows.append({"session_id": r.session_id, "contrast_agent": r.contrast_agent,
                         "control": f"control-{k}", **truth_cols,
                         "gm_fraction": r.get("gm_fraction", np.nan),
                         "wm_fraction": r.get("wm_fraction", np.nan),
                         "csf_fraction": r.get("csf_fraction", np.nan),
                         "conc_mean_mM": float(r.conc_mean_mM),
                         "se_mean_percent": float(r.se_mean_percent)})
    return pd.DataFrame(rows)


def far_parenchyma(maps) -> np.ndarray:
    """True parenchyma (> FAR_PARENCHYMA_FRACTION) at least FAR_FROM_LESION_MM from lesions."""
    spacing = np.sqrt((maps["affine"][:3, :3] ** 2).sum(axis=0))
    dist = ndimage.distance_transform_edt(~maps["lesions"], sampling=spacing)
    return (maps["parenchyma"] > FAR_PARENCHYMA_FRACTION) & (dist >= FAR_FROM_LESION_MM)


def far_parenchyma_se(out: Path, participant: str, maps) -> pd.DataFrame:
    """Mean SE (%) of far healthy parenchyma in every post-contrast SEmap of the participant."""
    far = far_parenchyma(maps)
    rows = []
    for f in sorted(Path(out, f"sub-{participant}").glob("ses-*/anat/*_SEmap.nii.gz")):
        se = load_image(f)[far]
        se = se[np.isfinite(se)]
        parts = dict(kv.split("-", 1) for kv in f.name.split("_") if "-" in kv)
        rows.append({"session_id": f"ses-{parts['ses']}", "contrast_agent": parts.get("ce", ""),
                     "n_voxels": int(se.size), "se_mean_percent": float(se.mean()),
                     "se_sd_percent": float(se.std())})
    return pd.DataFrame(rows)


def real_anatomy_checks(out: Path, truth, participant: str) -> dict:
    """Scores of the participant level's outputs on a real-anatomy phantom (issue 12)."""
    maps = anatomy_truth(truth, participant)
    files = participant_files(out, participant)
    mask = load_image(files["brain"]) > 0
    return {"mask": mask_scores(mask, maps["intracranial"], maps["affine"]),
            "controls": control_composition(load_image(files["controls"]).astype(int), maps,
                                            read_lesion_table(files["table"])),
            "se": far_parenchyma_se(out, participant, maps)}


def real_anatomy_criteria(checks: dict) -> list[tuple[str, bool, str]]:
    """(criterion, pass, detail) of issue 12 for the output of :func:`real_anatomy_checks`."""
    m, c, se = checks["mask"], checks["controls"], checks["se"]
    spheres = c.drop_duplicates("control")
    return [
        (f"brain mask Dice >= {MASK_MIN_DICE:g}", m["dice"] >= MASK_MIN_DICE,
         f"Dice {m['dice']:.4f} (missed {100 * m['missed']:.2f} %)"),
        (f"brain mask extracranial <= {100 * MASK_MAX_EXTRACRANIAL:g} %",
         m["extracranial"] <= MASK_MAX_EXTRACRANIAL, f"{100 * m['extracranial']:.2f} %"),
        (f"every control sphere >= {100 * CONTROL_MIN_PARENCHYMA:g} % true parenchyma",
         bool((spheres.true_parenchyma >= CONTROL_MIN_PARENCHYMA).all()),
         "min {:.1f} % over {} spheres (extracranial max {:.2f} %)".format(
             100 * spheres.true_parenchyma.min(), len(spheres),
             100 * spheres.true_extracranial.max())),
        (f"controls below {CONTROL_MAX_CONC_MM:g} mM",
         bool((c.conc_mean_mM.abs() < CONTROL_MAX_CONC_MM).all()),
         f"max |mean| {c.conc_mean_mM.abs().max():.4f} mM over {len(c)} control-states"),
        (f"SE of far parenchyma within {FAR_SE_MAX_PERCENT:g} % of 0",
         bool((se.se_mean_percent.abs() <= FAR_SE_MAX_PERCENT).all()),
         f"max |mean| {se.se_mean_percent.abs().max():.3f} % over {len(se)} post-contrast states "
         f"({int(se.n_voxels.min())}+ voxels each)"),
    ]


def controls_markdown(c: pd.DataFrame) -> list[str]:
    """Markdown table of :func:`control_composition` (fractions in %)."""
    lines = ["| session | agent | control | true parenchyma % | true CSF % | true extracranial % "
             "| table GM/WM/CSF % | conc (mM) | SE % |",
             "|---|---|---|---:|---:|---:|---|---:|---:|"]
    for _, r in c.iterrows():
        lines.append(
            f"| {r.session_id} | {r.contrast_agent} | {r.control} | "
            f"{100 * r.true_parenchyma:.1f} | "
            f"{100 * r.true_csf:.1f} | {100 * r.true_extracranial:.2f} | "
            f"{100 * r.gm_fraction:.0f}/{100 * r.wm_fraction:.0f}/{100 * r.csf_fraction:.0f} | "
            f"{r.conc_mean_mM:+.4f} | {r.se_mean_percent:+.2f} |")
    return lines


def far_se_markdown(se: pd.DataFrame) -> list[str]:
    """Markdown table of :func:`far_parenchyma_se`."""
    lines = ["| session | agent | voxels | mean SE % | SD % |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.session_id} | {r.contrast_agent} | {r.n_voxels} | {r.se_mean_percent:+.3f} | "
              f"{r.se_sd_percent:.2f} |" for _, r in se.iterrows()]
    return lines


def read_tsv_rows(path: Path) -> list[dict]:
    """The rows of a TSV file as dicts (column -> text)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def number(v) -> float:
    """A table cell as a float; text such as ``n/a`` is NaN."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
