#!/usr/bin/env python3
"""Compare two bids_agquant output folders file by file (a refactor must not change results).

    python scripts/compare_outputs.py BEFORE_DIR AFTER_DIR [--allow-text KEY ...]
                                      [--same-path BEFORE_PATH AFTER_PATH] [--report FILE]

- NIfTI (``.nii``/``.nii.gz``): the data arrays must be identical (exact, NaN == NaN), and so must
  the affine and the shape and dtype of the stored data.
- TSV: the same columns in the same order and the same rows; a numeric cell may differ only by
  the rounding rule of the tabular module (6 significant digits, see
  :data:`SIGNIFICANT_DIGITS`): two numbers are equal when they agree to that many significant
  digits. Text cells must be identical.
- JSON: identical after removing the keys that change with every run (:data:`VOLATILE_KEYS`:
  timestamps, software versions, the machine-dependent container entry) and the keys named with
  ``--allow-text`` (text that the change fixes on purpose; each allowed difference is listed).
  Numbers inside JSON are compared with the same significant-digit rule. ``--same-path`` says
  that two input folders are the same data (the "before" run read a copy elsewhere): the first
  path is read as the second in JSON text. The links to input datasets in the top-level
  ``dataset_description.json`` (``DatasetLinks``, ``SourceDatasets`` URLs) depend on where the
  folders lie by design (a relative path when output and input share a folder, else the input's
  content identity): each is compared as the dataset it names (:func:`linked_dataset`).
- ``.mat`` transforms: identical bytes.
- HTML, figures (PNG/SVG) and logs are not compared (they embed dates and versions); missing or
  extra files are always reported.

Exit status 0 when the folders agree, 1 otherwise; one line per difference on stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

#: Numbers agree when they are equal to this many significant digits (the TSV writing rule).
SIGNIFICANT_DIGITS = 6
#: JSON keys whose value changes with every run or machine.
VOLATILE_KEYS = {"DateCreated", "GeneratedAt", "generated", "timestamp", "Version", "version",
                 "software_versions", "SoftwareVersions", "software", "Container", "CodeURL"}
#: Not compared (dates, versions and rendering inside).
SKIPPED_SUFFIXES = (".html", ".png", ".svg", ".log", ".pklz")
SKIPPED_PARTS = ("logs",)


def _same_number(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return f"{a:.{SIGNIFICANT_DIGITS}g}" == f"{b:.{SIGNIFICANT_DIGITS}g}" or \
        math.isclose(a, b, rel_tol=10.0 ** (1 - SIGNIFICANT_DIGITS), abs_tol=0.0)


def _as_number(text: str):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def compare_tsv(before: Path, after: Path) -> list[str]:
    def read(p):
        with open(p, newline="", encoding="utf-8") as f:
            return list(csv.reader(f, delimiter="\t"))
    a, b = read(before), read(after)
    if not a or not b or a[0] != b[0]:
        return [f"columns differ: {a[:1]} vs {b[:1]}"]
    if len(a) != len(b):
        return [f"{len(a) - 1} rows vs {len(b) - 1} rows"]
    out = []
    for i, (ra, rb) in enumerate(zip(a[1:], b[1:]), start=1):
        for col, x, y in zip(a[0], ra, rb):
            if x == y:
                continue
            nx, ny = _as_number(x), _as_number(y)
            if nx is None or ny is None or not _same_number(nx, ny):
                out.append(f"row {i} column {col}: {x!r} vs {y!r}")
    return out


#: (before, after) path pairs that name the same input (``--same-path``).
SAME_PATHS: list[tuple[str, str]] = []


def _json_diff(a, b, where: str, allowed: set[str], out: list[str]) -> None:
    if isinstance(a, str):
        for old, new in SAME_PATHS:
            a = a.replace(old, new)
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE_KEYS:
                continue
            here = f"{where}.{key}" if where else key
            if key not in a or key not in b:
                out.append(f"{here}: only in {'after' if key in b else 'before'}")
            elif key in allowed and a[key] != b[key]:
                out.append(f"ALLOWED {here}: {a[key]!r} -> {b[key]!r}")
            else:
                _json_diff(a[key], b[key], here, allowed, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _json_diff(x, y, f"{where}[{i}]", allowed, out)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        if not _same_number(float(a), float(b)):
            out.append(f"{where}: {a!r} vs {b!r}")
    elif a != b:
        out.append(f"{where}: {a!r} vs {b!r}")


def linked_dataset(uri, root: Path):
    """The dataset a ``DatasetLinks``/``SourceDatasets`` URI names, seen from output ROOT: a
    relative path (no scheme) that resolves to a folder is replaced by that folder's content
    identity, as the pipeline records a link it cannot make relative; other URIs are kept."""
    from bids_agquant.bids.derivatives import dataset_identity
    if not isinstance(uri, str) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uri):
        return uri
    target = root / uri
    return dataset_identity(target) if target.is_dir() else uri


def _canonical_links(desc, root: Path):
    if not isinstance(desc, dict):
        return desc
    desc = dict(desc)
    if isinstance(desc.get("DatasetLinks"), dict):
        desc["DatasetLinks"] = {k: linked_dataset(v, root)
                                for k, v in desc["DatasetLinks"].items()}
    if isinstance(desc.get("SourceDatasets"), list):
        desc["SourceDatasets"] = [
            {**d, "URL": linked_dataset(d["URL"], root)} if isinstance(d, dict) and "URL" in d
            else d for d in desc["SourceDatasets"]]
    return desc


def compare_json(before: Path, after: Path, allowed: set[str],
                 roots: tuple[Path, Path] | None = None) -> list[str]:
    """ROOTS: the two output folders when the files are their top-level dataset_description."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    if roots is not None:
        a, b = _canonical_links(a, roots[0]), _canonical_links(b, roots[1])
    out: list[str] = []
    _json_diff(a, b, "", allowed, out)
    return out


def compare_nifti(before: Path, after: Path) -> list[str]:
    import nibabel as nib
    a, b = nib.load(str(before)), nib.load(str(after))
    out = []
    if a.shape != b.shape or a.get_data_dtype() != b.get_data_dtype():
        out.append(f"shape/dtype {a.shape} {a.get_data_dtype()} vs {b.shape} {b.get_data_dtype()}")
    elif not np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj), equal_nan=True):
        da, db = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
        n = int(np.count_nonzero(~((da == db) | (np.isnan(da) & np.isnan(db)))))
        out.append(f"{n} voxels differ")
    if not np.array_equal(a.affine, b.affine):
        out.append("affine differs")
    return out


def compared_files(root: Path) -> set[Path]:
    files = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_dir() or any(part in SKIPPED_PARTS or part.startswith(".") for part in rel.parts):
            continue
        if p.name.endswith(SKIPPED_SUFFIXES):
            continue
        files.add(rel)
    return files


def compare(before: Path, after: Path, allowed: set[str]) -> tuple[list[str], dict[str, int]]:
    fb, fa = compared_files(before), compared_files(after)
    lines = [f"missing in after: {p}" for p in sorted(fb - fa)]
    lines += [f"extra in after: {p}" for p in sorted(fa - fb)]
    counts = {"nifti": 0, "tsv": 0, "json": 0, "other": 0}
    for rel in sorted(fb & fa):
        name = rel.name
        if name.endswith((".nii", ".nii.gz")):
            kind, diffs = "nifti", compare_nifti(before / rel, after / rel)
        elif name.endswith(".tsv"):
            kind, diffs = "tsv", compare_tsv(before / rel, after / rel)
        elif name.endswith(".json"):
            top = rel == Path("dataset_description.json")
            kind, diffs = "json", compare_json(before / rel, after / rel, allowed,
                                               (before, after) if top else None)
        else:
            kind = "other"
            same = (before / rel).read_bytes() == (after / rel).read_bytes()
            diffs = [] if same else ["bytes differ"]
        counts[kind] += 1
        lines += [f"{rel}: {d}" for d in diffs]
    return lines, counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--allow-text", action="append", default=[], metavar="KEY",
                    help="a JSON key whose value the change alters on purpose (listed, not failed)")
    ap.add_argument("--same-path", nargs=2, action="append", default=[],
                    metavar=("BEFORE_PATH", "AFTER_PATH"),
                    help="two paths of the same input data (a copy read by the before run)")
    ap.add_argument("--report", type=Path, help="also write the result to this file")
    args = ap.parse_args(argv)
    SAME_PATHS.extend((str(a), str(b)) for a, b in args.same_path)
    lines, counts = compare(args.before, args.after, set(args.allow_text))
    failures = [ln for ln in lines if "ALLOWED " not in ln]
    summary = (f"compared {counts['nifti']} NIfTI, {counts['tsv']} TSV, {counts['json']} JSON, "
               f"{counts['other']} other files: {len(failures)} difference(s), "
               f"{len(lines) - len(failures)} allowed text change(s)")
    text = "\n".join(lines + [summary]) + "\n"
    sys.stdout.write(text)
    if args.report:
        args.report.write_text(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
