"""Helpers shared by every test folder (one home: CLI runner, HTML parts, tables, tree state).

Imported as ``testkit`` (a unique module name: several test folders have a conftest.py of their
own). The in-process CLI runner is the ``run_cli`` fixture of ``tests/conftest.py``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from evaldata import REPO, SAMPLE_BIDS


@dataclass
class CliResult:
    """What one call of the command line returned: exit code, stdout and stderr."""
    code: int
    out: str
    err: str

    @property
    def first_err_line(self) -> str:
        lines = self.err.splitlines()
        return lines[0] if lines else ""

    def warnings(self) -> list[str]:
        return [ln for ln in self.out.splitlines() if " WARNING " in ln]


def cli_runner(capsys):
    """A function ``run(*argv) -> CliResult`` calling ``bids_agquant.cli.run.main`` in-process."""
    from bids_agquant.cli.run import main

    def run(*argv) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


class PageParts(HTMLParser):
    """The parts of an HTML page the report tests look at: element ids, image sources, any tag
    that would load something from outside the page (``link``, ``script``, ``iframe``), and the
    texts of the ``<p class="note">`` paragraphs and of the ``<code>`` elements, and the summary
    cards (``cards[label] == {"value": ..., "note": ...}``)."""

    EXTERNAL_TAGS = ("link", "script", "iframe")

    def __init__(self, text: str | None = None):
        super().__init__()
        self.ids: set[str] = set()
        self.imgs: list[str] = []
        self.external: list[tuple[str, str | None]] = []
        self.notes: list[str] = []
        self.codes: list[str] = []
        self.cards: dict[str, dict[str, str]] = {}
        self._in: str | None = None
        self._card_part: str | None = None
        self._card_label: str | None = None
        if text is not None:
            self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class") in ("card-label", "card-value", "card-note"):
            self._card_part = a["class"][len("card-"):]
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in self.EXTERNAL_TAGS:
            self.external.append((tag, a.get("href") or a.get("src")))
        if tag == "p" and a.get("class") == "note":
            self._in = "note"
            self.notes.append("")
        elif tag == "code":
            self._in = "code"
            self.codes.append("")

    def handle_endtag(self, tag):
        self._card_part = None
        if tag in ("p", "code"):
            self._in = None

    def handle_data(self, data):
        if self._card_part == "label":
            self._card_label = data.strip()
            self.cards[self._card_label] = {}
        elif self._card_part and self._card_label is not None:
            self.cards[self._card_label][self._card_part] = data.strip()
        if self._in == "note":
            self.notes[-1] += data
        elif self._in == "code":
            self.codes[-1] += data


def read_tsv(path: Path, delimiter: str = "\t") -> list[dict]:
    """Rows of a TSV (or, with ``delimiter=","``, a CSV) file as dicts of text cells."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def tree_state(root: Path) -> dict:
    """{relative path: (kind, size, mode, mtime_ns, sha256)} of everything under ``root`` (symlinks
    not followed): any created, removed, modified, touched or re-permissioned file shows up as a
    difference (used to prove that a run left its input dataset as it was)."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(top, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("file", st.st_size, st.st_mode, st.st_mtime_ns,
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def run_checked(run_cli, ds, *args, out=None, expect=0):
    """Run the CLI on ``ds``; check exit code, no traceback, input untouched; return the result."""
    before = tree_state(ds)
    out = out if out is not None else ds.parent / "out"
    res = run_cli(ds, out, "participant", *args)
    assert res.code == expect, (res.code, res.err, res.out[-2000:])
    assert "Traceback" not in res.err + res.out
    assert tree_state(ds) == before, "BIDS_DIR was modified"
    if expect:
        assert res.first_err_line.startswith("bids-agquant: error: ")
        assert "; " in res.first_err_line, "the line must say what to do"
    return res


def slurm_problem() -> str | None:
    """Why the Slurm tests cannot run here, or None when a cluster answers."""
    if not os.environ.get("SLURM_CONF"):
        return "no Slurm cluster: SLURM_CONF is not set (eval \"$(scripts/slurm_local.sh start)\")"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm cluster: sinfo/sbatch not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm cluster: sinfo failed ({exc})"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no usable Slurm node: sinfo said {out.stdout.strip() or out.stderr.strip()!r}"
    return None


# ------------------------------------------------------------- the venv run of the sample data

#: A folder where the venv run of data/sample_bids is kept for the whole CI run (.ci/run sets
#: it): the Slurm tests and the container checks compare with one run instead of making their
#: own. Unset, each test session makes its run in a temporary folder.
SAMPLE_REFERENCE_ENV = "BIDS_AGQUANT_SAMPLE_REFERENCE"


def _head_commit(repo: Path) -> str:
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "bids_agquant"],
                            capture_output=True, text=True)
    return proc.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def sample_reference_run(tmp_path_factory, app: list) -> tuple[Path, Path, float]:
    """(a copy of data/sample_bids, the venv run's participant + group outputs of that copy, the
    participant level's seconds). ``app`` is the command that runs the app. A kept run is
    reused only when it was made from the same commit with no change to the package; a copy is
    read so that a change by a run (a container's, a job's) would be seen."""
    kept = os.environ.get(SAMPLE_REFERENCE_ENV)
    root = Path(kept) if kept else tmp_path_factory.mktemp("sample_reference")
    root.mkdir(parents=True, exist_ok=True)
    bids, out, done = root / "bids", root / "venv_out", root / "venv_seconds"
    commit = _head_commit(REPO)
    if done.is_file() and (root / "commit").is_file() \
            and (root / "commit").read_text() == commit and "+changes" not in commit:
        return bids, out, float(done.read_text())
    for stale in (bids, out, root / "venv_work", done):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    shutil.copytree(SAMPLE_BIDS, bids)
    os.chmod(root, 0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def call(*args):
        proc = subprocess.run([*map(str, app), *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=1800)
        assert proc.returncode == 0, (f"venv {args[2]}: exit {proc.returncode}\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")

    t0 = time.time()
    call(bids, out, "participant", "-w", root / "venv_work", "--nprocs", "2")
    seconds = time.time() - t0
    call(bids, out, "group")
    shutil.rmtree(root / "venv_work", ignore_errors=True)
    (root / "commit").write_text(commit)
    done.write_text(f"{seconds:.1f}")
    print(f"\n[sample reference] venv participant of {bids.name}: {seconds:.0f} s", file=sys.stderr)
    return bids, out, seconds


# ------------------------------------------------------------- the official BIDS validator

#: The schema-based BIDS validator (PyPI ``bids-validator-deno``, the ``test`` extra).
BIDS_VALIDATOR = "bids-validator-deno"


@dataclass
class ValidatorResult:
    """One run of the BIDS validator: exit code and its issues (``--format json``)."""
    code: int
    issues: list

    def of(self, severity: str) -> list[dict]:
        return [i for i in self.issues if i.get("severity") == severity]

    @property
    def errors(self) -> list[str]:
        """``CODE subCode location`` of every error (readable in an assertion message)."""
        return [" ".join(str(i.get(k) or "") for k in ("code", "subCode", "location")).strip()
                for i in self.of("error")]

    def warning_codes(self) -> dict:
        """{``CODE subCode``: number of files} of the warnings."""
        out: dict = {}
        for i in self.of("warning"):
            key = f"{i.get('code')} {i.get('subCode') or ''}".strip()
            out[key] = out.get(key, 0) + 1
        return out


def bids_validator_path() -> str:
    """The validator installed next to this Python (the venv), else on PATH.

    Not installed: the test is skipped with the reason, except in CI (``CI=true``), where the
    ``test`` extra installs it and a missing validator is a failure.
    """
    import shutil

    import pytest

    here = Path(sys.executable).parent / BIDS_VALIDATOR
    found = str(here) if here.is_file() else shutil.which(BIDS_VALIDATOR)
    if found:
        return found
    reason = (f"{BIDS_VALIDATOR} is not installed (pip install -c constraints.txt "
              f"'.[test]' installs it)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + "; CI=true: the validator must run")
    pytest.skip(reason)


def run_bids_validator(dataset: Path, *, recursive: bool = False,
                       timeout: float = 600) -> ValidatorResult:
    """Run the validator on ``dataset`` for real and parse its JSON report (``recursive``: the
    datasets under ``derivatives/`` too)."""
    import json
    import subprocess

    exe = bids_validator_path()
    args = [exe, str(dataset), "--format", "json", "--no-color"] + (["-r"] if recursive else [])
    proc = subprocess.run(args,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"{BIDS_VALIDATOR} {dataset}: exit {proc.returncode}, no JSON "
                             f"report: {proc.stderr[-2000:] or proc.stdout[-2000:]}") from exc
    return ValidatorResult(proc.returncode, report["issues"]["issues"])


# ------------------------------------------------------------------- BIDS URIs in outputs

def bids_uris(obj) -> list[str]:
    """Every string value starting with ``bids:`` in a parsed JSON document (any depth)."""
    if isinstance(obj, str):
        return [obj] if obj.startswith("bids:") else []
    if isinstance(obj, dict):
        return [u for v in obj.values() for u in bids_uris(v)]
    if isinstance(obj, list):
        return [u for v in obj for u in bids_uris(v)]
    return []


def resolve_bids_uri(uri: str, dataset_root: Path) -> Path | None:
    """The file a BIDS URI names, written from the spec (Common principles, "Resolution of BIDS
    URIs"), not from the app: ``bids::path`` is in the dataset itself; another name is looked up
    in its ``DatasetLinks``, a value without a scheme is relative to the dataset root, a
    ``file://`` one is a local path. None when the link names no local place (a DOI, an
    identity) or the name is not linked."""
    import json
    from urllib.parse import unquote, urlparse

    scheme, name, rel = uri.split(":", 2)
    assert scheme == "bids" and not rel.startswith("/"), uri
    root = Path(dataset_root)
    if name == "":
        return root / rel
    links = json.loads((root / "dataset_description.json").read_text()).get("DatasetLinks", {})
    if name not in links:
        return None
    link = links[name]
    parsed = urlparse(link)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)) / rel
    if parsed.scheme:
        return None
    return (root / link / rel).resolve()


def unresolved_links(output_dir: Path) -> list[str]:
    """``file: uri`` of every BIDS URI in OUTPUT_DIR's JSON files that names no existing file."""
    import json

    bad = []
    for f in sorted(Path(output_dir).rglob("*.json")):
        if any(part.startswith(".") for part in f.relative_to(output_dir).parts):
            continue
        for uri in bids_uris(json.loads(f.read_text())):
            target = resolve_bids_uri(uri, output_dir)
            if target is None or not target.exists():
                bad.append(f"{f.relative_to(output_dir)}: {uri}")
    return bad


def host_paths(root: Path, paths, suffixes=(".json", ".tsv", ".html", ".md", ".txt")) -> list[str]:
    """``file: path`` wherever one of the absolute ``paths`` (or a ``file://`` URI) appears in
    the text outputs under ``root`` (hidden folders, e.g. a work dir, are not outputs)."""
    found = []
    needles = sorted({str(Path(p).absolute()) for p in paths} | {"file://"})
    for f in sorted(Path(root).rglob("*")):
        rel = f.relative_to(root)
        if not f.is_file() or f.suffix not in suffixes or \
                any(part.startswith(".") for part in rel.parts):
            continue
        text = f.read_text(errors="replace")
        found += [f"{rel}: {n}" for n in needles if n in text]
    return found


#: Where the validator's remaining warnings on the outputs are listed, each with why it is left.
OUTPUTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"


def undocumented_warnings(res: ValidatorResult) -> list[str]:
    """Warning codes of a validator run that docs/outputs.md does not name (as `CODE`)."""
    doc = OUTPUTS_DOC.read_text()
    codes = {str(i.get("code")) for i in res.of("warning")}
    return sorted(c for c in codes if f"`{c}`" not in doc)
