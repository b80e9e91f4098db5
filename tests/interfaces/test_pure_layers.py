"""The science modules import only numpy, scipy, the standard library and each other."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bids_agquant"
PURE = sorted(PACKAGE.glob("qmri/*.py"))
#: project modules a pure module may import (pure themselves)
PURE_PROJECT = ("bids_agquant.qmri",)


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                       # relative: inside its own package
                base = ("bids_agquant.qmri" if path.parent.name == "qmri" else "bids_agquant") \
                    + (f".{base}" if base else "")
            # "from a import b" may import the module a.b: name it so
            yield from (f"{base}.{a.name}" for a in node.names)


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_pure_module_imports(path):
    bad = []
    for name in _imports(path):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ("numpy", "scipy"):
            continue
        if name.startswith(PURE_PROJECT):
            continue
        bad.append(name)
    assert not bad, f"{path.name} imports {bad}"


def test_the_check_sees_a_forbidden_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import nibabel\nfrom bids_agquant.interfaces import geometry\n")
    assert list(_imports(f)) == ["nibabel", "bids_agquant.interfaces.geometry"]
