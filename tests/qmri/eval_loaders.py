"""Loaders for the external VFA reference data in ``../shared/eval`` (read in place, never copied).

Every value is converted to the project's units on load: flip angles in degrees, TR in seconds,
R1 in 1/s, T1 in seconds, B1 as a multiplicative factor. The units differ per OSIPI file (see
``osipi_t1/README.md``): brain TR s and R1 1/s; QIBA TR s and R1 1/ms; prostate TR ms, T1 ms and
B1 percent; the prostate header names after the second column start with a space. Each converted
value is checked against a plausible range so that a unit mix-up fails loudly instead of
silently passing or failing the fits.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OSIPI_T1_FILES = ("t1_brain_data.csv", "t1_quiba_data.csv", "t1_prostate_data.csv")

# unit factors to (s, 1/s, s, factor) per file, from the README's table
_UNITS = {
    "t1_brain_data.csv": {"tr_to_s": 1.0, "r1_to_per_s": 1.0},
    "t1_quiba_data.csv": {"tr_to_s": 1.0, "r1_to_per_s": 1000.0},
    "t1_prostate_data.csv": {"tr_to_s": 1e-3, "t1_to_s": 1e-3, "b1_to_factor": 1e-2},
}


@dataclass(frozen=True)
class OsipiT1Case:
    label: str
    source: str                       # file name
    flip_angles_deg: np.ndarray
    tr_s: float
    signal: np.ndarray
    r1_ref_per_s: float               # what OSIPI tests against
    b1: float | None = None           # prostate only (factor)
    t1_refs_s: dict = field(default_factory=dict)  # prostate: every T1 column, in s


class EvalDataError(ValueError):
    pass


def _vector(cell: str, what: str, path: Path, label: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in cell.split()], dtype=np.float64)
    except ValueError:
        raise EvalDataError(f"{path.name}: case {label!r}: column {what!r} is not a list of "
                            f"numbers: {cell!r}") from None


def _check(value, lo, hi, what, path, label):
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if not (np.all(np.isfinite(arr)) and np.all(arr >= lo) and np.all(arr <= hi)):
        raise EvalDataError(f"{path.name}: case {label!r}: {what}={arr.tolist()} outside the "
                            f"plausible range [{lo}, {hi}] after unit conversion; check units")


def load_osipi_t1_file(path: Path) -> list[OsipiT1Case]:
    """All cases of one OSIPI T1 CSV file, converted to project units."""
    path = Path(path)
    units = _UNITS[path.name]
    cases = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            rec = {h: v.strip() for h, v in zip(header, row)}
            label = rec["label"]
            fa = _vector(rec["FA"], "FA", path, label)
            tr = _vector(rec["TR"], "TR", path, label) * units["tr_to_s"]
            sig = _vector(rec["s"], "s", path, label)
            if not (fa.size == sig.size and tr.size == fa.size):
                raise EvalDataError(f"{path.name}: case {label!r}: FA, TR and s have different "
                                    f"lengths {fa.size}, {tr.size}, {sig.size}")
            if np.ptp(tr) > 1e-12:
                raise EvalDataError(f"{path.name}: case {label!r}: TR differs between flip angles")
            _check(fa, 0.5, 90, "FA (deg)", path, label)
            _check(tr[0], 1e-3, 0.1, "TR (s)", path, label)
            b1 = None
            t1_refs = {}
            if "R1" in rec:
                r1 = float(rec["R1"]) * units["r1_to_per_s"]
            else:
                for name in ("T1 linear", "T1 nonlinear", "T1 linear B1cor", "T1 nonlinear B1cor"):
                    t1_refs[name] = float(rec[name]) * units["t1_to_s"]
                    _check(t1_refs[name], 0.05, 10, name + " (s)", path, label)
                r1 = 1.0 / t1_refs["T1 nonlinear"]  # OSIPI's reference (no B1 correction)
                b1 = float(rec["B1"]) * units["b1_to_factor"]
                _check(b1, 0.5, 1.5, "B1 (factor)", path, label)
            _check(r1, 0.05, 100, "R1 (1/s)", path, label)
            cases.append(OsipiT1Case(label=label, source=path.name, flip_angles_deg=fa,
                                     tr_s=float(tr[0]), signal=sig, r1_ref_per_s=r1, b1=b1,
                                     t1_refs_s=t1_refs))
    if not cases:
        raise EvalDataError(f"{path}: no cases found")
    return cases


def load_osipi_t1(folder: Path) -> list[OsipiT1Case]:
    """The 171 OSIPI cases in OSIPI's order: brain + QIBA + prostate."""
    out = []
    for name in OSIPI_T1_FILES:
        out += load_osipi_t1_file(Path(folder) / name)
    return out
