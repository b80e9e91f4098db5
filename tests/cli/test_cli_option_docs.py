"""Every option of the parser is documented in docs/cli.md and in the README's option table,
and neither documents an option the parser does not have (the parser is the one home)."""
from __future__ import annotations

import re
from pathlib import Path

from bids_agquant.cli.parser import build_parser

REPO = Path(__file__).resolve().parents[2]


def parser_actions() -> list[set[str]]:
    """The long spellings of each option (an option may have aliases, e.g. ``--n-cpus``)."""
    return [{s for s in action.option_strings if s.startswith("--")}
            for action in build_parser()._actions if action.option_strings]


def undocumented(docs: set[str]) -> list[str]:
    return sorted(min(spellings) for spellings in parser_actions() if not spellings & docs)


def unknown(docs: set[str]) -> set[str]:
    return docs - set().union(*parser_actions())


def documented(path: Path) -> set[str]:
    rows = [ln for ln in path.read_text().splitlines() if ln.startswith("| `-")]
    return {m for ln in rows for m in re.findall(r"(--[a-z0-9_-]+)", ln.split("|")[1])}


def test_docs_cli_lists_every_option_and_no_other():
    docs = documented(REPO / "docs" / "cli.md")
    assert undocumented(docs) == [], "options missing from docs/cli.md"
    assert unknown(docs) == set(), "docs/cli.md lists options the parser lacks"


def test_readme_table_lists_every_option_and_no_other():
    readme = documented(REPO / "README.md")
    assert undocumented(readme) == [], "options missing from the README's table"
    assert unknown(readme) == set(), "README lists options the parser lacks"
