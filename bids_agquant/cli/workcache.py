"""A participant's cache in the work dir belongs to the code that made it.

nipype reuses a node's results when the node's *inputs* hash the same; it does not see that the
code behind the node changed. An upgraded bids-agquant (or numpy, ANTs, ...) rerun with an old
work dir would therefore copy the old version's maps into the new outputs and exit 0: silently
wrong. So each participant's workflow folder holds :data:`STAMP_FILE`, the
:func:`code_fingerprint` of the code that fills it; before a run, a folder whose stamp is missing
or different is not reused (removed when the work dir is bids-agquant's own, with its marker
file; moved aside otherwise, so nothing of unknown origin is deleted).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import bids_agquant
from bids_agquant.bids.atomic import atomic_write_text

__all__ = ["STAMP_FILE", "FINGERPRINT_DISTRIBUTIONS", "code_fingerprint", "claim_cache"]

LOGGER = logging.getLogger("bids_agquant")

#: the file in ``WORK_DIR/sub_<label>_wf/`` naming the code its cache was made with
STAMP_FILE = "bids_agquant_code.json"
#: the installed distributions whose versions are part of the fingerprint (what computes)
FINGERPRINT_DISTRIBUTIONS = ("nipype", "antspyx", "numpy", "scipy", "nibabel", "pandas",
                             "pybids", "scikit-image")


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def code_fingerprint() -> dict:
    """{version, sources (sha256 of every file of the installed package), dependencies}."""
    root = Path(bids_agquant.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return {"version": bids_agquant.__version__, "sources_sha256": digest.hexdigest(),
            "dependencies": {n: _distribution_version(n) for n in FINGERPRINT_DISTRIBUTIONS}}


def _stamp_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def _difference(old: dict | None, new: dict) -> str:
    if old is None:
        return "a bids-agquant without code stamps (or an interrupted first run)"
    if old.get("version") != new["version"]:
        return f"bids-agquant {old.get('version')} (this is {new['version']})"
    changed = [f"{n} {v} (now {new['dependencies'].get(n)})"
               for n, v in (old.get("dependencies") or {}).items()
               if new["dependencies"].get(n) != v]
    if changed:
        return "other dependencies: " + ", ".join(changed)
    return f"other bids-agquant {new['version']} source files"


def remove_cache_folder(folder: Path) -> bool:
    """Remove a participant's workflow folder of the work dir (a symlink is unlinked, never
    followed). Returns False when there was nothing to remove."""
    folder = Path(folder)
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)
    else:
        return False
    return True


def claim_cache(folder: Path, own_work_dir: bool, label: str) -> Path | None:
    """Make ``folder`` (a participant's workflow folder) a cache of this code: keep it when its
    stamp matches, else remove it (``own_work_dir``: the work dir has bids-agquant's marker) or
    move it aside; then write the stamp. Returns where an old cache was moved, else None."""
    folder = Path(folder)
    new = code_fingerprint()
    moved = None
    if folder.exists() or folder.is_symlink():
        old = _stamp_of(folder)
        if old == new:
            return None
        why = _difference(old, new)
        if own_work_dir:
            remove_cache_folder(folder)
            LOGGER.info("%s: the work dir's cache %s was made by %s; removed, so everything is "
                        "recomputed with this code", label, folder, why)
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            moved = folder.with_name(f"{folder.name}.stale-{stamp}")
            folder.rename(moved)
            LOGGER.warning("%s: the work dir's cache %s was made by %s; moved to %s (not "
                           "reused; delete it when you like) and everything is recomputed",
                           label, folder, why, moved)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / STAMP_FILE, json.dumps(new, indent=1, sort_keys=True) + "\n")
    return moved
