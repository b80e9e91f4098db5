"""Outputs appear atomically, and many jobs can create the dataset-level files at once.

- The write helpers (``bids.derivatives`` for the participant level, ``reports._io`` for reports
  and the group level) are hammered by a writer process while reader processes read the final
  name in a loop: every read sees one complete version, never a truncated or empty file.
- ``ensure_dataset_description`` / ``update_bidsignore`` are called by many processes released
  at once into one fresh OUTPUT_DIR (what an HPC array does): one complete, parseable
  dataset_description.json, every .bidsignore line once, no temporary file left.
- A static guard: no module of the package writes a file other than through those helpers,
  except the reviewed places listed in :data:`REVIEWED_WRITERS` (node scratch files in nipype's
  work dir, the log file, the simulator). A new writer makes this test fail until reviewed.
"""
from __future__ import annotations

import ast
import json
import multiprocessing as mp
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_agquant.bids import derivatives as D
from bids_agquant.reports import _io as R

PACKAGE = Path(D.__file__).resolve().parents[1]
CTX = mp.get_context("fork")


# ------------------------------------------------------------------ writers vs readers

def _versions(kind: str) -> list[bytes]:
    """Two distinct contents of different sizes (a partial write would match neither)."""
    if kind == "nifti":
        return [np.full((40, 40, 30), v, np.float32) for v in (1.0, 2.0)]
    return [bytes([65 + i]) * (300_000 + 100_000 * i) for i in range(2)]


def _writer(path: str, kind: str, n: int, done) -> None:
    versions = _versions(kind)
    for i in range(n):
        v = versions[i % 2]
        if kind == "derivatives":
            D.atomic_write_bytes(path, v)
        elif kind == "reports":
            R.write_bytes_atomic(path, v)
        else:
            D.write_nifti(path, nib.Nifti1Image(v, np.eye(4)))
    done.set()


def _reader(path: str, kind: str, done, bad, count) -> None:
    versions = _versions(kind)
    reads = 0
    while not done.is_set():
        try:
            if kind == "nifti":
                data = np.asanyarray(nib.load(path).dataobj)
                ok = any(np.array_equal(data, v) for v in versions)
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
                ok = data in versions
        except FileNotFoundError:
            ok = False                      # the file exists before the readers start
        except Exception as exc:            # noqa: BLE001 - a truncated gzip, a bad header
            ok, data = False, repr(exc)
        if not ok:
            bad.value += 1
        reads += 1
    count.value = reads


@pytest.mark.parametrize("kind, name", [("derivatives", "table.tsv"), ("reports", "report.html"),
                                        ("nifti", "map.nii.gz")])
def test_readers_never_see_a_partial_file(tmp_path, kind, name):
    path = str(tmp_path / name)
    done = CTX.Event()
    _writer(path, kind, 1, CTX.Event())                   # the final name exists from here on
    bads = [CTX.Value("i", 0) for _ in range(2)]
    counts = [CTX.Value("i", 0) for _ in range(2)]
    readers = [CTX.Process(target=_reader, args=(path, kind, done, b, c))
               for b, c in zip(bads, counts)]
    for r in readers:
        r.start()
    writer = CTX.Process(target=_writer, args=(path, kind, 60 if kind == "nifti" else 150, done))
    writer.start()
    writer.join(120)
    done.set()
    for r in readers:
        r.join(60)
    assert writer.exitcode == 0
    assert sum(c.value for c in counts) > 20, "the readers hardly ran; the test proves nothing"
    assert sum(b.value for b in bads) == 0, "a reader saw a partial, missing or corrupt file"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != name]
    assert leftovers == [], leftovers


def test_failed_write_leaves_the_previous_version_and_no_temp_file(tmp_path):
    path = tmp_path / "sub-01" / "x.json"
    D.write_json(path, {"a": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        D.write_json(path, {"a": Unserialisable()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


# ------------------------------------------------------------ dataset-level files, racing

def _job(out: str, barrier, errors) -> None:
    try:
        barrier.wait(30)
        D.ensure_dataset_description(out)
        D.update_bidsignore(out)
    except Exception as exc:  # noqa: BLE001
        errors.put(repr(exc))


def _watch(out: str, stop, bad) -> None:
    target = Path(out) / "dataset_description.json"
    while not stop.is_set():
        try:
            text = target.read_text()
        except FileNotFoundError:
            continue
        try:
            json.loads(text)
        except ValueError:
            bad.value += 1


@pytest.mark.parametrize("round_", range(3))
def test_many_jobs_create_one_complete_dataset_description(tmp_path, round_):
    out = tmp_path / "out"
    out.mkdir()
    n = 12
    barrier, errors = CTX.Barrier(n), CTX.Queue()
    stop, bad = CTX.Event(), CTX.Value("i", 0)
    watcher = CTX.Process(target=_watch, args=(str(out), stop, bad))
    watcher.start()
    jobs = [CTX.Process(target=_job, args=(str(out), barrier, errors)) for _ in range(n)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(60)
    stop.set()
    watcher.join(30)
    assert [j.exitcode for j in jobs] == [0] * n
    assert errors.empty(), errors.get()
    assert bad.value == 0, "a reader saw a partial dataset_description.json"
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    assert desc["GeneratedBy"][0]["Name"] == D.PIPELINE_NAME
    lines = (out / ".bidsignore").read_text().splitlines()
    assert sorted(lines) == sorted(D.BIDSIGNORE)               # each pattern exactly once
    assert sorted(p.name for p in out.iterdir()) == [".bidsignore", "dataset_description.json"]


def test_an_existing_dataset_description_is_never_overwritten(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "kept"}')
    D.ensure_dataset_description(tmp_path)
    assert json.loads((tmp_path / "dataset_description.json").read_text()) == {"Name": "kept"}


# --------------------------------------------------------------------------- static guard

#: (module, enclosing function, call) of every reviewed file write outside the atomic helpers.
REVIEWED_WRITERS = {
    # scratch files of nipype nodes, written into the node's own folder of the work dir
    ("interfaces/geometry.py", "save_like", "nib.save"),
    ("interfaces/lesions.py", "_run_interface", "write_text"),
    ("interfaces/quantify.py", "_run_interface", "write_text"),
    ("interfaces/qa.py", "_run_interface", "write_text"),            # session_qa's rows
    ("interfaces/registration.py", "_run_interface", "write_text"),  # registration QA JSON
    ("interfaces/vfa.py", "_run_interface", "write_text"),           # the fit's QA JSON
    # the per-run log file: created exclusively (mode "x"), appended to while the run goes on
    ("cli/run.py", "_log_file", "open"),
}
#: the atomic helpers themselves
HELPERS = {"bids/atomic.py", "bids/derivatives.py", "reports/_io.py"}
#: the simulator writes raw input datasets, not outputs
SKIP = ("simulate/",)

WRITE_METHODS = {"write_text", "write_bytes", "to_filename", "savefig", "to_csv", "dump",
                 "save", "copy", "copy2", "copyfile", "copytree", "replace", "rename", "move"}


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name) and f.id == "open":
        mode = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) \
                and set(mode.value) & set("wax+"):
            return "open"
        return None
    if isinstance(f, ast.Attribute) and f.attr in WRITE_METHODS:
        base = f.value.id if isinstance(f.value, ast.Name) else None
        if f.attr == "savefig" and node.args and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in ("buf", "buffer", "bio"):
            return None                      # into an in-memory buffer
        if f.attr in ("dump", "save", "copy", "copy2", "copyfile", "copytree", "replace",
                      "rename", "move") and base not in ("json", "nib", "np", "shutil", "os",
                                                         "pickle"):
            return None                      # e.g. dict.copy(), str.replace()
        return f"{base}.{f.attr}" if base in ("nib", "np", "json", "shutil", "os", "pickle") \
            else f.attr
    return None


def _writers(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call):
                name = _call_name(child)
                if name:
                    found.append((func, name, child.lineno))
            visit(child, func)

    visit(tree, "<module>")
    return found


def test_every_file_write_goes_through_the_atomic_helpers():
    unreviewed, seen = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in HELPERS or rel.startswith(SKIP):
            continue
        for func, call, line in _writers(path):
            key = (rel, func, call)
            if key in REVIEWED_WRITERS:
                seen.add(key)
            else:
                unreviewed.append(f"{rel}:{line} {func}() calls {call}")
    assert unreviewed == [], ("write through bids.derivatives (atomic_write_*, write_json, "
                              "write_nifti, write_tsv) or reports._io, or review and list the "
                              f"call in REVIEWED_WRITERS: {unreviewed}")
    assert seen == REVIEWED_WRITERS, f"stale entries: {REVIEWED_WRITERS - seen}"


def test_the_guard_catches_a_plain_write(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import nibabel as nib\n"
                   "def sink(img, p):\n    nib.save(img, p)\n    open(p, 'w').write('x')\n"
                   "def ok(buf, d):\n    d.copy()\n    'a'.replace('a', 'b')\n")
    assert [(f, c) for f, c, _ in _writers(bad)] == [("sink", "nib.save"), ("sink", "open")]


def test_scratch_writers_write_into_the_node_folder():
    """The reviewed nipype writers put their files in ``runtime.cwd`` (the work dir)."""
    for rel in ("interfaces/lesions.py", "interfaces/quantify.py"):
        text = (PACKAGE / rel).read_text()
        assert "cwd = Path(runtime.cwd)" in text
        for line in text.splitlines():
            if ".write_text(" in line:
                target = line.strip().split(".write_text(")[0]
                assert f"{target} = cwd /" in text, (rel, line)


def test_helpers_write_temp_files_in_the_target_folder(tmp_path, monkeypatch):
    """os.replace is atomic only within one file system: the temporary file must sit beside the
    target, not in /tmp."""
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((Path(src).parent, Path(dst).parent))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    D.atomic_write_text(tmp_path / "a" / "x.txt", "x")
    D.write_nifti(tmp_path / "b" / "x.nii.gz", nib.Nifti1Image(np.zeros((2, 2, 2), np.float32),
                                                               np.eye(4)))
    R.write_text_atomic(tmp_path / "c" / "x.html", "x")
    assert len(seen) == 3 and all(s == d for s, d in seen)
