"""Relaxivity registry: agent x field strength -> r1 per Gd (1/(mM s)), with synonyms and overrides.

The table lives in ``bids_agquant/data/relaxivities.json`` (one place for the fact). Agent names
match case-insensitively, ignoring spaces, dashes and underscores, and through synonyms
(gadoterate / Gd-DOTA -> Dotarem).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Mapping

__all__ = ["Relaxivity", "UnknownAgentError", "canonical_agent", "get_relaxivity", "known_agents",
           "synonyms"]


class UnknownAgentError(KeyError):
    """The contrast agent is not in the registry and no override was given."""

    def __str__(self):  # KeyError quotes its message; we want a plain sentence
        return str(self.args[0]) if self.args else "unknown contrast agent"


@dataclass(frozen=True)
class Relaxivity:
    agent: str                      # canonical name, e.g. "AGuIX"
    field_strength_t: float | None  # field the value applies to (None for a user override)
    r1_per_mM_s: float              # per Gd ion, 1/(mM s)
    gd_per_particle: float          # Gd ions per molecule / particle
    molar_mass_g_per_mol: float     # of the molecule / particle (for mg/L)
    source: str                     # "registry" or "user override"

    @property
    def mg_per_L_per_mM_gd(self) -> float:
        """Multiply a Gd concentration in mM by this to get the agent's mass concentration in mg/L."""
        return self.molar_mass_g_per_mol / self.gd_per_particle


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("bids_agquant.data").joinpath("relaxivities.json").read_text()
    return json.loads(text)["agents"]


def known_agents() -> tuple[str, ...]:
    return tuple(_table())


def synonyms(agent: str) -> tuple[str, ...]:
    """The registry's synonyms of a canonical agent name (empty for an unknown agent)."""
    return tuple(_table().get(agent, {}).get("synonyms", []))


def canonical_agent(name: str | None) -> str | None:
    """Canonical registry name of an agent label, or None if the label is not known."""
    if name is None:
        return None
    key = _normalise(name)
    for agent, entry in _table().items():
        if key == _normalise(agent) or key in {_normalise(s) for s in entry.get("synonyms", [])}:
            return agent
    return None


def get_relaxivity(agent: str, field_strength_t: float | None = 3.0,
                   overrides: Mapping[str, float] | None = None) -> Relaxivity:
    """Look up r1 of ``agent`` at ``field_strength_t`` (nearest tabulated field).

    ``overrides`` maps agent labels (any synonym) to r1 per Gd in 1/(mM s); it wins over the table
    and is the only way to quantify an agent the registry does not know.
    """
    canon = canonical_agent(agent)
    entry = _table().get(canon, {}) if canon else {}
    for label, value in (overrides or {}).items():
        if _normalise(label) == _normalise(agent) or (canon and canonical_agent(label) == canon):
            try:
                r1 = float(value)
            except (TypeError, ValueError):
                r1 = float("nan")
            if not (math.isfinite(r1) and r1 > 0):
                raise ValueError(f"relaxivity override {label}={value!r} is not a positive number: "
                                 f"pass --relaxivity {label}=<r1 in 1/(mM s)>")
            return Relaxivity(canon or str(agent), None, r1,
                              float(entry.get("gd_per_particle", 1)),
                              float(entry.get("molar_mass_g_per_mol", float("nan"))), "user override")
    if not canon:
        raise UnknownAgentError(
            f"unknown contrast agent {agent!r}: pass --relaxivity {agent}=<r1 in 1/(mM s)> "
            f"(known: {', '.join(known_agents())})")
    fields = {float(k): v for k, v in entry["r1_per_gd"].items()}
    b0 = 3.0 if field_strength_t is None else float(field_strength_t)
    nearest = min(fields, key=lambda f: abs(f - b0))
    return Relaxivity(canon, nearest, float(fields[nearest]), float(entry["gd_per_particle"]),
                      float(entry["molar_mass_g_per_mol"]), "registry")
