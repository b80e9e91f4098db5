"""The typed plan of what to compute for one participant (built by ``layout.py`` from pybids).

These dataclasses are the contract between the input query (``bids/layout.py``), the workflow
builders (``workflows/``), the derivatives writer and the reports. They hold paths and metadata
only; no image data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bids_agquant.qmri.b1methods import METHODS


@dataclass(frozen=True)
class IntensityScaling:
    """How the values nibabel reads from a file become the values computed with.

    precise = value (``scl_slope``/``scl_inter`` applied) x ``factor``; decided per file by
    :func:`bids_agquant.bids.scaling.plan_scaling` (Philips display values, docs/conversion.md).
    """
    factor: float = 1.0
    how: str = "as stored"


@dataclass(frozen=True)
class VFASet:
    """One variable-flip-angle acquisition set (2+ flip angles, one TR)."""
    files: tuple[Path, ...]            # sorted by flip angle, ascending
    flip_angles_deg: tuple[float, ...]
    tr_s: float
    b1map: Path | None = None          # TB1map applying to this set (None: no B1 correction)
    field_strength_t: float | None = None
    b1_scale: float = 1.0              # multiply the stored TB1map by this to get the B1+ factor
                                       # (0.01 when the map is stored in percent). The map may be on
                                       # another grid than the VFA set: resample it in world space.
    b1_units: str | None = None        # the TB1map sidecar's "Units" (None: not given)
    b1_coverage: float = 1.0           # fraction of the VFA field of view inside the TB1map's
                                       # (set by validation; head voxels outside are filled)
    b1_method: str = "TB1map"          # fmap suffix of the B1 data: TB1map (read as is) or a
                                       # method computed into a factor map (qmri/b1methods.py)
    b1_files: tuple[Path, ...] = ()    # a computed method's images (empty for a TB1map)
    b1_roles: tuple[str, ...] = ()     # the role of each of b1_files (b1methods.METHODS roles)
    b1_params: tuple[tuple[str, object], ...] = ()   # its protocol values from the sidecars
                                       # (e.g. ("tr1_s", 0.02)); see validate.b1_method_params

    @property
    def b1_sources(self) -> tuple[Path, ...]:
        """Every file the B1+ factor comes from (the TB1map, or the method's images)."""
        if self.b1_files:
            return tuple(self.b1_files)
        return (self.b1map,) if self.b1map is not None else ()

    @property
    def b1_reference(self) -> Path | None:
        """The B1 file whose grid the factor map is on (None: no B1 data)."""
        sources = self.b1_sources
        return sources[0] if sources else None

    @property
    def b1_computed(self) -> bool:
        """The factor map is computed from a method's images (not a TB1map read as is)."""
        return bool(self.b1_files)


@dataclass(frozen=True)
class ContrastState:
    """One (session, contrast agent) acquisition state: pre-contrast when ``agent`` is None."""
    session: str
    agent: str | None                  # canonical agent name (registry), None = pre-contrast
    agent_label: str | None            # the ce- entity value as written in the file names
    t1w: Path | None                   # 3D T1w of this state
    vfa: VFASet | None                 # VFA set of this state
    pre_session: str | None = None     # for post-contrast states: session of the pre state used
    evidence: str = ""                 # what says this state's agent (ce-, sidecar, sessions.tsv,
                                       # --session-agent) or that it is pre-contrast

    @property
    def key(self) -> str:
        return f"{self.session}_{'pre' if self.agent is None else self.agent_label}"

    @property
    def is_post(self) -> bool:
        return self.agent is not None


@dataclass(frozen=True)
class LesionMask:
    path: Path
    kind: str                          # "mask" (binary, connected components) or "dseg" (labels)
    session: str                       # session whose pre-contrast T1w the mask was drawn on
    drawn_on: Path | None = None       # the T1w whose grid the mask shares (set by validation;
                                       # None: the pre-contrast T1w of ``session``)


@dataclass(frozen=True)
class ParticipantPlan:
    participant: str                   # label without "sub-"
    baseline_session: str
    reference_t1w: Path                # baseline pre-contrast T1w: the reference space
    states: tuple[ContrastState, ...]  # every state, pre states first within a session
    lesion_mask: LesionMask | None
    covariates: dict = field(default_factory=dict)   # from participants.tsv (floats / strings)
    warnings: tuple[str, ...] = ()
    baseline_reason: str = ""          # why this baseline (option, only candidate, earliest by ...)
    session_order: str = ""            # what ordered the sessions (acq_time source, or labels)
    sessions_in_time: tuple[str, ...] = ()   # the selected sessions, earliest first

    def session_rank(self, session: str) -> int | None:
        """1 for the earliest selected session (None: not among them)."""
        return (self.sessions_in_time.index(session) + 1 if session in self.sessions_in_time
                else None)
    intensity: dict = field(default_factory=dict)    # Path -> IntensityScaling (VFA and T1w)

    def intensity_factor(self, path) -> float:
        """The factor turning the values read from ``path`` into precise values (1: as stored)."""
        scaling = self.intensity.get(Path(path))
        return 1.0 if scaling is None else float(scaling.factor)

    @property
    def sessions(self) -> tuple[str, ...]:
        """Session labels in processing order (baseline first, then chronological)."""
        return tuple(dict.fromkeys(s.session for s in self.states))

    @property
    def post_states(self) -> tuple[ContrastState, ...]:
        return tuple(s for s in self.states if s.is_post)

    def state(self, session: str, agent: str | None) -> ContrastState | None:
        for s in self.states:
            if s.session == session and s.agent == agent:
                return s
        return None

    def pre_state_for(self, post: ContrastState) -> ContrastState | None:
        """Pre-contrast reference: same session when it has one, else the baseline."""
        return self.state(post.pre_session or self.baseline_session, None)


def describe_b1_params(params: dict) -> str:
    """The protocol values of a B1 method as the plan shows them (ms, degrees)."""
    parts = []
    if "tr1_s" in params:
        parts.append(f"TR {1000 * params['tr1_s']:g}/{1000 * params['tr2_s']:g} ms")
    if "flip_angle_deg" in params:
        parts.append(f"flip angle {params['flip_angle_deg']:g} deg")
    if "flip_angles_deg" in params:
        parts.append(f"flip angles {', '.join(f'{a:g}' for a in params['flip_angles_deg'])} deg")
    if "mixing_time_s" in params:
        parts.append(f"mixing time {1000 * params['mixing_time_s']:g} ms")
    return ", ".join(parts) or "no protocol values needed"


def describe_b1(v: VFASet, show=str) -> str:
    """The B1 data of a VFA set as the plan and the report show it (``show`` formats paths)."""
    if not v.b1_sources:
        return "none"
    if v.b1_computed:
        files = v.b1_files
        text = (f"{v.b1_method} ({METHODS[v.b1_method].title}; "
                f"{describe_b1_params(dict(v.b1_params))}) from "
                f"{', '.join(show(f) for f in files[:2])}"
                + (f" (+{len(files) - 2} more)" if len(files) > 2 else ""))
    else:
        text = show(v.b1map)
        if v.b1_scale != 1.0:
            text += f" (x{v.b1_scale:g})"
    if v.b1_coverage < 1.0:
        text += (f", covering {100 * v.b1_coverage:.0f} % of the VFA field of view (head "
                 f"voxels outside filled by extrapolation)")
    return text
