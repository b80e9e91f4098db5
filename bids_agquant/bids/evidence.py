"""Contrast state and acquisition time from evidence, never from its absence (issue 13, items 2-3).

Contrast agent of an image (the first two are the image's own evidence):

- the ``ce-`` entity, recognised through the relaxivity registry (``canonical_agent``) or a
  ``--relaxivity`` label;
- the sidecar's ``ContrastBolusAgent`` / ``ContrastBolusIngredient``, free text in which the
  registry's names and synonyms (and ``--relaxivity`` labels) are matched as words
  (``AGUIX 100 MG/KG IV`` -> AGuIX). A generic ingredient (:data:`GENERIC_INGREDIENTS`, e.g.
  ``GADOLINIUM``) says "post-contrast" without naming the agent;

Contrast agent(s) of a session (:func:`session_agents`): a ``contrast_agent`` column of
``sub-<p>_sessions.tsv`` (``n/a``, ``none`` or an empty cell = no agent; several agents joined by
``+`` or ``,``) and ``--session-agent SES=AGENT`` (``none`` = no agent). In a session with an
agent, the images without evidence of their own are pre-contrast when some image of the session
names that agent (the baseline's pre + Dotarem pair), else they were acquired with it (a visit
converted with one dcm2bids configuration for every visit). Conflicting evidence is exit 65.

Session acquisition times (:func:`session_times`): ``sessions.tsv`` ``acq_time``, else the
session's ``scans.tsv`` ``acq_time`` (earliest row), else the earliest ``AcquisitionDateTime``
(or ``AcquisitionDate`` + ``AcquisitionTime``) of its T1w/VFA sidecars; label order only last.
"""
from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

from bids_agquant.bids.sidecars import json_text
from bids_agquant.bids.tables import cell, read_tsv
from bids_agquant.errors import BadDataError, UnknownAgentError
from bids_agquant.qmri import relaxivity

__all__ = ["ImageEvidence", "GENERIC_INGREDIENTS", "AGENT_FIELDS", "NO_AGENT", "agents_named",
           "image_evidence", "session_agents", "session_times", "SOURCE_SESSIONS_TSV",
           "SOURCE_SCANS_TSV", "SOURCE_SIDECARS", "SOURCE_LABELS", "recognise", "describe_sources"]

#: Sidecar fields naming the contrast agent, in the order they are read.
AGENT_FIELDS = ("ContrastBolusAgent", "ContrastBolusIngredient")
#: Texts meaning "no contrast agent" (case-insensitive).
NO_AGENT = frozenset({"", "none", "n/a", "na", "no", "null", "nan"})
#: Ingredients (BIDS ContrastBolusIngredient values) saying "post-contrast" without naming an agent.
GENERIC_INGREDIENTS = frozenset({"gadolinium", "gd", "iodine", "carbon dioxide", "barium",
                                 "xenon", "contrast"})
SOURCE_SESSIONS_TSV = "acq_time in sessions.tsv"
SOURCE_SCANS_TSV = "acq_time in scans.tsv"
SOURCE_SIDECARS = "acquisition date and time of the sidecars"
SOURCE_LABELS = "session label order"
_SEP = r"[\s_\-]*"


class ImageEvidence:
    """What one image says of its contrast state: ``agent`` None and ``contrast`` False = nothing."""

    def __init__(self, agent=None, label=None, contrast=False, source=""):
        self.agent, self.label, self.contrast, self.source = agent, label, contrast, source


def _norm(text) -> str:
    return re.sub(r"[\s_\-]+", "", str(text)).lower()


def _word_pattern(name: str) -> re.Pattern:
    chars = _SEP.join(re.escape(c) for c in _norm(name))
    return re.compile(rf"(?<![A-Za-z0-9]){chars}(?![A-Za-z0-9])", re.IGNORECASE)


def _names(overrides: dict) -> list[tuple[str, str]]:
    """[(name or synonym, agent)] of the registry and the --relaxivity labels."""
    out = []
    for agent in relaxivity.known_agents():
        out.append((agent, agent))
        out += [(s, agent) for s in relaxivity.synonyms(agent)]
    for label in overrides:
        out.append((label, relaxivity.canonical_agent(label) or label))
    return out


def recognise(name, overrides: dict) -> str | None:
    """The agent a whole label names (``ce-`` value, option value), or None."""
    if not name:
        return None
    found = relaxivity.canonical_agent(name)
    if found:
        return found
    return next((k for k in overrides if _norm(k) == _norm(name)), None)


def agents_named(text, overrides: dict) -> list[str]:
    """The distinct agents named as words in a free text, in order of first appearance."""
    hits = []
    for name, agent in _names(overrides):
        m = _word_pattern(name).search(str(text))
        if m:
            hits.append((m.start(), agent))
    return list(dict.fromkeys(a for _, a in sorted(hits)))


def _sidecar_agents(img, overrides: dict, where: str):
    """(agents named by the sidecar, generic-ingredient text or None, unknown (field, text))."""
    found, generic, unknown, keys = [], None, None, []
    for key in AGENT_FIELDS:
        text = str(img.meta.get(key) or "").strip()
        if text.lower() in NO_AGENT:
            continue
        named = agents_named(text, overrides)
        if named:
            found += [a for a in named if a not in found]
            keys.append(key)
        elif text.lower() in GENERIC_INGREDIENTS:
            generic = f"{key} {text!r}"
        elif unknown is None:
            unknown = (key, text)
    if len(found) > 1:
        raise BadDataError(f"{where}: the sidecar names several contrast agents "
                           f"({', '.join(found)}){json_text(where, keys[0])}",
                           fix="correct ContrastBolusAgent/ContrastBolusIngredient to the agent "
                               "of this image, or name it with ce-<agent>")
    return found, generic, unknown, keys


def image_evidence(img, overrides: dict, where: str) -> ImageEvidence:
    """The contrast evidence of one image (``ce-`` and its sidecar); conflicts are exit 65."""
    ce = img.entities.get("ceagent")
    found, generic, unknown, keys = _sidecar_agents(img, overrides, where)
    meta = found[0] if found else None
    if ce:
        agent = recognise(ce, overrides)
        if agent is None and meta is None:
            raise UnknownAgentError(
                f"{where}: unknown contrast agent {ce!r} (known: "
                f"{', '.join(relaxivity.known_agents())}, and their synonyms)",
                fix=f"pass --relaxivity {ce}=<r1 in 1/(mM s)>, or name a known agent "
                    f"(ce-<agent> or the sidecar's ContrastBolusAgent)")
        if agent is not None and meta is not None and meta != agent:
            raise BadDataError(f"{where}: ce-{ce} is {agent} but the sidecar's contrast fields "
                               f"name {meta}{json_text(where, keys[0])}",
                               fix="correct the file name or the sidecar: both must name the "
                                   "agent of this image")
        return ImageEvidence(agent or meta, ce, True, f"ce-{ce}")
    if meta is not None:
        return ImageEvidence(meta, re.sub(r"[^A-Za-z0-9]", "", meta) or "agent", True,
                             f"sidecar {_field_text(img)}")
    if unknown is not None:
        key, text = unknown
        raise UnknownAgentError(
            f"{where}: the sidecar's {key} {text!r}{json_text(where, key)} names no contrast "
            f"agent the registry knows "
            f"(known: {', '.join(relaxivity.known_agents())}, and their synonyms)",
            fix=f"pass --relaxivity {re.sub(r'[^A-Za-z0-9]', '', text.split()[0]) or 'AGENT'}"
                f"=<r1 in 1/(mM s)> for a new agent, or correct {key} (or name the agent with "
                f"ce-<agent>)")
    if generic is not None:
        return ImageEvidence(None, None, True, f"sidecar {generic}")
    return ImageEvidence()


def _field_text(img) -> str:
    return ", ".join(f"{k} {str(img.meta[k]).strip()!r}" for k in AGENT_FIELDS
                     if str(img.meta.get(k) or "").strip().lower() not in NO_AGENT)


# ---------------------------------------------------------------------------------- sessions


def _agents_of_text(text: str | None, overrides: dict, where: str) -> frozenset:
    if text is None or text.strip().lower() in NO_AGENT:
        return frozenset()
    out = set()
    for part in re.split(r"[+,;]", text):
        part = part.strip()
        if part.lower() in NO_AGENT:
            continue
        agent = recognise(part, overrides)
        if agent is None:
            raise UnknownAgentError(
                f"{where}: unknown contrast agent {part!r} (known: "
                f"{', '.join(relaxivity.known_agents())}, and their synonyms)",
                fix=f"pass --relaxivity {re.sub(r'[^A-Za-z0-9]', '', part) or 'AGENT'}=<r1 in "
                    f"1/(mM s)>, or name a known agent ('none' for no agent)")
        out.add(agent)
    return frozenset(out)


def session_agents(root: Path, participant: str, config, overrides: dict,
                   sessions_df) -> dict[str, tuple[frozenset, str]]:
    """{session: (agents given in it (empty = none), where that is said)} from sessions.tsv's
    ``contrast_agent`` column and ``--session-agent``; the two disagreeing is exit 65."""
    sub = f"sub-{participant}"
    tsv = f"{sub}/{sub}_sessions.tsv"
    out: dict[str, tuple[frozenset, str]] = {}
    if sessions_df is not None and "contrast_agent" in sessions_df.columns:
        for row in sessions_df.to_dict("records"):
            ses = row.get("session")
            if ses:
                text = cell(row, "contrast_agent")
                out[ses] = (_agents_of_text(text, overrides, f"{tsv} (ses-{ses})"),
                            f"{tsv} contrast_agent {text or 'n/a'!r}")
    for ses, text in (config.session_agents or {}).items():
        option = f"--session-agent {ses}={text}"
        agents = _agents_of_text(text, overrides, option)
        if ses in out and out[ses][0] != agents:
            raise BadDataError(f"{option} contradicts {out[ses][1]} for ses-{ses}",
                               fix=f"correct the contrast_agent column of {tsv} or drop the "
                                   f"option (they must agree)")
        out[ses] = (agents, option)
    return out


# ------------------------------------------------------------------------------------- times


def _parse_time(text) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).strip()).replace(tzinfo=None)
    except ValueError:
        return None


def _sessions_tsv_times(root: Path, participant: str, df, warn) -> dict[str, datetime]:
    out = {}
    rel = f"sub-{participant}/sub-{participant}_sessions.tsv"
    for row in (df.to_dict("records") if df is not None else []):
        ses, text = row.get("session") or "", cell(row, "acq_time")
        if not ses or not text:
            continue
        t = _parse_time(text)
        if t is None:
            warn(f"{rel}: acq_time {text!r} of ses-{ses} is not an ISO date-time; ignored")
            continue
        out[ses] = t
    return out


def _scans_tsv_time(root: Path, participant: str, ses: str, warn) -> datetime | None:
    path = root / f"sub-{participant}" / f"ses-{ses}" / f"sub-{participant}_ses-{ses}_scans.tsv"
    if not path.is_file():
        return None
    rel = path.relative_to(root)
    try:
        df = read_tsv(path, short_rows_missing=True)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        warn(f"{rel}: cannot be read ({exc}); its acq_time is not used")
        return None
    times = []
    for row in (df.to_dict("records") if "acq_time" in df.columns else []):
        text = cell(row, "acq_time")
        t = _parse_time(text) if text else None
        if text and t is None:
            warn(f"{rel}: acq_time {text!r} is not an ISO date-time; ignored")
        elif t is not None:
            times.append(t)
    return min(times) if times else None


def _sidecar_time(images) -> datetime | None:
    times = []
    for img in images:
        text = img.meta.get("AcquisitionDateTime")
        if not text and img.meta.get("AcquisitionDate") and img.meta.get("AcquisitionTime"):
            text = f"{img.meta['AcquisitionDate']}T{img.meta['AcquisitionTime']}"
        t = _parse_time(text) if text else None
        if t is not None:
            times.append(t)
    return min(times) if times else None


def session_times(root: Path, participant: str, images_by_session: dict, sessions_df,
                  warn) -> tuple[dict[str, datetime], dict[str, str]]:
    """({session: acquisition time}, {session: its source}) over the sessions with images: per
    session the first of sessions.tsv, scans.tsv, the sidecars that gives a time."""
    tsv = _sessions_tsv_times(root, participant, sessions_df, warn)
    times, sources = {}, {}
    for ses, images in images_by_session.items():
        for source, get in ((SOURCE_SESSIONS_TSV, lambda: tsv.get(ses)),
                            (SOURCE_SCANS_TSV, lambda: _scans_tsv_time(root, participant, ses,
                                                                         warn)),
                            (SOURCE_SIDECARS, lambda: _sidecar_time(images))):
            t = get()
            if t is not None:
                times[ses], sources[ses] = t, source
                break
    for ses in sorted(set(tsv) - set(images_by_session)):
        times.setdefault(ses, tsv[ses])          # listed sessions without images (warned later)
    return times, sources


def describe_sources(sources: dict[str, str], sessions) -> str:
    """One phrase: which source ordered the sessions (per session when they differ)."""
    used = {sources.get(s, SOURCE_LABELS) for s in sessions}
    if len(used) == 1:
        return used.pop()
    return "; ".join(f"ses-{s}: {sources.get(s, 'no time')}" for s in sessions)
