"""Warnings a node raises, kept in its result so that a resumed run shows them again.

A node logs its warnings in the worker process that runs it; they reach the console, the
participant log and the report.  A rerun with the same work dir takes the node from nipype's
cache and the worker never runs, so the warning would be lost from the new log and report.
Nodes therefore also return their warnings as the output ``warnings``, and the progress callback
(:class:`bids_agquant.cli.run.NodeProgress`) logs them again for every cached node.
"""
from __future__ import annotations

import logging

from nipype.interfaces.base import traits

__all__ = ["warnings_output", "node_warning", "keep_warnings"]


def warnings_output():
    """The ``warnings`` output trait of an interface that may warn."""
    return traits.List(traits.Str, desc="warnings of this node (logged again when it is cached)")


def node_warning(results: dict, logger: str, message: str) -> None:
    """Log ``message`` as a WARNING of ``logger`` and keep it in the node's ``warnings``."""
    logging.getLogger(logger).warning("%s", message)
    results.setdefault("warnings", []).append(message)


def keep_warnings(node):
    """Make nipype keep ``node``'s ``warnings`` output in its cached result.

    nipype drops the outputs no other node is connected to (``remove_unnecessary_outputs``);
    ``warnings`` is read by the progress callback, not by a node.  Returns the node.
    """
    execution = dict((node.config or {}).get("execution", {}))
    execution["remove_unnecessary_outputs"] = False
    node.config = {**(node.config or {}), "execution": execution}
    return node
