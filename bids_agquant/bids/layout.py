"""From a raw BIDS dataset to one typed :class:`ParticipantPlan` per participant (pybids queries).

What is read, and how it is decided (interface.md, science.md):

- Only ``sub-*/[ses-*/]anat/*_T1w|*_VFA`` and ``fmap/*_TB1map|*_TB1AFI|...`` files (+ sidecars,
  sessions.tsv) are indexed; other datatypes and suffixes (FLAIR, SWI, DWI, ...) are never
  looked at. pybids runs database-less (in memory): nothing is ever written into BIDS_DIR.
- A state is one (session, contrast agent). The agent comes from evidence, never from its
  absence (``bids/evidence.py``): the ``ce-`` entity, the sidecar's ``ContrastBolusAgent`` /
  ``ContrastBolusIngredient`` (registry names and synonyms matched as words), the
  ``contrast_agent`` column of ``sessions.tsv`` or ``--session-agent``; conflicts, unknown agents,
  a non-baseline session with pre-contrast images only, several runs of one image for one state
  are exit 65; a participant without a post-contrast state is exit 66.
- VFA sets: files of a state differing only in ``flip-``; flip angles (deg) and TR (s) from the
  sidecars (``FlipAngle``; ``RepetitionTimeExcitation``, else ``RepetitionTime``).
- Baseline: the session holding a pre-contrast T1w (``--baseline-session``, else the earliest by
  acquisition time: ``sessions.tsv`` ``acq_time``, else ``scans.tsv`` ``acq_time``, else the
  sidecars' ``AcquisitionDateTime``; else the first in natural label order, with a warning).
- Pre/post pairs: a post-contrast state uses the pre-contrast state of its own session when that
  one has what the post state has (T1w and/or VFA), else the baseline pre-contrast state.
- B1: the session's TB1map, or the one whose ``IntendedFor`` lists the VFA files; or, the same
  way, the file collection of another B1 mapping method (``TB1AFI``, ``TB1DAM``, ``TB1TFL``,
  ``TB1RFM``, ``TB1EPI``: :data:`bids_agquant.qmri.b1methods.METHODS`), whose sidecars' protocol
  values are checked here and whose factor map is computed at run time (a TB1map is preferred).
- Intensity scaling of every VFA/T1w file (Philips display values): ``bids/scaling.py``, after
  the images are validated (docs/conversion.md).
- Lesion masks: ``--lesion-masks DIR`` or every derivatives dataset under BIDS_DIR/derivatives:
  ``*_label-metastasis_mask.nii[.gz]`` (binary) or ``*_desc-metastases_dseg.nii[.gz]`` (labels).
- Covariates (allow-list) from participants.tsv: ``dose_mg_per_kg``, ``weight_kg``, ``age``
  (numbers), ``primary_tumor``, ``sex`` (text). Missing or non-numeric values are warnings.

Errors raise :mod:`bids_agquant.errors` classes (exit codes 64/65/66) with one line naming
the file or option and the fix.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

from bids_agquant.bids import evidence as E
from bids_agquant.bids import filters as F
from bids_agquant.bids import scaling, validate as V
from bids_agquant.bids.plan import (ContrastState, LesionMask, ParticipantPlan, VFASet,
                                    describe_b1)
from bids_agquant.bids.sidecars import MetaSource, json_text
from bids_agquant.bids.tables import cell, natural_key, read_participants, read_sessions
from bids_agquant.errors import BadDataError, MissingInputError, UnknownAgentError, UsageError
from bids_agquant.qmri import b1methods as B1M
from bids_agquant.qmri import relaxivity

__all__ = ["open_layout", "select_participants", "build_plan", "build_plans", "format_plan",
           "LABEL_RE", "normalise_label", "NUMERIC_COVARIATES", "TEXT_COVARIATES"]

LOGGER = logging.getLogger("bids_agquant.layout")

#: BIDS labels are alphanumeric: anything else (``../``, ``/``, ``_``) is refused before any query.
LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
NUMERIC_COVARIATES = ("dose_mg_per_kg", "weight_kg", "age")
TEXT_COVARIATES = ("primary_tumor", "sex")
NIFTI = [".nii.gz", ".nii"]
MASK_PATTERNS = {"mask": "_label-metastasis_mask.nii", "dseg": "_desc-metastases_dseg.nii"}
#: fmap suffixes read: the TB1map first (preferred), then the methods computed into a factor map.
B1_SUFFIXES = (B1M.READ_METHOD,) + B1M.COMPUTED_METHODS


def normalise_label(value: str, prefix: str, option: str) -> str:
    """``sub-01`` / ``01`` -> ``01``; anything but letters and digits -> UsageError (64)."""
    label = str(value).strip()
    if label.startswith(prefix + "-"):
        label = label[len(prefix) + 1:]
    if not LABEL_RE.match(label):
        raise UsageError(f"{option} {value!r}: BIDS labels hold letters and digits only",
                         fix=f"pass e.g. {option} 01 (or {prefix}-01)")
    return label


# ---------------------------------------------------------------------------------------------
# pybids


def _ignore_patterns(participants: Sequence[str] | None) -> list:
    pats = [
        re.compile(r"^/(code|models|sourcedata|stimuli|derivatives|phenotype)(/|$)"),
        # datatypes other than anat and fmap
        re.compile(r"^/sub-[^/]+/(ses-[^/]+/)?(?!(anat|fmap)$)[a-z]+$"),
        # inside anat: only T1w and VFA; inside fmap: only the B1 maps (B1_SUFFIXES)
        re.compile(r"^/sub-[^/]+/(ses-[^/]+/)?anat/(?![^/]*_(T1w|VFA)\.[^/]+$)[^/]+$"),
        re.compile(rf"^/sub-[^/]+/(ses-[^/]+/)?fmap/(?![^/]*_({'|'.join(B1_SUFFIXES)})"
                   rf"\.[^/]+$)[^/]+$"),
    ]
    if participants:
        keep = "|".join(re.escape(p) for p in participants)
        pats.append(re.compile(rf"^/sub-(?!({keep})$)[^/]+$"))
    return pats


def open_layout(bids_dir: Path, participants: Sequence[str] | None = None, *,
                validate: bool = True):
    """A database-less pybids layout of the files bids_agquant reads (nothing written to disk).

    ``validate=True`` (the default, i.e. without --skip-bids-validation) requires a proper
    dataset_description.json and indexes only BIDS-valid file names.
    """
    from bids.layout import BIDSLayout, BIDSLayoutIndexer  # pybids: slow to import, only here

    bids_dir = Path(bids_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # pybids' FutureWarnings are not the user's business
        indexer = BIDSLayoutIndexer(validate=validate, ignore=_ignore_patterns(participants),
                                    index_metadata=True)
        try:
            return BIDSLayout(str(bids_dir), validate=validate, derivatives=False,
                              database_path=None, indexer=indexer)
        except Exception as exc:
            bad = _first_bad_json(bids_dir, participants)
            if bad is not None:
                rel, why = bad
                raise BadDataError(f"{rel}: {why}",
                                   fix="fix the file (a JSON sidecar is one object, "
                                       "{\"Key\": value, ...}; check it with "
                                       "'python -m json.tool FILE')") from exc
            text = " ".join(str(exc).split("Example")[0].split())
            raise BadDataError(f"{bids_dir}: pybids cannot index the dataset ({text})",
                               fix="fix dataset_description.json (it needs Name and BIDSVersion) "
                                   "or pass --skip-bids-validation") from exc


def _first_bad_json(bids_dir: Path, participants: Sequence[str] | None):
    """(relative path, reason) of the first JSON file pybids indexes that is not a JSON object."""
    pats = _ignore_patterns(participants)
    for top, dirs, files in os.walk(bids_dir):
        rel = Path(top).relative_to(bids_dir).as_posix()
        rel_top = "" if rel == "." else "/" + rel
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not any(p.search(f"{rel_top}/{d}") for p in pats))
        for name in sorted(files):
            rel = f"{rel_top}/{name}"
            if not name.endswith(".json") or name.startswith(".") or any(p.search(rel) for p in pats):
                continue
            try:
                content = json.loads(Path(top, name).read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                return rel[1:], f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            except ValueError as exc:
                return rel[1:], f"not valid JSON ({exc})"
            except OSError as exc:
                return rel[1:], f"cannot be read ({exc.strerror or exc})"
            if not isinstance(content, dict):
                return rel[1:], f"holds a JSON {type(content).__name__}, not an object"
    return None


def select_participants(layout, requested: Sequence[str], bids_dir: Path) -> list[str]:
    """The participants to process: all, or the requested ones (each must exist, else 66)."""
    available = sorted(layout.get_subjects())
    on_disk = sorted(d.name[4:] for d in Path(bids_dir).glob("sub-*") if d.is_dir())
    if not requested:
        if not available:
            raise MissingInputError(f"{bids_dir}: no sub-<label> folders with T1w/VFA images",
                                    fix="point BIDS_DIR at the dataset root")
        for p in sorted(set(on_disk) - set(available)):
            LOGGER.warning("sub-%s has no T1w or VFA image (anat/*_T1w, anat/*_VFA); skipped", p)
        return available
    missing = [p for p in requested if p not in on_disk]
    if missing:
        shown = ", ".join(on_disk[:10]) + (" ..." if len(on_disk) > 10 else "")
        raise MissingInputError(
            f"--participant-label {' '.join(missing)}: no such participant in {bids_dir} "
            f"(available: {shown or 'none'})", fix="check the label (without or with sub-)")
    return list(dict.fromkeys(requested))


# ---------------------------------------------------------------------------------------------
# helpers


def _rel(path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


@dataclass
class _Image:
    path: Path
    entities: dict
    meta: dict

    @property
    def name(self) -> str:
        return self.path.name


ANY_SESSION = object()


def _images(layout, participant, session, datatype, suffix, filters: dict | None = None,
            name: str | None = None) -> list[_Image]:
    """The images of one suffix, narrowed by the ``--bids-filter-file`` entities of query
    ``name`` (:data:`bids_agquant.bids.filters.QUERIES`)."""
    query = dict(F.pybids_filters(filters, name) if name else {})
    if session is not ANY_SESSION:
        # a session filter and the session asked for: both must hold
        wanted = (filters or {}).get(name, {})
        if "session" in wanted and not F.matches({name: {"session": wanted["session"]}}, name,
                                                 {"session": session}):
            return []
        query["session"] = session
    query.update(subject=participant, datatype=datatype, suffix=suffix, extension=NIFTI)
    files = layout.get(**query)
    out = []
    for f in files:
        out.append(_Image(Path(f.path), dict(f.get_entities()), dict(f.get_metadata() or {})))
    return sorted(out, key=lambda i: i.name)


def _clean_label(agent: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", agent) or "agent"


def _assign_states(imgs, declared, participant: str, ses: str, overrides: dict,
                   root: Path) -> dict:
    """{agent (None = pre): _StateFiles} of one session from the images' own evidence and the
    session's declared agents (sessions.tsv contrast_agent, --session-agent); see evidence.py."""
    sub = f"sub-{participant}"
    agents, where = declared if declared is not None else (frozenset(), "")
    said = " + ".join(sorted(agents)) or "no agent"
    how = (f"name the agent with ce-<agent> in the file name, a contrast_agent column in "
           f"{sub}/{sub}_sessions.tsv, or --session-agent {ses}=AGENT")
    found = []
    for suffix, img in imgs:
        rel = MetaSource(img.path, root)
        e = E.image_evidence(img, overrides, rel)
        if declared is not None and e.agent is not None and e.agent not in agents:
            raise BadDataError(f"{rel}: {e.source} names {e.agent} but {where} says {said} for "
                               f"ses-{ses}", fix="correct the file name or sidecar, or the "
                                                 "session's contrast_agent / --session-agent")
        if e.contrast and e.agent is None:                  # a generic ingredient only
            if len(agents) != 1:
                extra = f" and {where} says {said}" if declared is not None else ""
                raise BadDataError(f"{rel}: the {e.source} says post-contrast but names no "
                                   f"agent{extra}", fix=how)
            agent = next(iter(agents))
            e = E.ImageEvidence(agent, _clean_label(agent), True, f"{e.source}, {where}")
        found.append((suffix, img, e))
    default = sorted(agents - {e.agent for *_, e in found if e.agent})
    if len(default) > 1 and any(not e.contrast for *_, e in found):
        raise BadDataError(f"{sub}/ses-{ses}: {where} gives {said} but no image says which it "
                           f"belongs to", fix="name each image's agent with ce-<agent>")
    per_agent: dict = {}
    for suffix, img, e in found:
        if not e.contrast and default:
            e = E.ImageEvidence(default[0], _clean_label(default[0]), True,
                                f"{where} (no ce- or sidecar agent in ses-{ses})")
        elif not e.contrast:
            e.source = "no ce- and no agent in the sidecar" + (
                f" ({where}: the agent of the other files of ses-{ses})" if agents
                else f" ({where})" if where else "")
        st = per_agent.setdefault(e.agent, _StateFiles(agent=e.agent, agent_label=e.label,
                                                       evidence=e.source))
        (st.t1w if suffix == "T1w" else st.vfa).append(img)
    return per_agent


def _pick_one(images: list[_Image], what: str, root: Path, warn,
              ignore: Iterable[str] = ()) -> list[_Image]:
    """Group images by their entities (minus ``ignore``): one group of one run, else exit 65."""
    groups: dict[tuple, list[_Image]] = defaultdict(list)
    skip = {"run", "extension", "ceagent", *ignore}
    for img in images:
        if img.entities.get("part") not in (None, "mag"):
            continue   # phase / real / imaginary parts are not magnitude images
        key = tuple(sorted((k, str(v)) for k, v in img.entities.items() if k not in skip))
        groups[key].append(img)
    if not groups:
        return []
    if len(groups) > 1:
        names = ", ".join(sorted(g[0].name for g in groups.values()))
        raise BadDataError(f"{what}: several candidate acquisitions ({names})",
                           fix="keep one of them in the dataset (move the others to sourcedata/)")
    group = next(iter(groups.values()))
    runs = sorted({img.entities.get("run") for img in group}, key=lambda r: (r is not None, r or 0))
    if len(runs) > 1:
        names = ", ".join(sorted(i.name for i in group))
        raise BadDataError(f"{what}: several runs of one image for one state ({names})",
                           fix="keep one run (move the others to sourcedata/); if one run is "
                               "post-contrast, name its agent with ce-<agent> (or its sidecar's "
                               "ContrastBolusAgent)")
    return group


#: Field strengths (tesla) of human MR scanners; a value outside is a unit or typing error.
FIELD_STRENGTH_RANGE_T = (0.05, 11.8)


def _field_strength(images: Iterable[_Image], root: Path) -> float | None:
    """``MagneticFieldStrength`` (tesla) of the first image giving it; a value that is not a
    number of tesla (e.g. "3T", 3000) is exit 65 naming the JSON: the relaxivity depends on it."""
    key = "MagneticFieldStrength"
    for img in images:
        if img.meta.get(key) is None:
            continue
        where = MetaSource(img.path, root)
        value = V.number(img.meta, key, where)
        lo, hi = FIELD_STRENGTH_RANGE_T
        if not lo <= value <= hi:
            raise BadDataError(f"{where}: {key} = {value:g}{json_text(where, key)} is not a "
                               f"field strength in tesla ({lo:g}-{hi:g})",
                               fix=f"write {key} in tesla (e.g. 3) in the JSON sidecar")
        return value
    return None


def _intended_for(meta: dict, participant: str) -> set[str]:
    """IntendedFor entries as paths relative to the subject folder."""
    items = meta.get("IntendedFor") or []
    if isinstance(items, str):
        items = [items]
    out = set()
    for item in items:
        item = str(item)
        if item.startswith("bids:"):
            item = item.split(":", 2)[-1]          # bids::sub-01/ses-1/anat/x -> sub-01/...
        item = item.lstrip("/")
        prefix = f"sub-{participant}/"
        if item.startswith(prefix):
            item = item[len(prefix):]
        out.add(item)
    return out


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class _StateFiles:
    t1w: list[_Image] = field(default_factory=list)
    vfa: list[_Image] = field(default_factory=list)
    agent: str | None = None
    agent_label: str | None = None
    evidence: str = ""


def build_plan(layout, participant: str, config, *,
               bids_dir: Path | None = None) -> ParticipantPlan:
    """The plan of one participant (metadata checked; images are checked by validate_plan)."""
    root = Path(bids_dir or config.bids_dir)
    warnings: list[str] = []

    def warn(msg):
        LOGGER.warning("sub-%s: %s", participant, msg)
        warnings.append(msg)

    sub = f"sub-{participant}"
    all_sessions = sorted(layout.get_sessions(subject=participant), key=natural_key)
    if not all_sessions:
        if layout.get(subject=participant, suffix=["T1w", "VFA"], extension=NIFTI):
            raise MissingInputError(f"{sub}: images are not inside ses-<label> folders",
                                    fix="put each visit under sub-<p>/ses-<label>/ (bids_agquant "
                                        "needs sessions)")
        raise MissingInputError(f"{sub}: no T1w or VFA image in any session",
                                fix="check the dataset, or leave this participant out")
    overrides = dict(config.relaxivity_overrides or {})
    sessions_df = _sessions_table(root, participant, warn)
    declared = E.session_agents(root, participant, config, overrides, sessions_df)
    for ses in sorted(set(config.session_agents or {}) - set(all_sessions)):
        warn(f"--session-agent {ses}=...: {sub} has no ses-{ses}; ignored")
    states, b1maps, images = _collect_states(layout, participant, all_sessions, config,
                                             overrides, root, warn, declared)
    all_b1 = ([m for maps in b1maps.values() for m in maps]
              if config.b1_correction != "off" else [])
    acq, sources = E.session_times(root, participant, {s: images[s] for s in states},
                                   sessions_df, warn)
    listed = set() if sessions_df is None else {r for r in sessions_df.get("session", []) if r}
    for ses in sorted(listed - set(all_sessions), key=natural_key):
        warn(f"ses-{ses} is listed in {sub}_sessions.tsv but has no folder; skipped")

    baseline, why = _choose_baseline(states, all_sessions, acq, sources, config, sub, warn)
    selected = _select_sessions(states, all_sessions, baseline, acq, config, sub, warn)
    _refuse_pre_only(selected, states, baseline, participant)
    built = _build_states(selected, states, baseline, b1maps, all_b1, config, participant, root,
                          warn)
    final, base_pre = _pair_pre_post(built, baseline, overrides, root, warn)
    _require_post(final, selected, sub)
    for ses in selected:
        if not any(s.session == ses and s.t1w is not None for s in final):
            warn(f"ses-{ses} has no T1w; its VFA sets are registered without a session T1w")

    lesion = _find_lesion_mask(participant, config, root, baseline, all_sessions, warn)
    covariates = _covariates(root, participant, warn)
    order = (E.describe_sources(sources, selected) if all(s in acq for s in selected)
             else f"{E.SOURCE_LABELS} (no acquisition time for every session)")
    in_time = sorted(selected, key=(lambda s: (acq[s], natural_key(s)))
                     if all(s in acq for s in selected) else natural_key)
    plan = ParticipantPlan(participant=participant, baseline_session=baseline,
                           reference_t1w=base_pre.t1w, states=tuple(final),
                           lesion_mask=lesion, covariates=covariates,
                           warnings=tuple(warnings), baseline_reason=why, session_order=order,
                           sessions_in_time=tuple(in_time))
    LOGGER.debug("sub-%s: baseline ses-%s (%s)", participant, baseline, why)
    return plan


def _sessions_table(root: Path, participant: str, warn):
    """sessions.tsv as read_sessions gives it (None when missing or unreadable, warned)."""
    try:
        return read_sessions(root, participant)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        rel = f"sub-{participant}/sub-{participant}_sessions.tsv"
        warn(f"{rel}: cannot be read ({exc}); session order by label")
        return None


def _refuse_pre_only(selected, states: dict, baseline: str, participant: str) -> None:
    """A non-baseline session with pre-contrast images only has nothing to quantify: exit 65."""
    sub = f"sub-{participant}"
    for ses in selected:
        if ses == baseline or any(a is not None for a in states[ses]):
            continue
        sf = states[ses][None]
        names = ", ".join(i.name for i in (sf.t1w + sf.vfa)[:3])
        names += " ..." if len(sf.t1w + sf.vfa) > 3 else ""
        raise BadDataError(
            f"{sub}/ses-{ses}: only pre-contrast images ({names}; {sf.evidence}), nothing to "
            f"quantify", fix=f"if they were acquired after a contrast agent, say which: "
                             f"ce-<agent> in the file names, a contrast_agent column in "
                             f"{sub}/{sub}_sessions.tsv, or --session-agent {ses}=AGENT; else "
                             f"leave the session out with --session-label")


def _require_post(final, selected, sub: str) -> None:
    if not any(s.is_post for s in final):
        raise MissingInputError(
            f"{sub}: no post-contrast image in ses-{', ses-'.join(selected)} (nothing to "
            f"quantify)", fix="add the post-contrast acquisitions, name their agent (ce-<agent>, "
                              "sessions.tsv contrast_agent, --session-agent), or leave this "
                              "participant out")


def _collect_states(layout, participant: str, all_sessions, config, overrides: dict, root: Path,
                    warn, declared: dict):
    """({session: {agent (None = pre): files}}, {session: TB1maps}, {session: images})."""
    states: dict[str, dict] = {}   # session -> {agent(None=pre): _StateFiles}
    b1maps: dict[str, list[_Image]] = {}
    images: dict[str, list[_Image]] = {}
    for ses in all_sessions:
        imgs = [(suffix, img) for suffix, name in (("T1w", "t1w"), ("VFA", "vfa"))
                for img in _images(layout, participant, ses, "anat", suffix,
                                   config.bids_filters, name)]
        images[ses] = [img for _, img in imgs]
        per_agent = _assign_states(imgs, declared.get(ses), participant, ses, overrides, root)
        if per_agent:
            states[ses] = per_agent
        elif config.bids_filters:
            LOGGER.info("sub-%s: ses-%s: no T1w or VFA image passes --bids-filter-file; skipped",
                        participant, ses)
        else:
            warn(f"ses-{ses} has no T1w or VFA image; skipped")
        if config.b1_correction != "off":
            b1maps[ses] = _b1_sources(layout, participant, ses, root, config.bids_filters)

    return states, b1maps, images


def _choose_baseline(states: dict, all_sessions, acq: dict, sources: dict, config, sub: str,
                     warn):
    """(baseline session, why): --baseline-session, the only one with a pre-contrast T1w, or the
    earliest by acquisition time (else the first label, with a warning)."""
    def has_pre_t1w(ses):
        st = states.get(ses, {}).get(None)
        return st is not None and bool(st.t1w)

    candidates = [s for s in states if has_pre_t1w(s)]
    if config.baseline_session:
        b = config.baseline_session
        if b not in all_sessions:
            raise MissingInputError(f"--baseline-session {b}: {sub} has no ses-{b} "
                                    f"(sessions: {', '.join(all_sessions)})",
                                    fix="pass one of the listed sessions")
        if not has_pre_t1w(b):
            raise MissingInputError(f"--baseline-session {b}: {sub}/ses-{b} has no pre-contrast "
                                    f"T1w (a *_T1w.nii.gz without ce-)",
                                    fix=f"choose a session holding one "
                                        f"({', '.join(candidates) or 'none has'})")
        return b, "--baseline-session"
    if not candidates:
        any_pre = any(None in st for st in states.values())
        posts = [f"ses-{s}" for s, st in states.items() if any(a is not None for a in st)]
        if posts and not any_pre:
            raise MissingInputError(f"{sub}: post-contrast images ({', '.join(posts)}) but no "
                                    f"pre-contrast T1w or VFA in any session",
                                    fix="add the pre-contrast acquisitions (files without ce-) "
                                        "or leave this participant out (in a session whose "
                                        "contrast_agent or --session-agent names an agent, files "
                                        "without ce- are post-contrast unless a file of the "
                                        "session names that agent with ce-)")
        raise MissingInputError(f"{sub}: no baseline pre-contrast T1w (a *_T1w.nii.gz without "
                                f"ce-) in any session", fix="add the pre-contrast T1w; it is the "
                                "reference space of every map")
    if len(candidates) == 1:
        return candidates[0], "the only session with a pre-contrast T1w"
    timed = [s for s in candidates if s in acq]
    if timed:
        baseline = min(timed, key=lambda s: acq[s])
        why = f"earliest of the sessions with a pre-contrast T1w by {sources.get(baseline)}"
        if len(timed) < len(candidates):
            untimed = ", ".join("ses-" + s for s in candidates if s not in acq)
            warn(f"no acquisition time (sessions.tsv or scans.tsv acq_time, sidecar "
                 f"AcquisitionDateTime) for {untimed}; baseline chosen among the others")
        return baseline, why
    baseline = sorted(candidates, key=natural_key)[0]
    warn(f"several sessions hold a pre-contrast T1w ({', '.join(candidates)}) and none has an "
         f"acquisition time (sessions.tsv or scans.tsv acq_time, sidecar AcquisitionDateTime): "
         f"baseline ses-{baseline} by label order; pass --baseline-session to choose")
    return baseline, "first session label (no acquisition time in sessions.tsv, scans.tsv or " \
                     "the sidecars)"


def _select_sessions(states: dict, all_sessions, baseline: str, acq: dict, config, sub: str,
                     warn) -> list[str]:
    """The sessions to read (--session-label, always the baseline), baseline first."""
    selected = list(states)
    if config.session_labels:
        wanted = list(dict.fromkeys(config.session_labels))
        for s in wanted:
            if s not in all_sessions:
                warn(f"--session-label {s}: {sub} has no ses-{s}; skipped")
        selected = [s for s in selected if s in wanted or s == baseline]
        if not any(s in wanted and s in states for s in selected):
            raise MissingInputError(f"--session-label {' '.join(wanted)}: none of these sessions "
                                    f"has T1w/VFA images for {sub} (sessions: "
                                    f"{', '.join(all_sessions)})", fix="pass existing sessions")

    def order_key(s):
        return (s != baseline, acq.get(s, datetime.max) if all(x in acq for x in selected)
                else datetime.max, natural_key(s))

    selected.sort(key=order_key)

    return selected


def _build_states(selected, states: dict, baseline: str, b1maps: dict, all_b1, config,
                  participant: str, root: Path, warn) -> list[ContrastState]:
    """One ContrastState per (session, agent) to read, its T1w and VFA set chosen."""
    sub = f"sub-{participant}"
    built: list[ContrastState] = []
    for ses in selected:
        per_agent = states[ses]
        if ses == baseline and config.session_labels and ses not in config.session_labels:
            per_agent = {None: per_agent[None]}           # only the reference, not quantified
        sess_b1 = b1maps.get(ses, [])
        for agent in sorted(per_agent, key=lambda a: (a is not None, str(a))):
            sf = per_agent[agent]
            desc = f"{sub}/ses-{ses} {'pre-contrast' if agent is None else sf.agent_label}"
            t1w = _pick_one(sf.t1w, f"{desc} T1w", root, warn)
            vfa_imgs = _pick_one(sf.vfa, f"{desc} VFA", root, warn, ignore=("flip",))
            vfa = (_vfa_set(vfa_imgs, desc, root, sess_b1, all_b1, participant, config, warn)
                   if vfa_imgs else None)
            if len(t1w) > 1:
                raise BadDataError(f"{desc}: several T1w ({', '.join(i.name for i in t1w)})",
                                   fix="keep one")
            built.append(ContrastState(session=ses, agent=agent, agent_label=sf.agent_label,
                                       t1w=t1w[0].path if t1w else None, vfa=vfa,
                                       evidence=sf.evidence))

    return built


def _pair_pre_post(built, baseline: str, overrides: dict, root: Path, warn):
    """(states with each post-contrast state's pre-contrast session, baseline pre state)."""
    by_key = {(s.session, s.agent): s for s in built}
    base_pre = by_key[(baseline, None)]
    final: list[ContrastState] = []
    for st in built:
        if st.is_post:
            same = by_key.get((st.session, None))

            def provides(pre):
                return (pre is not None and (st.vfa is None or pre.vfa is not None)
                        and (st.t1w is None or pre.t1w is not None))

            if provides(same):
                pre_ses = st.session
            elif provides(base_pre) or same is None:
                pre_ses = baseline
            else:
                pre_ses = st.session
            pre = by_key[(pre_ses, None)]
            if st.vfa is not None and pre.vfa is None:
                warn(f"ses-{st.session} {st.agent_label}: no pre-contrast VFA (same session or "
                     f"baseline); T1 is mapped but delta R1 and concentration are not computed")
            if st.t1w is not None and pre.t1w is None:
                warn(f"ses-{st.session} {st.agent_label}: no pre-contrast T1w; no signal "
                     f"enhancement map")
            st = dataclasses.replace(st, pre_session=pre_ses)
            _check_relaxivity(st, overrides, root)
        final.append(st)
    return final, base_pre


def _check_relaxivity(st: ContrastState, overrides: dict, root: Path) -> None:
    """The agent has an r1 (registry or --relaxivity), else :class:`UnknownAgentError` (65).

    qmri's own ``relaxivity.UnknownAgentError`` (a KeyError: qmri cannot import
    ``bids_agquant.errors``) becomes the user-facing error here, naming the image.
    """
    field_t = st.vfa.field_strength_t if st.vfa else None
    try:
        relaxivity.get_relaxivity(st.agent, field_t, overrides)
    except relaxivity.UnknownAgentError as exc:
        f = st.t1w or (st.vfa.files[0] if st.vfa else None)
        raise UnknownAgentError(f"{_rel(f, root)}: {exc}") from exc


def _vfa_set(images: list[_Image], desc: str, root: Path, b1maps: list[_Image],
             all_b1: list[_Image], participant: str, config, warn) -> VFASet:
    fas, trs = [], []
    for img in images:
        where = MetaSource(img.path, root)
        fas.append(V.flip_angle_deg(img.meta, where))
        trs.append(V.repetition_time_s(img.meta, where))
    files, fas, tr = V.check_vfa_set([i.path for i in images], fas, trs, f"{desc} VFA")
    b1 = (_b1_for(images, b1maps, all_b1, participant, root, warn, desc)
          if config.b1_correction != "off" else None)
    field_t = _field_strength(images, root)
    if field_t is None:
        warn(f"{desc} VFA: MagneticFieldStrength missing from the sidecars; relaxivity at 3 T "
             f"assumed")
    if b1 is not None and b1.method != B1M.READ_METHOD:
        params = V.b1_method_params(b1.method, [(role, img.meta, _rel(img.path, root))
                                                for role, img in zip(b1.roles, b1.images)])
        return VFASet(files=files, flip_angles_deg=fas, tr_s=tr, field_strength_t=field_t,
                      b1_method=b1.method, b1_files=tuple(i.path for i in b1.images),
                      b1_roles=b1.roles, b1_params=tuple(sorted(params.items())))
    return VFASet(files=files, flip_angles_deg=fas, tr_s=tr, b1map=b1 and b1.path,
                  field_strength_t=field_t, b1_units=b1 and b1.meta.get("Units"))


def _b1_for(vfa: list[_Image], session_maps: list[_B1Source], all_maps: list[_B1Source],
            participant: str, root: Path, warn, desc: str) -> _B1Source | None:
    """The B1 data of a VFA set: a TB1map or a method's collection whose IntendedFor lists it,
    else the session's (those without IntendedFor); a TB1map is preferred to a computed method
    (it is the map the site's own pipeline gave), then the order of :data:`B1_SUFFIXES`."""
    sub_dir = root / f"sub-{participant}"
    targets = {_rel(i.path, sub_dir) for i in vfa}
    intended = [m for m in session_maps if _intended_for(m.meta, participant) & targets]
    if not intended:   # a map of another session may point here
        intended = [m for m in all_maps if _intended_for(m.meta, participant) & targets]
    if intended:
        pool = intended
    else:
        pool = [m for m in session_maps if not m.meta.get("IntendedFor")]
    if not pool:
        for m in session_maps:
            warn(f"{desc}: {_rel(m.path, root)}{m.more} is not used for this VFA set: its "
                 f"IntendedFor lists none of the VFA files; list them in IntendedFor (or remove "
                 f"the field) to get the B1 correction")
        return None
    pool = sorted(pool, key=lambda m: B1_SUFFIXES.index(m.method))
    if len(pool) > 1:
        what = "TB1maps" if all(m.method == B1M.READ_METHOD for m in pool) else "B1 maps"
        warn(f"{desc}: several {what} ({', '.join(m.name for m in pool)}); using {pool[0].name}")
    return pool[0]


@dataclass
class _B1Source:
    """A TB1map, or the file collection of a computed B1 method (images in role order)."""
    method: str
    images: tuple[_Image, ...]
    roles: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.images[0].path

    @property
    def more(self) -> str:
        """`` (+n <method> images)`` after the first file's name of a collection, else ``""``."""
        n = len(self.images) - 1
        return f" (+{n} {self.method} image{'s' if n > 1 else ''})" if n else ""

    @property
    def name(self) -> str:
        return self.images[0].name + self.more

    @property
    def meta(self) -> dict:
        """The first image's sidecar, with the IntendedFor of every image of the collection."""
        meta = dict(self.images[0].meta)
        intended: list = []
        for img in self.images:
            items = img.meta.get("IntendedFor") or []
            intended += [items] if isinstance(items, str) else list(items)
        meta["IntendedFor"] = intended
        return meta


def _b1_sources(layout, participant: str, session: str, root: Path,
                filters: dict | None = None) -> list[_B1Source]:
    """A session's TB1maps and B1 method collections (:data:`~bids_agquant.qmri.b1methods.METHODS`
    names them), narrowed by the ``b1`` filters."""
    out = [_B1Source(B1M.READ_METHOD, (img,), ("map",))
           for img in _images(layout, participant, session, "fmap", B1M.READ_METHOD, filters,
                              "b1")]
    for suffix, method in B1M.METHODS.items():
        images = _images(layout, participant, session, "fmap", suffix, filters, "b1")
        out += _b1_collections(method, images, root)
    return out


def _role_of(method, img: _Image, root: Path):
    """(role, freeform rest of the label, flip index) of one image of a method's collection."""
    for role in method.roles:
        value = img.entities.get(role.entity)
        value = "" if value is None else str(value)
        if role.entity == "acquisition" and value.startswith(role.label):
            return role.name, value[len(role.label):]
        if role.entity != "acquisition" and value == role.label:
            return role.name, ""
    need = " or ".join(f"{_ENTITY_KEYS[r.entity]}-{r.label}" for r in method.roles)
    raise BadDataError(f"{_rel(img.path, root)}: a {method.suffix} image needs {need} in its "
                       f"name (BIDS qMRI appendix)",
                       fix=f"rename it (e.g. ..._{_ENTITY_KEYS[method.roles[0].entity]}-"
                           f"{method.roles[0].label}_{method.suffix}.nii.gz), or move it to "
                           f"sourcedata/")


_ENTITY_KEYS = {"acquisition": "acq", "flip": "flip", "echo": "echo"}


def _b1_collections(method, images: list[_Image], root: Path) -> list[_B1Source]:
    """The complete file collections of one method among a session's images (grouped by their
    other entities); an incomplete one is exit 65."""
    groups: dict[tuple, dict] = defaultdict(dict)
    skip = {"extension", "suffix", "datatype", "subject", "session", *method.entities}
    for img in images:
        if img.entities.get("part") not in (None, "mag"):
            continue   # phase images are not used
        role, rest = _role_of(method, img, root)
        key = tuple(sorted((k, str(v)) for k, v in img.entities.items() if k not in skip))
        flip = int(img.entities.get("flip") or 0) if method.per_flip else 0
        slot = (flip, role)
        if slot in groups[key + (("rest", rest),)]:
            raise BadDataError(f"{_rel(img.path, root)}: a second {method.suffix} image for the "
                               f"same role ({groups[key + (('rest', rest),)][slot].name})",
                               fix="keep one (move the other to sourcedata/)")
        groups[key + (("rest", rest),)][slot] = img
    out = []
    for slots in groups.values():
        flips = sorted({f for f, _ in slots})
        first = min(slots.values(), key=lambda i: i.name)
        if method.per_flip and len(flips) < 2:
            raise BadDataError(f"{_rel(first.path, root)}: a {method.suffix} collection needs two "
                               f"or more flip-<index> (found {len(flips)})",
                               fix="add the other flip angles, or move the files to sourcedata/")
        ordered = []
        for flip in flips:
            for role in method.roles:
                if (flip, role.name) not in slots:
                    label = f"{_ENTITY_KEYS[role.entity]}-{role.label}"
                    at = f" for flip-{flip}" if method.per_flip else ""
                    raise BadDataError(f"{_rel(first.path, root)}: its {method.suffix} collection "
                                       f"has no {label} image{at}",
                                       fix="add it, or move the collection to sourcedata/ (or "
                                           "run with --b1-correction off)")
                ordered.append((role.name, slots[(flip, role.name)]))
        out.append(_B1Source(method.suffix, tuple(i for _, i in ordered),
                             tuple(r for r, _ in ordered)))
    return out


def _find_lesion_mask(participant: str, config, root: Path, baseline: str,
                      sessions: Sequence[str], warn) -> LesionMask | None:
    sub = f"sub-{participant}"
    if config.lesion_masks_dir is not None:
        dirs = [Path(config.lesion_masks_dir)]
    else:
        deriv = root / "derivatives"
        dirs = sorted(d for d in deriv.iterdir() if d.is_dir()) if deriv.is_dir() else []
        out = Path(config.output_dir).resolve() if config.output_dir else None
        work = Path(config.work_dir).resolve() if config.work_dir else None
        dirs = [d for d in dirs if d.resolve() not in (out, work) and not _is_ours(d)]
    found = []
    for d in dirs:
        if not (d / sub).is_dir():
            continue
        for kind, pattern in MASK_PATTERNS.items():
            for f in sorted((d / sub).rglob(f"{sub}_*{pattern}*")):
                if not f.name.endswith((".nii", ".nii.gz")):
                    continue
                if config.bids_filters and not F.matches(
                        config.bids_filters, "lesion_mask", _mask_entities(f)):
                    continue
                m = re.search(r"_ses-([A-Za-z0-9]+)_", f.name)
                space = re.search(r"_space-([A-Za-z0-9]+)_", f.name)
                found.append((space.group(1) if space else None,
                              LesionMask(path=f, kind=kind, session=m.group(1) if m else baseline)))
    if not found:
        where = (str(config.lesion_masks_dir) if config.lesion_masks_dir
                 else f"{_rel(root / 'derivatives', root)}/*")
        passing = " passing --bids-filter-file" if "lesion_mask" in config.bids_filters else ""
        warn(f"no lesion mask{passing} in {where} (*_label-metastasis_mask or "
             f"*_desc-metastases_dseg); maps only, no lesion table")
        return None
    # native masks (no space- entity, or space-orig) first, then the baseline's, then dseg
    found.sort(key=lambda sm: (sm[0] not in (None, "orig"), sm[1].session != baseline,
                               sm[1].kind != "dseg", str(sm[1].path)))
    found = [m for _, m in found]
    if len(found) > 1:
        warn(f"several lesion masks; using {_rel(found[0].path, root)}, ignoring "
             f"{', '.join(f.path.name for f in found[1:])}")
    return found[0]


def _mask_entities(path: Path) -> dict:
    """The BIDS entities of a lesion-mask file name (raw and derivatives entities)."""
    from bids.layout import parse_file_entities  # pybids

    return parse_file_entities(str(path), config=["bids", "derivatives"])


def _is_ours(deriv_dir: Path) -> bool:
    """A derivatives dataset written by bids_agquant (never read back as input)."""
    try:
        desc = json.loads((deriv_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    gen = desc.get("GeneratedBy") or []
    names = [str(g.get("Name", "")).lower().replace("-", "_") for g in gen if isinstance(g, dict)]
    return "bids_agquant" in names


def _covariates(root: Path, participant: str, warn) -> dict:
    try:
        df = read_participants(root)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        warn(f"participants.tsv cannot be read ({exc}); no covariates")
        return {}
    if df is None:
        warn("participants.tsv is missing: no dose or weight (dose-normalised and %ID/g values "
             "are skipped)")
        return {}
    rows = [{k: cell(r, k) for k in df.columns} for r in df.to_dict("records")]
    present = set(df.columns)
    matching = [r for r in rows if r.get("participant") == participant]
    row = matching[0] if matching else None
    if len(matching) > 1:
        warn(f"participants.tsv has {len(matching)} rows for sub-{participant}; using the first "
             f"(remove the others)")
    if row is None:
        warn(f"participants.tsv has no row for sub-{participant}; no covariates")
        return {}
    out: dict = {}
    for key in NUMERIC_COVARIATES:
        text = row.get(key)
        if key not in present:
            if key != "age":
                warn(f"participants.tsv has no {key} column")
            continue
        if text is None:
            if key != "age":
                warn(f"participants.tsv: {key} is n/a for sub-{participant}")
            out[key] = None
            continue
        try:
            value = float(text)
        except ValueError:
            warn(f"participants.tsv: {key} {text!r} of sub-{participant} is not a number; ignored")
            out[key] = None
            continue
        if not (math.isfinite(value) and (value > 0 or (key == "age" and value == 0))):
            warn(f"participants.tsv: {key} {text!r} of sub-{participant} is not a positive "
                 f"number; ignored")
            value = None
        out[key] = value
    for key in TEXT_COVARIATES:
        if key in present:
            out[key] = row.get(key)
    return out


def build_plans(config) -> list[ParticipantPlan]:
    """Index the dataset, build and validate the plan of every selected participant.

    Everything is checked before anything is computed: the first fatal problem raises.
    """
    root = Path(config.bids_dir)
    layout = open_layout(root, config.participant_labels or None,
                         validate=not config.skip_bids_validation)
    participants = select_participants(layout, config.participant_labels, root)
    if not config.skip_bids_validation:
        _warn_unindexed(layout, root, participants)
    plans = []
    for p in participants:
        plan = build_plan(layout, p, config, bids_dir=root)
        plan, _ = V.validate_plan(plan, root)
        plans.append(_with_scaling(layout, plan, root))
    return plans


def _with_scaling(layout, plan: ParticipantPlan, root: Path) -> ParticipantPlan:
    """The plan with each VFA/T1w file's intensity scaling (``bids/scaling.py``)."""
    def metadata(path):
        return dict(layout.get_file(str(path)).get_metadata() or {})

    return scaling.plan_scaling(plan, metadata, root)


def _warn_unindexed(layout, root: Path, participants: Sequence[str]) -> None:
    """Warn about image files in anat/fmap that pybids skipped as non-BIDS names."""
    indexed = {Path(f.path) for f in layout.get(extension=NIFTI)}
    for p in participants:
        for f in sorted((root / f"sub-{p}").glob("**/*.nii*")):
            if f.parent.name not in ("anat", "fmap") or f in indexed:
                continue
            if f.parent.name == "anat" and not re.search(r"_(T1w|VFA)\.nii", f.name):
                continue
            if f.parent.name == "fmap" and not any(f"_{x}.nii" in f.name for x in B1_SUFFIXES):
                continue
            LOGGER.warning("%s: not a valid BIDS file name, ignored (fix the name, or pass "
                           "--skip-bids-validation)", _rel(f, root))


# ---------------------------------------------------------------------------------------------
# printing


def format_plan(plan: ParticipantPlan, root: Path | None = None) -> str:
    """A human-readable plan (what ``--print-plan`` and ``-v`` show)."""
    root = Path(root) if root else None

    def r(p):
        return _rel(p, root) if (root and p) else str(p)

    lines = [f"sub-{plan.participant}: baseline ses-{plan.baseline_session}, reference "
             f"{r(plan.reference_t1w)}"]
    if plan.baseline_reason:
        lines.append(f"  baseline: {plan.baseline_reason}")
    if plan.session_order:
        lines.append(f"  session order: {plan.session_order}")
    for st in plan.states:
        what = "pre-contrast" if not st.is_post else f"{st.agent_label}"
        head = f"  ses-{st.session} {what}"
        if st.is_post:
            head += f" (agent {st.agent}; pre: ses-{st.pre_session})"
        lines.append(head)
        if st.evidence:
            lines.append(f"    contrast evidence: {st.evidence}")
        lines.append(f"    T1w: {r(st.t1w) + scaling.describe(plan, st.t1w) if st.t1w else '-'}")
        if st.vfa:
            v = st.vfa
            fas = ", ".join(f"{a:g}" for a in v.flip_angles_deg)
            b1 = describe_b1(v, r)
            field_t = f"{v.field_strength_t:g} T" if v.field_strength_t else "field unknown"
            lines.append(f"    VFA: {len(v.files)} flip angles ({fas} deg), "
                         f"TR {v.tr_s * 1000:g} ms, {field_t}, B1: {b1}")
            for f in v.files:
                lines.append(f"         {r(f)}{scaling.describe(plan, f)}")
        else:
            lines.append("    VFA: -")
    if plan.lesion_mask:
        m = plan.lesion_mask
        lines.append(f"  lesions: {r(m.path)} ({m.kind}, on ses-{m.session})")
    else:
        lines.append("  lesions: none")
    if plan.covariates:
        cov = ", ".join(f"{k}={'n/a' if v is None else (f'{v:g}' if isinstance(v, float) else v)}"
                        for k, v in plan.covariates.items())
        lines.append(f"  covariates: {cov}")
    for w in plan.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)
