"""Architecture rules of issue 11, checked on the source text (AST): no package import is run.

(a) no import cycle among ``bids_agquant`` modules (module-level imports: those that run when a
    module is imported; imports in functions and under ``if TYPE_CHECKING:`` do not);
(b) no module outside ``bids_agquant/cli/`` imports ``bids_agquant.cli`` (``__main__``, the
    ``python -m bids_agquant`` entry point above the CLI, excepted);
(c) ``bids_agquant/qmri/`` imports only numpy, scipy, the standard library and itself;
(d) imports inside functions only of the heavy or optional modules in :data:`LAZY_ALLOWED`
    (and, from the CLI only, the package modules in :data:`CLI_LAZY_ALLOWED`);
(e) no function longer than :data:`MAX_FUNCTION_LINES` lines.

Each checker is a pure function of (module name, source) so the ``test_checker_*`` tests can
feed it small fake modules and show that it fails when it should.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = "bids_agquant"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_FUNCTION_LINES = 80

#: Top-level modules that may be imported inside a function, and why.
LAZY_ALLOWED = {
    "nipype": "seconds to import (and reads its config on import); the CLI's --help, --version "
              "and argument errors must answer at once",
    "ants": "antspyx loads ITK (seconds, hundreds of MB); only registration nodes need it",
    "matplotlib": "slow to import and picks a backend; only figure writers need it",
    "nibabel": "slow-ish to import; the CLI reaches bids/validate.py for --help",
    "bids": "pybids: seconds to import (SQLAlchemy, schema); only the dataset indexer needs it",
}

#: Package modules the CLI may import inside a function: each pulls in a heavy module above.
CLI_LAZY_ALLOWED = {
    f"{PACKAGE}.workflows": "the nipype graph builders (nipype, ANTs)",
    f"{PACKAGE}.reports": "the HTML reports and figures (matplotlib)",
    f"{PACKAGE}.group": "the group level (reports, matplotlib)",
}


# --------------------------------------------------------------------------------------------
# reading the package


def package_modules(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    """Module name -> (source, is_package) for every .py file of the package."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        found[name] = (path.read_text(encoding="utf-8"), is_pkg)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def iter_imports(tree: ast.AST):
    """(import node, inside a function?) for every import; TYPE_CHECKING blocks are skipped."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    yield from walk(ast.Module(body=[sub], type_ignores=[]), in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            yield from walk(child, inner)
    yield from walk(tree, False)


def imported_names(node, module: str, is_pkg: bool, known=frozenset()) -> list[str]:
    """Absolute names an import statement brings in.

    ``from X import y`` names ``X.y`` when that is a module in ``known`` (``from . import x``
    imports the module ``x``), else ``X``. Relative imports resolve against ``module``.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if is_pkg else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    names = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        names.append(candidate if candidate in known else base)
    return names


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def import_graph(modules: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> package modules it imports at module level."""
    known = frozenset(modules)
    graph = {}
    for name, (source, is_pkg) in modules.items():
        edges = set()
        for node, in_function in iter_imports(ast.parse(source)):
            if in_function:
                continue
            for target in imported_names(node, name, is_pkg, known):
                if target in known and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


# --------------------------------------------------------------------------------------------
# checkers (pure: they take the modules, return the offenders)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def cli_importers(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """'module: imported name' for modules outside the CLI that import it (any import)."""
    known = frozenset(modules)
    cli = f"{PACKAGE}.cli"
    bad = []
    for name, (source, is_pkg) in modules.items():
        if _within(name, cli) or name == f"{PACKAGE}.__main__":
            continue
        for node, _ in iter_imports(ast.parse(source)):
            bad += [f"{name}: {t}" for t in imported_names(node, name, is_pkg, known)
                    if _within(t, cli)]
    return bad


def qmri_foreign_imports(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """'module: imported name' for qmri imports beyond numpy, scipy, the stdlib and qmri."""
    known = frozenset(modules)
    qmri = f"{PACKAGE}.qmri"
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy"}
    bad = []
    for name, (source, is_pkg) in modules.items():
        if not _within(name, qmri):
            continue
        for node, _ in iter_imports(ast.parse(source)):
            for target in imported_names(node, name, is_pkg, known):
                if not (_within(target, qmri) or target.split(".")[0] in allowed):
                    bad.append(f"{name}: {target}")
    return bad


def disallowed_local_imports(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """'module:line imported name' for function-local imports not in the allow-lists."""
    known = frozenset(modules)
    bad = []
    for name, (source, is_pkg) in modules.items():
        in_cli = _within(name, f"{PACKAGE}.cli")
        for node, in_function in iter_imports(ast.parse(source)):
            if not in_function:
                continue
            for target in dict.fromkeys(imported_names(node, name, is_pkg, known)):
                if target.split(".")[0] in LAZY_ALLOWED:
                    continue
                if in_cli and any(_within(target, p) for p in CLI_LAZY_ALLOWED):
                    continue
                bad.append(f"{name}:{node.lineno} {target}")
    return bad


def long_functions(modules: dict[str, tuple[str, bool]],
                   limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'module:line function (n lines)' for functions longer than ``limit`` lines."""
    bad = []
    for name, (source, _) in modules.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    bad.append(f"{name}:{node.lineno} {node.name} ({n} lines)")
    return sorted(bad)


# --------------------------------------------------------------------------------------------
# the rules, on the package


@pytest.fixture(scope="module")
def modules():
    found = package_modules()
    assert f"{PACKAGE}.errors" in found and f"{PACKAGE}.cli.run" in found
    return found


def test_no_import_cycle(modules):
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_nothing_below_the_cli_imports_it(modules):
    bad = cli_importers(modules)
    assert not bad, "modules outside cli/ importing it:\n" + "\n".join(bad)


def test_qmri_imports_only_numpy_scipy_and_the_standard_library(modules):
    bad = qmri_foreign_imports(modules)
    assert not bad, "qmri imports beyond numpy/scipy/stdlib:\n" + "\n".join(bad)




def test_function_local_imports_only_of_heavy_or_optional_modules(modules):
    bad = disallowed_local_imports(modules)
    print("\n".join(bad))
    assert not bad, (f"{len(bad)} function-local import(s) outside the allow-list "
                     f"(move them to module level, or add the module to LAZY_ALLOWED with a "
                     f"reason):\n" + "\n".join(bad))


def test_no_function_longer_than_the_limit(modules):
    bad = long_functions(modules)
    print("\n".join(bad))
    assert not bad, f"{len(bad)} function(s) over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(bad)


# --------------------------------------------------------------------------------------------
# each checker can fail


def _fake(sources: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """Fake modules: key ``"a.b"`` is module ``bids_agquant.a.b``, ``"a/"`` the package ``a``."""
    return {f"{PACKAGE}.{key.rstrip('/')}": (source, key.endswith("/"))
            for key, source in sources.items()}


def test_checker_finds_a_cycle_through_relative_imports():
    fake = _fake({"pkg/": "", "pkg.a": "from . import b\n", "pkg.b": "from .a import thing\n",
                  "pkg.c": "def f():\n    from . import a\n"})
    graph = import_graph(fake)
    assert graph[f"{PACKAGE}.pkg.a"] == {f"{PACKAGE}.pkg.b"}        # `from . import b` is b
    assert graph[f"{PACKAGE}.pkg.c"] == set()                      # a local import: no edge
    assert find_cycles(graph) == [[f"{PACKAGE}.pkg.a", f"{PACKAGE}.pkg.b"]]
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []
    assert find_cycles({"x": {"x"}}) == [["x"]]


def test_checker_ignores_type_checking_imports():
    fake = _fake({"a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
                  "b": "from . import a\n"})
    assert find_cycles(import_graph(fake)) == []


def test_checker_finds_a_cli_import_below_the_cli():
    fake = _fake({"cli/": "", "cli.run": "from ..bids import layout\n", "bids/": "",
                  "bids.layout": "def f():\n    from ..cli.run import main\n",
                  "__main__": "from bids_agquant.cli.run import main\n"})
    assert cli_importers(fake) == [f"{PACKAGE}.bids.layout: {PACKAGE}.cli.run"]


def test_checker_finds_a_foreign_qmri_import():
    fake = _fake({"qmri/": "", "qmri.b": "",
                  "qmri.a": "import json\nimport numpy as np\nfrom scipy import ndimage\n"
                            "from . import b\nfrom ..errors import BadDataError\nimport pandas\n"})
    assert qmri_foreign_imports(fake) == [f"{PACKAGE}.qmri.a: {PACKAGE}.errors",
                                          f"{PACKAGE}.qmri.a: pandas"]


def test_checker_finds_a_local_import_outside_the_allow_list():
    fake = _fake({"cli/": "", "cli.run": "def f():\n    import json\n    import nipype\n"
                                        "    from bids_agquant.workflows.participant import x\n",
                  "other": "def g():\n    from bids_agquant.reports import figures\n"})
    assert disallowed_local_imports(fake) == [f"{PACKAGE}.cli.run:2 json",
                                              f"{PACKAGE}.other:2 {PACKAGE}.reports"]


def test_checker_finds_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    fake = _fake({"a": f"def long():\n{body}\ndef short():\n    pass\n"})
    assert long_functions(fake) == [f"{PACKAGE}.a:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
