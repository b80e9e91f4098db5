"""Settings of the digital phantom: trial protocol, anatomy, lesions, noise, presets.

Every length is in mm, every time in s, angles in degrees, concentrations in mM of Gd.
The defaults describe the NanoRad trial protocol at 3 T (see ``shared/reference/science.md``);
presets (``small``, ``sample``, ``clinical``) only change grids, sizes and cohort.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Sequence

__all__ = ["SessionSpec", "PhantomConfig", "PRESETS", "make_config", "default_sessions",
           "PHANTOM_MODEL_VERSION", "ANATOMIES", "B1_METHODS", "B1_PROTOCOLS"]

#: Bumped whenever the generated data change for the same settings and seed (the sample dataset
#: must then be regenerated). Written into dataset_description ``GeneratedBy``.
PHANTOM_MODEL_VERSION = "1"

#: Head models (``PhantomConfig.anatomy``): the analytic head (``anatomy.py``) and the
#: participant's own warp of the MNI152 brain with extracranial tissues (``mni.py``).
ANATOMIES = ("geometric", "mni")

#: fmap suffixes the phantom can write (``PhantomConfig.b1_method``): the TB1map, or the images
#: of one of the B1 mapping methods of :mod:`bids_agquant.qmri.b1methods`.
B1_METHODS = ("TB1map", "TB1AFI", "TB1DAM", "TB1TFL", "TB1RFM", "TB1EPI")

#: Protocol of each B1 mapping method (times in s, angles in degrees): AFI after Yarnykh 2007
#: (60 deg, TR 20/100 ms), a double angle with TR = 5 x the CSF T1 (full relaxation), the
#: Siemens tfl_b1map preparation angle 80 deg, the hMRI 3D EPI protocol's 11 angles and
#: mixing time.
B1_PROTOCOLS = {
    "TB1AFI": dict(flip_angle_deg=60.0, tr1_s=0.020, tr2_s=0.100, echo_time_s=0.003),
    "TB1DAM": dict(flip_angle_deg=60.0, tr_s=20.0, echo_time_s=0.01),
    "TB1TFL": dict(flip_angle_deg=80.0, readout_flip_deg=8.0, tr_s=5.0, echo_time_s=0.002),
    "TB1RFM": dict(readout_flip_deg=8.0, tr_s=5.0, echo_time_s=0.002),
    "TB1EPI": dict(flip_angles_deg=tuple(float(a) for a in range(115, 64, -5)),
                   mixing_time_s=0.0338, echo_times_s=(0.0398, 0.0736), tr_s=0.5,
                   total_readout_time_s=0.0241),
}

#: Concentration models a post-contrast state can follow (see ``lesions.draw_concentrations``).
CONC_MODELS = ("dotarem_baseline", "aguix_peak", "aguix_residual", "dotarem_followup")


@dataclass(frozen=True)
class SessionSpec:
    """One imaging session of the trial.

    ``pre``: a pre-contrast acquisition (T1w + VFA) exists in this session.
    ``agent``: the contrast agent present in the post-contrast acquisition (None: no post).
    ``conc_model``: which lesion concentration model the post state follows (``CONC_MODELS``).
    """
    label: str
    day: float
    pre: bool
    agent: str | None
    conc_model: str | None

    def states(self) -> tuple[str | None, ...]:
        """Contrast states acquired in this session, pre first (None = pre-contrast)."""
        return ((None,) if self.pre else ()) + ((self.agent,) if self.agent else ())


_ROLES = (
    dict(day=0.0, pre=True, agent="Dotarem", conc_model="dotarem_baseline"),
    dict(day=1.0, pre=False, agent="AGuIX", conc_model="aguix_peak"),
    dict(day=8.0, pre=False, agent="AGuIX", conc_model="aguix_residual"),
    dict(day=28.0, pre=True, agent="Dotarem", conc_model="dotarem_followup"),
)


def default_sessions(labels: Sequence[str] = ("D0", "D1", "D8", "D28"),
                     days: Sequence[float] | None = None,
                     followup_pre: bool = True) -> tuple[SessionSpec, ...]:
    """The trial's sessions in order (baseline+Dotarem, AGuIX 2 h, AGuIX residual, Dotarem follow-up)
    under free-text ``labels`` (1 to 4 of them, mapped to those roles in order)."""
    labels = tuple(str(s) for s in labels)
    if not 1 <= len(labels) <= len(_ROLES):
        raise ValueError(f"sessions: give 1 to {len(_ROLES)} labels in trial order "
                         f"(baseline, AGuIX 2 h, AGuIX residual, follow-up), got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"sessions: labels must be unique, got {labels!r}")
    for lab in labels:
        if not lab.isalnum():
            raise ValueError(f"session label {lab!r} must be alphanumeric (BIDS label)")
    out = []
    for i, lab in enumerate(labels):
        role = dict(_ROLES[i])
        if days is not None:
            role["day"] = float(days[i])
        if i == 3 and not followup_pre:
            role["pre"] = False
        out.append(SessionSpec(label=lab, **role))
    return tuple(out)


#: Settings added after datasets were committed: recorded in the truth only when set, so that a
#: dataset made without them records exactly what it did before.
_RECORDED_WHEN_SET = ("participant_uptake_sd", "site", "manufacturer", "manufacturers_model_name",
                      "vfa_flip_scale")


@dataclass(frozen=True)
class PhantomConfig:
    """All settings of one simulated dataset (see module docstring for units)."""
    # cohort
    n_participants: int = 2
    participant_labels: tuple[str, ...] | None = None     # default "01", "02", ...
    doses: tuple[float, ...] = (100.0, 50.0, 75.0, 30.0, 15.0)       # mg/kg AGuIX, cycled
    primary_tumors: tuple[str, ...] = ("NSCLC", "breast", "melanoma", "colon")  # cycled
    sessions: tuple[SessionSpec, ...] = field(default_factory=default_sessions)
    drop_sessions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # participant -> sessions
    field_strength_t: float = 3.0
    anatomy: str = "geometric"       # head model: "geometric" (analytic, fast) | "mni" (MNI152 brain)
    # grids
    fov_mm: tuple[float, float, float] = (180.0, 220.0, 180.0)       # x (L-R), y (P-A), z (I-S)
    t1w_voxel_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vfa_voxel_mm: tuple[float, float, float] = (2.0, 2.0, 3.0)
    b1_voxel_mm: tuple[float, float, float] | None = None            # None: the VFA grid
    b1_fov_mm: tuple[float, float, float] | None = None              # None: the VFA box; a
                                     # smaller third edge makes a slab that misses part of the head
    b1_tilt_deg: float = 0.0          # the B1 box tilted about its first axis against the VFA box
    axis_codes: str = "LAS"                                         # voxel axes of every image
    pv_step_mm: float = 1.0          # sub-voxel step of the signal-domain partial-volume average
    # protocol
    t1w_tr_s: float = 0.008
    t1w_te_s: float = 0.003
    t1w_flip_deg: float = 18.0
    vfa_flip_angles_deg: tuple[float, ...] = (2.0, 5.0, 10.0, 15.0)
    vfa_tr_s: float = 0.006
    vfa_te_s: float = 0.0025
    # noise and scaling
    snr: float | None = 40.0          # white-matter signal / noise sigma; None = noiseless (float32)
    vfa_snr: float | None = None      # None: same as snr
    signal_wm_counts: float = 400.0   # stored counts of white matter (pre T1w; brightest VFA flip)
    gain_range: tuple[float, float] = (1.0, 1.0)    # per-session receiver gain, uniform
    # motion and geometry
    motion_deg: float = 3.0           # max rotation of each session relative to baseline
    motion_mm: float = 5.0            # max translation
    oblique_deg: float = 10.0         # max rotation of acquisition grids from the world axes
    fov_offset_mm: float = 4.0        # max random offset of the FOV centre from the head centre
    # B1+
    b1_range: tuple[float, float] = (0.85, 1.15)    # over the head
    b1_session_variation: float = 0.2  # relative change of the B1 pattern between sessions
    b1_units: str = "factor"          # "factor" (1 = nominal) or "percent" (100 = nominal)
    b1_method: str = "TB1map"         # the fmap written: a TB1map, or the images of a B1 mapping
                                      # method (B1_METHODS; protocol B1_PROTOCOLS)
    # lesions
    lesion_diameters_mm: tuple[float, ...] = (7.0, 12.0, 16.0, 24.0)
    lesion_shape: str = "sphere"      # "sphere" | "ellipsoid"
    ellipsoid_max_aspect: float = 1.3
    lesion_t1_s: tuple[float, float] = (1.3, 1.8)
    dotarem_conc_mM: tuple[float, float] = (0.2, 0.5)
    aguix_conc_mM_per_100mg_kg: tuple[float, float] = (0.02, 0.1)
    aguix_residual_fraction: tuple[float, float] = (0.1, 0.2)
    # per-participant effect: every lesion of a participant takes up exp(sd * z - sd^2 / 2)
    # times the AGuIX it would otherwise (z standard normal per participant, mean factor 1);
    # 0 (the default): no participant effect, lesions of all participants drawn alike
    participant_uptake_sd: float = 0.0
    dotarem_followup_ratio: tuple[float, float] = (0.85, 1.15)
    lesion_derivative: str = "mask"   # "mask" | "dseg" | "both"
    mask_space: str | None = None     # e.g. "orig" -> ..._space-orig_label-metastasis_mask
    # site effects (a multi-site cohort merges one dataset per site: bids_agquant.simulate.sites)
    site: str | None = None           # participants.tsv ``site`` of every participant (None: none)
    manufacturer: str = "bids_agquant digital phantom"      # sidecar ``Manufacturer``
    manufacturers_model_name: str = "SPGR simulator"        # sidecar ``ManufacturersModelName``
    # actual over nominal flip angle of the VFA protocol on top of the B1+ map (slice or slab
    # profile, transmit calibration of that sequence): the sidecars state the nominal angles and
    # the B1 map does not show it, so the VFA T1 is biased by about vfa_flip_scale^2 - 1
    vfa_flip_scale: float = 1.0
    # metadata
    identifying_fields: bool = False  # plant PatientName etc. in sidecars (privacy tests)
    seed: int = 0
    noise_seed: int | None = None     # seed of the image noise alone (None: ``seed``): the same
                                      # phantom under another noise realisation
    compresslevel: int = 1           # gzip level of every .nii.gz (1 fast, 9 small)
    chunk_points: int = 2_000_000     # points evaluated at once (memory cap)

    def __post_init__(self):
        if self.n_participants < 1:
            raise ValueError("n_participants must be >= 1")
        if not self.participant_uptake_sd >= 0:
            raise ValueError(f"participant_uptake_sd must be >= 0, got "
                             f"{self.participant_uptake_sd}")
        if self.b1_units not in ("factor", "percent"):
            raise ValueError(f"b1_units must be 'factor' or 'percent', got {self.b1_units!r}")
        if self.b1_method not in B1_METHODS:
            raise ValueError(f"b1_method must be one of {', '.join(B1_METHODS)}, got "
                             f"{self.b1_method!r}")
        if self.anatomy not in ANATOMIES:
            raise ValueError(f"anatomy must be one of {', '.join(ANATOMIES)}, got {self.anatomy!r}")
        if self.lesion_shape not in ("sphere", "ellipsoid"):
            raise ValueError(f"lesion_shape must be 'sphere' or 'ellipsoid', got {self.lesion_shape!r}")
        if self.lesion_derivative not in ("mask", "dseg", "both"):
            raise ValueError("lesion_derivative must be 'mask', 'dseg' or 'both'")
        if not 0.5 <= self.vfa_flip_scale <= 1.5:
            raise ValueError(f"vfa_flip_scale must lie in 0.5-1.5, got {self.vfa_flip_scale}")
        if self.site is not None and not str(self.site).isalnum():
            raise ValueError(f"site must be alphanumeric, got {self.site!r}")
        if len(self.vfa_flip_angles_deg) < 2:
            raise ValueError("vfa_flip_angles_deg: give two or more flip angles")
        if sorted(set(self.axis_codes)) != sorted(self.axis_codes) or len(self.axis_codes) != 3:
            raise ValueError("axis_codes: three letters like 'LAS' or 'RAS'")
        if not self.sessions:
            raise ValueError("sessions: at least one session")
        if not self.sessions[0].pre:
            raise ValueError("the first session is the baseline and needs a pre-contrast acquisition")

    @property
    def labels(self) -> tuple[str, ...]:
        if self.participant_labels:
            if len(self.participant_labels) != self.n_participants:
                raise ValueError("participant_labels must have n_participants entries")
            return tuple(self.participant_labels)
        return tuple(f"{i + 1:02d}" for i in range(self.n_participants))

    @property
    def vfa_snr_value(self) -> float | None:
        return self.snr if self.vfa_snr is None else self.vfa_snr

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _RECORDED_WHEN_SET and v == f.default:
                continue
            if f.name == "sessions":
                v = [dict(label=s.label, day=s.day, pre=s.pre, agent=s.agent,
                          conc_model=s.conc_model) for s in v]
            elif f.name == "drop_sessions":
                v = {k: list(x) for k, x in dict(v).items()}
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


PRESETS: dict[str, dict] = {
    # fast, for unit and integration tests (~64^3 at 3 mm, 2 participants)
    "small": dict(t1w_voxel_mm=(3.0, 3.0, 3.0), vfa_voxel_mm=(4.0, 4.0, 5.0),
                  lesion_diameters_mm=(8.0, 14.0, 24.0), pv_step_mm=2.0, n_participants=2),
    # the committed data/sample_bids (under 10 MB), on the real-anatomy head
    "sample": dict(anatomy="mni", t1w_voxel_mm=(2.0, 2.0, 2.0), vfa_voxel_mm=(3.0, 3.0, 4.0),
                   fov_mm=(160.0, 196.0, 168.0), fov_offset_mm=2.0,
                   lesion_diameters_mm=(7.0, 12.0, 16.0, 24.0),
                   signal_wm_counts=40.0, vfa_flip_angles_deg=(3.0, 8.0, 15.0), doses=(100.0, 50.0),
                   primary_tumors=("NSCLC", "melanoma"), n_participants=2, compresslevel=6),
    # 1 mm whole head, 4 sessions, one participant (the benchmark)
    "clinical": dict(t1w_voxel_mm=(1.0, 1.0, 1.0), vfa_voxel_mm=(2.0, 2.0, 3.0),
                     fov_mm=(180.0, 220.0, 180.0), n_participants=1,
                     lesion_diameters_mm=(6.0, 9.0, 12.0, 16.0, 22.0, 30.0)),
}


def make_config(preset: str | None = None, **overrides) -> PhantomConfig:
    """A :class:`PhantomConfig` from a preset name plus keyword overrides (``snr=None``: noiseless).

    Sequence-valued overrides are converted to tuples; ``sessions`` may be labels (str) or
    :class:`SessionSpec` objects; ``session_days`` and ``followup_pre`` shape the default sessions.
    """
    if preset and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    base = dict(PRESETS[preset]) if preset else {}
    session_days = overrides.pop("session_days", None)
    followup_pre = overrides.pop("followup_pre", None)
    known = {f.name for f in fields(PhantomConfig)}
    for k, v in overrides.items():
        if k not in known:
            raise TypeError(f"unknown phantom setting {k!r} (see PhantomConfig)")
        base[k] = v
    sessions = base.get("sessions")
    if sessions is None or (sessions and isinstance(sessions[0], str)) or session_days is not None \
            or followup_pre is not None:
        labels = sessions if sessions and isinstance(sessions[0], str) else \
            ([s.label for s in sessions] if sessions else ("D0", "D1", "D8", "D28"))
        base["sessions"] = default_sessions(labels, session_days,
                                            True if followup_pre is None else followup_pre)
    for k, v in list(base.items()):
        if isinstance(v, list):
            base[k] = tuple(v)
    if "drop_sessions" in base:
        base["drop_sessions"] = {str(k): tuple(v) for k, v in dict(base["drop_sessions"]).items()}
    return replace(PhantomConfig(), **base)
