"""``--resource-monitor``: each node's run time, peak memory and CPU of a participant run.

nipype's resource monitor (config ``monitoring.enabled``) samples the process of every node
(psutil, once per second) and stores the figures in the node's result (``runtime.duration``,
``mem_peak_gb``, ``cpu_percent``). After the run they are written to
``OUTPUT_DIR/`` + :data:`RESOURCES_FILE` with a JSON data dictionary, whose columns are the
registry's (:data:`bids_agquant.bids.columns.RESOURCES_TABLE`), and the participant report
shows them (:func:`read_resources`).
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from bids_agquant.bids import columns as C
from bids_agquant.bids.derivatives import write_json
from bids_agquant.bids.tables import cell, read_tsv, write_tsv

__all__ = ["RESOURCES_FILE", "resources_path", "node_resources", "write_resources",
           "read_resources"]

#: The table of one participant, relative to OUTPUT_DIR (``logs/`` is in .bidsignore).
RESOURCES_FILE = "logs/sub-{participant}_resources.tsv"


def resources_path(output_dir, participant: str) -> Path:
    return Path(output_dir) / RESOURCES_FILE.format(participant=participant)


def _number(value, scale: float = 1.0):
    try:
        v = float(value) * scale
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _started(runtime):
    try:
        return datetime.fromisoformat(str(runtime.startTime))
    except (AttributeError, TypeError, ValueError):
        return None


def node_resources(execgraph, since: datetime, prefix: str = "") -> list[dict]:
    """One row per node of nipype's execution graph (columns of the registry), in start order.

    ``since``: when this run started (timezone-aware); a node whose result was made before
    came from the cache. A node whose result cannot be read (it failed or never ran) is left
    out.
    """
    rows = []
    for node in execgraph.nodes():
        try:
            runtime = node.result.runtime
        except Exception:  # noqa: BLE001 - no result file: the node did not finish
            continue
        runtime = runtime[0] if isinstance(runtime, list) and runtime else runtime
        start = _started(runtime)
        name = node.fullname
        if prefix and name.startswith(prefix + "."):
            name = name[len(prefix) + 1:]
        rows.append({
            "node": name,
            "status": "ran" if start is not None and start >= since else "cached",
            "duration_s": _number(getattr(runtime, "duration", None)),
            "mem_peak_mb": _number(getattr(runtime, "mem_peak_gb", None), 1024.0),
            "cpu_peak_percent": _number(getattr(runtime, "cpu_percent", None)),
            "_start": start.isoformat() if start else "",
        })
    rows.sort(key=lambda r: (r.pop("_start"), r["node"]))
    return rows


def write_resources(output_dir, participant: str, rows: list[dict]) -> Path:
    """The TSV and its JSON data dictionary; returns the TSV's path."""
    path = resources_path(output_dir, participant)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = C.columns(C.RESOURCES_TABLE)
    write_tsv(path, rows, cols)
    write_json(path.with_suffix(".json"), C.dictionary(C.RESOURCES_TABLE, cols))
    return path


def read_resources(output_dir, participant: str) -> list[dict] | None:
    """The rows of the participant's table (numbers as floats, ``None`` for n/a), or None when
    there is none."""
    path = resources_path(output_dir, participant)
    if not path.is_file():
        return None
    df = read_tsv(path)
    rows = []
    for r in df.to_dict("records"):
        row = {c: cell(r, c) for c in df.columns}
        for c in ("duration_s", "mem_peak_mb", "cpu_peak_percent"):
            row[c] = _number(row.get(c))
        rows.append(row)
    return rows
