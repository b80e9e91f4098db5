"""``--bids-filter-file``: entity filters merged into the app's named input queries.

The file is one JSON object, as fMRIPrep's: each key names one of the queries below
(:data:`QUERIES`, the one home of their names), each value is an object of BIDS entities
(pybids names, e.g. ``session``, ``acquisition``, ``ceagent``, ``run``) to values::

    {"t1w": {"session": ["pre", "inj"]},
     "vfa": {"session": ["pre", "inj"], "acquisition": null},
     "b1":  {"session": ["pre", "inj"]}}

A value is a label (string or number), a list of labels (any of them), ``null`` (the entity
must be absent) or ``"*"`` (the entity must be present). ``subject`` is set by
``--participant-label``; the entities that make a query what it is (``datatype``, ``suffix``,
``extension``, and ``label``/``desc`` of the lesion masks) cannot be changed.

Every problem raises :class:`~bids_agquant.errors.UsageError` (exit 64) naming the file and the
key; a missing file is :class:`~bids_agquant.errors.MissingInputError` (66), as for
``--use-plugin``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from bids_agquant.errors import MissingInputError, UsageError

__all__ = ["QUERIES", "load_filters", "pybids_filters", "matches", "describe_filters"]

#: The app's input queries by the name a filter file uses: what each one finds.
QUERIES = {
    "t1w": "anatomical T1w images, pre- and post-contrast (anat/*_T1w)",
    "vfa": "variable-flip-angle images (anat/*_VFA)",
    "b1": "B1+ maps and B1 mapping images (fmap/*_TB1map, *_TB1AFI, ...)",
    "lesion_mask": "lesion masks of the lesion-mask derivatives (*_label-metastasis_mask, "
                   "*_desc-metastases_dseg)",
}
#: Entities a filter may not set: the participant (``--participant-label``) and what defines
#: each query.
_FIXED = {"subject": "use --participant-label", "datatype": "fixed by the query",
          "suffix": "fixed by the query", "extension": "fixed by the query",
          "label": "fixed by the query", "desc": "fixed by the query",
          "description": "fixed by the query"}
ANY = "*"


@lru_cache(maxsize=2)
def _entities(derivatives: bool) -> frozenset:
    from bids.layout.models import Config  # pybids: slow to import, only here

    names = set(Config.load("bids").entities)
    if derivatives:
        names |= set(Config.load("derivatives").entities)
    return frozenset(names)


def _check_value(value, where: str) -> None:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise UsageError(f"{where}: an empty list matches nothing",
                         fix="give one label or a list of labels, null (absent) or \"*\" (any)")
    for item in items:
        if item is None and not isinstance(value, list):
            continue
        if isinstance(item, bool) or not isinstance(item, (str, int)) or item == "":
            raise UsageError(f"{where}: {json.dumps(item)} is not a label",
                             fix="give a label (string or number), a list of labels, null "
                                 "(entity absent) or \"*\" (entity present)")


def load_filters(path: Path | str | None) -> dict:
    """``{query: {entity: value}}`` from a ``--bids-filter-file`` (``{}`` without one)."""
    if path is None:
        return {}
    path = Path(path)
    option = f"--bids-filter-file {path}"
    if not path.is_file():
        raise MissingInputError(f"{option}: no such file",
                                fix="give a JSON file such as {\"t1w\": {\"session\": [\"pre\"]}}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{option}: not UTF-8 text", fix="save it as UTF-8 JSON") from exc
    except ValueError as exc:
        raise UsageError(f"{option}: not valid JSON ({exc})",
                         fix="check it with 'python -m json.tool FILE'") from exc
    except OSError as exc:
        raise UsageError(f"{option}: cannot be read ({exc.strerror or exc})",
                         fix="check the file's permissions") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{option}: holds a JSON {type(data).__name__}, not an object",
                         fix=f"write {{\"<query>\": {{\"<entity>\": <value>}}}} with queries "
                             f"{', '.join(QUERIES)}")
    out = {}
    for query, entities in data.items():
        if query not in QUERIES:
            raise UsageError(f"{option}: unknown query {query!r}",
                             fix=f"use one of {', '.join(QUERIES)}")
        if not isinstance(entities, dict):
            raise UsageError(f"{option}: {query!r} must be an object of entities, got "
                             f"{type(entities).__name__}",
                             fix=f"e.g. {{\"{query}\": {{\"session\": \"pre\"}}}}")
        known = _entities(query == "lesion_mask")
        for entity, value in entities.items():
            if entity in _FIXED:
                raise UsageError(f"{option}: {query}.{entity} cannot be filtered",
                                 fix=_FIXED[entity])
            if entity not in known:
                hint = " (pybids calls ce- 'ceagent')" if entity in ("ce", "ce_agent") else ""
                raise UsageError(f"{option}: {query}.{entity} is not a BIDS entity{hint}",
                                 fix=f"use pybids entity names, e.g. session, acquisition, "
                                     f"ceagent, run")
            _check_value(value, f"{option}: {query}.{entity}")
        out[query] = dict(entities)
    return out


def pybids_filters(filters: dict, query: str) -> dict:
    """The ``layout.get`` keyword arguments of ``query``'s filters (null and ``"*"`` as pybids'
    ``Query.NONE`` / ``Query.REQUIRED``)."""
    from bids.layout import Query  # pybids

    out = {}
    for entity, value in (filters or {}).get(query, {}).items():
        if value is None:
            out[entity] = Query.NONE
        elif value == ANY:
            out[entity] = Query.REQUIRED
        else:
            out[entity] = [str(v) for v in value] if isinstance(value, list) else str(value)
    return out


def _same(a, b) -> bool:
    a, b = str(a), str(b)
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def matches(filters: dict, query: str, entities: dict) -> bool:
    """Whether a file with ``entities`` passes ``query``'s filters (for files pybids does not
    index, the lesion masks), with the same meaning as :func:`pybids_filters`."""
    for entity, value in (filters or {}).get(query, {}).items():
        have = entities.get(entity)
        if value is None:
            ok = have is None
        elif value == ANY:
            ok = have is not None
        else:
            wanted = value if isinstance(value, list) else [value]
            ok = have is not None and any(_same(have, w) for w in wanted)
        if not ok:
            return False
    return True


def describe_filters(filters: dict) -> str:
    """One line per filtered query (what ``--print-plan`` and the log show)."""
    lines = []
    for query, entities in filters.items():
        parts = ", ".join(f"{k}={json.dumps(v)}" for k, v in entities.items()) or "(none)"
        lines.append(f"{query}: {parts}")
    return "\n".join(lines)
