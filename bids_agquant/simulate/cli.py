"""``bids-agquant-simulate OUT [options]``: write a phantom BIDS dataset and its truth.

Examples::

    bids-agquant-simulate /tmp/phantom --preset small --seed 3
    bids-agquant-simulate /tmp/clin --clinical --truth /tmp/clin_truth
    bids-agquant-simulate /tmp/p --participants 4 --doses 100 50 30 15 --sessions day0 day1 day8 day28 \
        --snr 30 --motion-deg 5 --motion-mm 8 --b1-range 0.85 1.15
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from .config import ANATOMIES, B1_METHODS, PRESETS
from .dataset import simulate_dataset
from .sites import simulate_cohort


def _triple(text: str) -> tuple[float, float, float]:
    parts = [float(v) for v in text.replace("x", ",").split(",") if v]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give one size or three (e.g. 2 or 2,2,3)")
    return tuple(parts)


def _snr(text: str) -> float | None:
    if text.lower() in ("none", "inf", "off", "0"):
        return None
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bids-agquant-simulate",
        description="Digital phantom of the NanoRad AGuIX protocol: writes a raw BIDS dataset "
                    "(T1w, VFA, TB1map, lesion masks) and its ground truth beside it.")
    p.add_argument("out", help="output BIDS directory (must be empty or absent)")
    p.add_argument("--truth", help="truth directory (default: OUT_truth beside OUT)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="base settings (default: clinical-like "
                   "defaults with 2 participants)")
    p.add_argument("--clinical", action="store_const", const="clinical", dest="preset",
                   help="same as --preset clinical (1 mm whole head, 4 sessions)")
    p.add_argument("--small", action="store_const", const="small", dest="preset",
                   help="same as --preset small (3 mm, fast)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/truth written by an earlier run")
    g = p.add_argument_group("cohort and sessions")
    g.add_argument("--participants", type=int, dest="n_participants", help="number of participants")
    g.add_argument("--doses", type=float, nargs="+", help="AGuIX doses in mg/kg (cycled)")
    g.add_argument("--primary-tumors", nargs="+", help="primary tumours (cycled)")
    g.add_argument("--sessions", nargs="+", help="session labels in trial order "
                   "(baseline, AGuIX 2 h, AGuIX residual, follow-up); default D0 D1 D8 D28")
    g.add_argument("--session-days", type=float, nargs="+", help="day of each session")
    g.add_argument("--no-followup-pre", action="store_false", dest="followup_pre", default=None,
                   help="the follow-up session has no pre-contrast acquisition")
    g.add_argument("--seed", type=int, help="random seed (same seed, same bytes)")
    g.add_argument("--noise-seed", type=int, help="seed of the image noise alone (default: "
                   "--seed): the same phantom under another noise realisation")
    g.add_argument("--anatomy", choices=list(ANATOMIES),
                   help="head model: geometric (analytic head, default, fast) or mni (each "
                        "participant's own warp of the MNI152 brain, with skull, muscle, neck)")
    g = p.add_argument_group("acquisition")
    g.add_argument("--t1w-voxel", type=_triple, dest="t1w_voxel_mm", help="T1w voxel mm (e.g. 1 or 1,1,1)")
    g.add_argument("--vfa-voxel", type=_triple, dest="vfa_voxel_mm", help="VFA voxel mm (e.g. 2,2,3)")
    g.add_argument("--b1-voxel", type=_triple, dest="b1_voxel_mm", help="B1 map voxel mm (default: VFA grid)")
    g.add_argument("--b1-fov", type=_triple, dest="b1_fov_mm",
                   help="B1 map box mm (default: the VFA box; a smaller third edge: a slab)")
    g.add_argument("--b1-tilt", type=float, dest="b1_tilt_deg",
                   help="tilt (deg) of the B1 box about its first axis against the VFA box")
    g.add_argument("--fov", type=_triple, dest="fov_mm", help="field of view mm (x,y,z)")
    g.add_argument("--flip-angles", type=float, nargs="+", dest="vfa_flip_angles_deg", help="VFA flip angles deg")
    g.add_argument("--vfa-tr", type=float, dest="vfa_tr_s", help="VFA TR in s")
    g.add_argument("--snr", type=_snr, help="white-matter SNR (none = noiseless float images)")
    g.add_argument("--gain-range", type=float, nargs=2, help="per-session receiver gain range")
    g.add_argument("--motion-deg", type=float, help="max rotation between sessions (deg)")
    g.add_argument("--motion-mm", type=float, help="max translation between sessions (mm)")
    g.add_argument("--oblique-deg", type=float, help="max obliquity of acquisition grids (deg)")
    g.add_argument("--b1-range", type=float, nargs=2, help="B1+ factor range over the head")
    g.add_argument("--b1-percent", action="store_const", const="percent", dest="b1_units",
                   help="write TB1map in percent (100 = nominal) instead of a factor")
    g.add_argument("--b1-method", choices=list(B1_METHODS),
                   help="the B1 data written to fmap/: a TB1map (default) or the images of a B1 "
                        "mapping method (AFI, double angle, Siemens tfl/rf map, 3D EPI SE/STE)")
    g = p.add_argument_group("lesions and metadata")
    g.add_argument("--lesion-diameters", type=float, nargs="+", dest="lesion_diameters_mm",
                   help="longest diameters (mm) of the metastases of each participant")
    g.add_argument("--lesion-shape", choices=["sphere", "ellipsoid"])
    g.add_argument("--lesion-derivative", choices=["mask", "dseg", "both"])
    g.add_argument("--identifying-fields", action="store_true", default=None,
                   help="plant identifying DICOM fields in the sidecars (privacy tests)")
    g = p.add_argument_group("multi-site cohort (bids_agquant.simulate.sites)")
    g.add_argument("--multisite", action="store_true",
                   help="three sites (3 T, 1.5 T, 3 T; their own scanners, B1 patterns, gains, "
                        "SNR, VFA protocols and T1 biases) merged into one dataset with "
                        "participants.tsv site; the options above apply to every site first")
    g.add_argument("--participants-per-site", type=int, default=1,
                   help="participants of each site with --multisite (default 1)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    out, truth, preset, overwrite = args.pop("out"), args.pop("truth"), args.pop("preset"), args.pop("overwrite")
    multisite, per_site = args.pop("multisite"), args.pop("participants_per_site")
    t0 = time.perf_counter()
    settings = {k: v for k, v in args.items() if v is not None}
    try:
        if multisite:
            if "n_participants" in settings:
                raise ValueError("--participants does not apply with --multisite (use "
                                 "--participants-per-site)")
            record = simulate_cohort(out, truth_dir=truth, preset=preset, overwrite=overwrite,
                                     participants_per_site=per_site,
                                     seed=settings.pop("seed", 0), **settings)
        else:
            result = simulate_dataset(out, truth_dir=truth, preset=preset, overwrite=overwrite,
                                      command=shlex.join(["bids-agquant-simulate", *argv]),
                                      **settings)
    except (ValueError, FileExistsError) as exc:
        print(f"bids-agquant-simulate: error: {exc}", file=sys.stderr)
        return 64
    if multisite:
        n = sum(len(s["participants"]) for s in record["sites"])
        print(f"wrote {out} ({len(record['sites'])} sites, {n} participants) and truth "
              f"{truth or str(out).rstrip('/') + '_truth'} in {time.perf_counter() - t0:.1f} s")
        return 0
    n_les = result.lesions["lesion_id"].groupby(result.lesions["participant_id"]).nunique().sum()
    print(f"wrote {out} ({len(result.participants)} participants, {n_les} lesions) and truth "
          f"{result.root} in {time.perf_counter() - t0:.1f} s")
    return 0

if __name__ == "__main__":
    sys.exit(main())
