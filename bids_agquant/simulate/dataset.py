"""``simulate_dataset``: a raw BIDS dataset of the trial protocol plus its ground truth.

For each participant: a random head (anatomy, texture), lesions of the requested diameters with
per-state Gd concentrations, and for each session a rigid head pose (baseline = identity), an
oblique acquisition grid, a B1+ field, a receiver gain; then T1w, VFA and TB1map images with Rician
noise, sidecars, tables, a lesion-mask derivatives dataset drawn on the baseline pre-contrast T1w,
and the truth (maps on that grid, lesion and motion tables). Deterministic for a seed.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..qmri import b1methods as B1M
from ..qmri.relaxivity import get_relaxivity
from ..qmri.spgr import spgr_signal
from . import bidsio
from . import truth as _truth
from .acquire import (StateSpec, add_rician_noise, average_on_grid, evaluate_on_grid, render,
                      resample_to_grid, sample_properties, subsampling)
from .anatomy import TISSUES, HeadModel
from .config import B1_PROTOCOLS, PHANTOM_MODEL_VERSION, PhantomConfig, SessionSpec, make_config
from .fields import B1Field
from .geometry import Grid, euler_xyz_deg, random_rotation, rigid, rotation_angle_deg
from .lesions import Lesion, axial_diameter_mm, place_lesions
from .mni import MNIHead, draw_enhancement
from .truth import (LESION_COLUMNS, MOTION_COLUMNS, Truth, load_truth, map_filename,
                    truth_storage)

__all__ = ["simulate_dataset", "GENERATOR_NAME"]

GENERATOR_NAME = "bids_agquant-phantom"
MEASURABLE_DIAMETER_MM = 10.0

# random streams (spawn keys) per participant
_ANATOMY, _LESIONS, _CONC, _DEMOGRAPHICS, _MOTION, _B1, _NOISE, _UPTAKE, _PARTICIPANT = range(9)

_IDENTIFYING = {
    "PatientName": "DOE^JANE", "PatientID": "NANORAD-{sub}", "PatientBirthDate": "19580312",
    "PatientSex": "F", "PatientWeight": 63.0, "AcquisitionDateTime": "{date}T09:12:31.000000",
    "InstitutionName": "Hopital Fictif", "InstitutionAddress": "1 Rue Imaginaire, 38000 Grenoble, FR",
    "StationName": "MRC35012", "DeviceSerialNumber": "35012", "ReferringPhysicianName": "DR^WHO",
    "OperatorsName": "TECH^ONE", "AccessionNumber": "A{sub}7731",
}


def _rng(cfg: PhantomConfig, *key: int, seed: int | None = None) -> np.random.Generator:
    seed = cfg.seed if seed is None else seed
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def _noise_rng(cfg: PhantomConfig, pi: int, *key: int) -> np.random.Generator:
    """The image noise stream of participant ``pi``: seeded by ``noise_seed`` when set."""
    return _rng(cfg, pi, _NOISE, *key, seed=cfg.noise_seed)


@dataclass
class _Acq:
    """One session of one participant (pose, grids, fields)."""
    spec: SessionSpec
    index: int
    pose: np.ndarray
    rotation_deg: float
    translation_mm: np.ndarray
    gain: float
    t1w_grid: Grid
    vfa_grid: Grid
    b1_grid: Grid
    b1: B1Field
    files: dict = field(default_factory=dict)
    vfa_conc: dict = field(default_factory=dict)

    def key(self, agent: str | None) -> str:
        return f"{self.spec.label}_{agent or 'pre'}"


def _check_out(path: Path, marker: str, overwrite: bool) -> bool:
    """True when ``path`` holds an earlier phantom output to replace; raise if it holds other data."""
    if not (path.exists() and any(path.iterdir())):
        return False
    if not overwrite:
        raise FileExistsError(f"{path} is not empty: choose an empty directory or pass "
                              f"overwrite=True (--overwrite)")
    if not (path / marker).is_file():
        raise FileExistsError(f"{path} is not empty and was not written by the phantom "
                              f"(no {marker}): refusing to overwrite it")
    return True


def simulate_dataset(out_dir, *, truth_dir=None, preset: str | None = None,
                     config: PhantomConfig | None = None, overwrite: bool = False,
                     command: str | None = None, **settings) -> Truth:
    """Write a simulated BIDS dataset to ``out_dir`` and its truth to ``truth_dir``.

    ``truth_dir`` defaults to ``<out_dir>_truth`` beside the dataset (never inside it).
    ``preset``: "small" (tests), "sample" (data/sample_bids), "clinical" (1 mm, benchmark).
    ``settings``: any :class:`~bids_agquant.simulate.config.PhantomConfig` field, e.g.
    ``n_participants``, ``doses``, ``primary_tumors``, ``sessions`` (labels), ``session_days``,
    ``t1w_voxel_mm``, ``vfa_voxel_mm``, ``fov_mm``, ``snr`` (None = noiseless), ``motion_deg``,
    ``motion_mm``, ``b1_range``, ``lesion_diameters_mm``, ``seed``. ``command``: the command
    line that made the dataset, recorded at the top of the truth README. Returns the loaded truth.
    """
    cfg = config if config is not None else make_config(preset, **settings)
    out = Path(out_dir).absolute()
    truth_root = Path(truth_dir).absolute() if truth_dir else out.parent / f"{out.name}_truth"
    if truth_root == out or out in truth_root.parents:
        raise ValueError(f"truth directory {truth_root} must not be inside the BIDS dataset {out}")
    replace_out = _check_out(out, "dataset_description.json", overwrite)
    replace_truth = _check_out(truth_root, "truth.json", overwrite)
    for path, replace in ((out, replace_out), (truth_root, replace_truth)):
        if replace:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)

    if command is None:
        command = (f"simulate_dataset({str(out_dir)!r}, truth_dir={str(truth_root)!r}, "
                   f"preset={preset!r}, " + ", ".join(f"{k}={v!r}" for k, v in sorted(settings.items()))
                   + ")") if config is None else "simulate_dataset(..., config=PhantomConfig(...))"
    meta = {"phantom_model_version": PHANTOM_MODEL_VERSION, "generator": GENERATOR_NAME,
            "command": command,
            "bids_dir": _relpath(out, truth_root), "config": cfg.to_dict(),
            "protocol": _protocol(cfg), "participants": {}}
    lesion_rows, motion_rows, part_rows = [], [], []
    for pi, sub in enumerate(cfg.labels):
        pmeta, lrows, mrows, prow = _simulate_participant(cfg, pi, sub, out, truth_root)
        meta["participants"][sub] = pmeta
        lesion_rows += lrows
        motion_rows += mrows
        part_rows.append(prow)
    _write_dataset_files(cfg, out, part_rows)
    bidsio.write_json(truth_root / "truth.json", meta)
    bidsio.write_tsv(truth_root / "lesions.tsv", lesion_rows, LESION_COLUMNS)
    bidsio.write_tsv(truth_root / "motion.tsv", motion_rows, MOTION_COLUMNS)
    (truth_root / "README.md").write_text(_truth_readme(cfg, command))
    return load_truth(truth_root)


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def _protocol(cfg: PhantomConfig) -> dict:
    return {
        "field_strength_t": cfg.field_strength_t,
        "t1w": {"tr_s": cfg.t1w_tr_s, "te_s": cfg.t1w_te_s, "flip_angle_deg": cfg.t1w_flip_deg,
                "voxel_mm": list(cfg.t1w_voxel_mm), "fov_mm": list(cfg.fov_mm)},
        "vfa": {"tr_s": cfg.vfa_tr_s, "te_s": cfg.vfa_te_s,
                "flip_angles_deg": list(cfg.vfa_flip_angles_deg), "voxel_mm": list(cfg.vfa_voxel_mm)},
        "b1": {"range": list(cfg.b1_range), "units": cfg.b1_units, "method": cfg.b1_method,
               "voxel_mm": list(cfg.b1_voxel_mm or cfg.vfa_voxel_mm)},
        "snr": cfg.snr, "vfa_snr": cfg.vfa_snr_value, "signal_wm_counts": cfg.signal_wm_counts,
        "relaxivity_r1_per_mM_s": {a: get_relaxivity(a, cfg.field_strength_t).r1_per_mM_s
                                   for a in sorted({s.agent for s in cfg.sessions if s.agent})},
        "tissues": {k: {"t1_s": v[0], "m0": v[1]} for k, v in TISSUES.items()},
        "notes": ("Signals: bids_agquant.qmri.spgr.spgr_signal with the session B1+ factor; "
                  "R1 = 1/T1_pre + r1*[Gd]; partial volume averaged in the signal domain over "
                  "sub-voxel points; Rician noise sigma = signal_wm_counts / snr; gain multiplies "
                  "stored counts. SE truth uses the lesion's uniform values and the B1 at its centre."),
    }


def participant_uptake_factor(cfg: PhantomConfig, pi: int) -> float:
    """Participant ``pi``'s factor on every lesion's AGuIX uptake (``participant_uptake_sd``;
    exactly 1 when it is 0), from its own random stream (the other draws do not change)."""
    sd = float(cfg.participant_uptake_sd)
    z = float(_rng(cfg, pi, _PARTICIPANT).standard_normal())
    return float(np.exp(sd * z - 0.5 * sd * sd))


def _draw_concentrations(cfg: PhantomConfig, rng: np.random.Generator, lesions: list[Lesion],
                         sessions: tuple[SessionSpec, ...], dose: float,
                         uptake_factor: float = 1.0) -> None:
    """Per lesion and post-contrast state: uniform Gd concentration (mM). Leakier lesions take up
    more of both agents; AGuIX scales with the dose (range given at 100 mg/kg) and with the
    participant's ``uptake_factor``."""
    for les in lesions:
        k = les.leakiness
        u = rng.uniform(0, 1, 4)
        k_dot = 0.8 * k + 0.2 * u[0]
        k_agu = float(np.clip(k + 0.15 * (u[1] - 0.5), 0, 1))
        dot0 = cfg.dotarem_conc_mM[0] + (cfg.dotarem_conc_mM[1] - cfg.dotarem_conc_mM[0]) * k_dot
        a_lo, a_hi = cfg.aguix_conc_mM_per_100mg_kg
        peak = (a_lo + (a_hi - a_lo) * k_agu) * dose / 100.0 * uptake_factor
        resid = peak * (cfg.aguix_residual_fraction[0]
                        + (cfg.aguix_residual_fraction[1] - cfg.aguix_residual_fraction[0]) * u[2])
        follow = dot0 * (cfg.dotarem_followup_ratio[0]
                         + (cfg.dotarem_followup_ratio[1] - cfg.dotarem_followup_ratio[0]) * u[3])
        values = {"dotarem_baseline": dot0, "aguix_peak": peak, "aguix_residual": resid,
                  "dotarem_followup": follow}
        for s in sessions:
            if s.agent:
                les.conc_mM[f"{s.label}_{s.agent}"] = float(values[s.conc_model])


def _session_geometry(cfg, pi, head: HeadModel, sessions, b1_points) -> list[_Acq]:
    rng = _rng(cfg, pi, _MOTION)
    rng_b1 = _rng(cfg, pi, _B1)
    base_b1 = B1Field.random(rng_b1, b1_points, cfg.b1_range)
    acqs = []
    for si, spec in enumerate(cfg.sessions):
        # draw everything for every configured session so dropping one changes nothing else
        rot = random_rotation(rng, cfg.motion_deg)
        direction = rng.standard_normal(3)
        trans = direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.0) * cfg.motion_mm
        oblique = random_rotation(rng, cfg.oblique_deg, min_frac=0.0)
        offset = rng.uniform(-1, 1, 3) * cfg.fov_offset_mm
        gain = float(rng.uniform(*cfg.gain_range))
        b1 = B1Field.random(rng_b1, b1_points, cfg.b1_range, base=base_b1,
                            variation=cfg.b1_session_variation)
        if si == 0:
            rot, trans = np.eye(3), np.zeros(3)
        if spec not in sessions:
            continue
        pose = rigid(rot, trans, head.centre)
        centre_world = pose[:3, :3] @ head.centre + pose[:3, 3] + offset
        t1w = Grid.oblique(cfg.fov_mm, cfg.t1w_voxel_mm, oblique, centre_world, cfg.axis_codes)
        vfa = Grid.oblique(cfg.fov_mm, cfg.vfa_voxel_mm, oblique, centre_world, cfg.axis_codes)
        b1g = _b1_grid(cfg, vfa, oblique, centre_world)
        acqs.append(_Acq(spec, si, pose, rotation_angle_deg(pose), trans, gain, t1w, vfa, b1g, b1))
    return acqs


def _b1_grid(cfg: PhantomConfig, vfa: Grid, oblique, centre_world) -> Grid:
    """The TB1map grid: the VFA grid, or its own voxels / box (``b1_fov_mm``, a slab) / tilt."""
    if cfg.b1_voxel_mm is None and cfg.b1_fov_mm is None and not cfg.b1_tilt_deg:
        return vfa
    t = np.deg2rad(cfg.b1_tilt_deg)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    return Grid.oblique(cfg.b1_fov_mm or cfg.fov_mm, cfg.b1_voxel_mm or cfg.vfa_voxel_mm,
                        oblique @ tilt, centre_world, cfg.axis_codes)


def _sidecar_common(cfg: PhantomConfig, sub: str, date: str) -> dict:
    sc = {
        "Modality": "MR",
        "MagneticFieldStrength": cfg.field_strength_t,
        "ImagingFrequency": round(42.577478 * cfg.field_strength_t, 4),
        "Manufacturer": cfg.manufacturer,
        "ManufacturersModelName": cfg.manufacturers_model_name,
        "SoftwareVersions": f"phantom model {PHANTOM_MODEL_VERSION}",
        "MRAcquisitionType": "3D",
        "ScanningSequence": "GR",
        "SequenceVariant": "SP",
        "SequenceName": "fl3d",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        "PulseSequenceType": "SPGR",
        "SpoilingState": True,
        "ConversionSoftware": GENERATOR_NAME,
        "ConversionSoftwareVersion": PHANTOM_MODEL_VERSION,
    }
    if cfg.identifying_fields:
        sc.update({k: (v.format(sub=sub, date=date) if isinstance(v, str) else v)
                   for k, v in _IDENTIFYING.items()})
    return sc


def _contrast_fields(agent: str | None) -> dict:
    if not agent:
        return {}
    return {"ContrastBolusIngredient": "GADOLINIUM", "ContrastBolusAgent": agent}


def _store(cfg: PhantomConfig, counts: np.ndarray, noisy: bool):
    """Storage of an image in counts: int16 when noisy (as a scanner), float32 when noiseless."""
    if noisy:
        return dict(dtype=np.int16)
    return dict(dtype=np.float32)


def _session_date(pi: int, spec: SessionSpec) -> _dt.datetime:
    """Date-shifted acquisition time: 09:00 on the session's day; the AGuIX peak scan 2 h after
    an injection at 09:00."""
    when = _dt.datetime(2021, 3, 1, 9, 0, 0) + _dt.timedelta(days=7 * pi + float(spec.day))
    return when + _dt.timedelta(hours=2) if spec.conc_model == "aguix_peak" else when


@dataclass(frozen=True)
class _SignalLevels:
    """Counts per unit of simulated signal (white matter at ``signal_wm_counts``) and the Rician
    noise sigma (0 = noiseless) of the T1w and VFA images."""
    k_t1w: float
    k_vfa: float
    sigma_t1w: float
    sigma_vfa: float

    @classmethod
    def of(cls, cfg: PhantomConfig) -> "_SignalLevels":
        wm_t1, wm_m0 = TISSUES["wm"]
        wm_t1w = float(spgr_signal(wm_m0, wm_t1, [cfg.t1w_flip_deg], cfg.t1w_tr_s)[0])
        wm_vfa = float(spgr_signal(wm_m0, wm_t1, cfg.vfa_flip_angles_deg, cfg.vfa_tr_s).max())
        return cls(k_t1w=cfg.signal_wm_counts / wm_t1w, k_vfa=cfg.signal_wm_counts / wm_vfa,
                   sigma_t1w=cfg.signal_wm_counts / cfg.snr if cfg.snr else 0.0,
                   sigma_vfa=cfg.signal_wm_counts / cfg.vfa_snr_value if cfg.vfa_snr_value else 0.0)


def _simulate_participant(cfg: PhantomConfig, pi: int, sub: str, out: Path, truth_root: Path):
    """Draw participant ``pi`` (head, lesions, uptake, demographics, session poses), write its
    images, sidecars and sessions table, then its truth maps and lesion masks. Returns its truth
    metadata, lesion rows, motion rows and participants.tsv row."""
    dose = float(cfg.doses[pi % len(cfg.doses)])
    head = _make_head(cfg, pi, dose)
    ref_voxel = float(min(cfg.t1w_voxel_mm))
    lesions = place_lesions(_rng(cfg, pi, _LESIONS), head, cfg.lesion_diameters_mm,
                            shape=cfg.lesion_shape, max_aspect=cfg.ellipsoid_max_aspect,
                            t1_range=cfg.lesion_t1_s, min_gap_mm=max(6.0, 3 * ref_voxel))
    tumor = str(cfg.primary_tumors[pi % len(cfg.primary_tumors)])
    uptake_factor = participant_uptake_factor(cfg, pi)
    _draw_concentrations(cfg, _rng(cfg, pi, _CONC), lesions, cfg.sessions, dose, uptake_factor)
    prow = _draw_demographics(cfg, pi, sub, dose, tumor)
    sessions = _kept_sessions(cfg, sub)
    acqs = _session_geometry(cfg, pi, head, sessions, _b1_lattice(head))
    relax = {a: get_relaxivity(a, cfg.field_strength_t) for a in {s.agent for s in sessions if s.agent}}
    levels = _SignalLevels.of(cfg)

    series = 0
    sessions_rows, motion_rows, pmeta_sessions = [], [], {}
    for acq in acqs:
        series = _acquire_session(cfg, pi, sub, out, head, lesions, acq, relax, levels, series)
        sessions_rows.append(_sessions_row(cfg, pi, acq.spec))
        motion_rows.append(_motion_row(sub, acq))
        pmeta_sessions[acq.spec.label] = _session_meta(head, acq)
    bidsio.write_tsv(out / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", sessions_rows,
                     ["session_id", "acq_time", "days_from_baseline", "contrast_agent"])

    lesion_rows, ref_meta = _write_truth_and_masks(cfg, sub, head, lesions, acqs, relax, out,
                                                   truth_root, dose, tumor)
    pmeta = {"covariates": {k: v for k, v in prow.items() if k != "participant_id"},
             "head_centre_mm": head.centre.tolist(), "head_radii_mm": head.radii.tolist(),
             "baseline_session": acqs[0].spec.label, "reference": ref_meta,
             "sessions": pmeta_sessions}
    if cfg.participant_uptake_sd:           # absent by default: the truth stays as it was
        pmeta["aguix_uptake_factor"] = uptake_factor
    if isinstance(head, MNIHead):
        pmeta["anatomy"] = head.describe()
    return pmeta, lesion_rows, motion_rows, prow


def _make_head(cfg: PhantomConfig, pi: int, dose: float):
    """The participant's head model: the analytic head, or its own warp of the MNI152 brain
    whose extracranial tissues take up each post-contrast state's agent."""
    if cfg.anatomy == "geometric":
        return HeadModel.random(_rng(cfg, pi, _ANATOMY))
    states = [(f"{s.label}_{s.agent}", s.conc_model) for s in cfg.sessions if s.agent]
    uptake = draw_enhancement(_rng(cfg, pi, _UPTAKE), states, dose,
                              cfg.aguix_conc_mM_per_100mg_kg, cfg.dotarem_followup_ratio)
    return MNIHead.random(_rng(cfg, pi, _ANATOMY), enhancement=uptake)


def _draw_demographics(cfg: PhantomConfig, pi: int, sub: str, dose: float, tumor: str) -> dict:
    """The participant's participants.tsv row: random age, sex and weight, the given dose and tumour."""
    rng_demo = _rng(cfg, pi, _DEMOGRAPHICS)
    return {"participant_id": f"sub-{sub}", "age": int(rng_demo.integers(38, 78)),
            "sex": str(rng_demo.choice(["F", "M"])), "weight_kg": round(float(rng_demo.uniform(50, 95)), 1),
            "dose_mg_per_kg": dose, "primary_tumor": tumor,
            **({"site": cfg.site} if cfg.site is not None else {})}


def _kept_sessions(cfg: PhantomConfig, sub: str) -> tuple[SessionSpec, ...]:
    """The configured sessions minus those ``drop_sessions`` drops for ``sub`` (never the baseline)."""
    dropped = set(cfg.drop_sessions.get(sub, ()))
    if cfg.sessions[0].label in dropped:
        raise ValueError(f"drop_sessions: cannot drop the baseline session {cfg.sessions[0].label} "
                         f"of participant {sub}")
    return tuple(s for s in cfg.sessions if s.label not in dropped)


def _b1_lattice(head: HeadModel) -> np.ndarray:
    """World points (3, n) over which B1 is scaled to span b1_range: a 4 mm lattice filling the
    scalp ellipsoid grown by the largest surface bumps."""
    outer = head.radii + 3 * head.shape_amp_mm
    lat = np.stack(np.meshgrid(*[np.arange(-1, 1.0001, 4.0 / r) for r in outer], indexing="ij"), -1)
    lat = lat.reshape(-1, 3)
    return (lat[(lat ** 2).sum(1) <= 1.0] * outer + head.centre).T


def _acquire_session(cfg, pi, sub, out, head, lesions, acq: _Acq, relax, levels: _SignalLevels,
                     series: int) -> int:
    """Write one session's T1w, VFA and TB1map images and sidecars (recorded in ``acq.files``);
    returns the last series number used."""
    common = _sidecar_common(cfg, sub, _session_date(pi, acq.spec).strftime("%Y%m%d"))
    states = [StateSpec(acq.key(a), relax[a].r1_per_mM_s if a else 0.0) for a in acq.spec.states()]
    series = _write_t1w(cfg, pi, sub, out, head, lesions, acq, states, common, levels, series)
    series, vfa_files = _write_vfa(cfg, pi, sub, out, head, lesions, acq, states, common, levels,
                                   series)
    if cfg.b1_method != "TB1map":
        return _write_b1_method(cfg, pi, sub, out, head, lesions, acq, common, vfa_files,
                                series)
    return _write_b1map(cfg, sub, out, acq, common, vfa_files, bool(levels.sigma_vfa), series)


def _write_t1w(cfg, pi, sub, out, head, lesions, acq: _Acq, states, common, levels: _SignalLevels,
               series: int) -> int:
    """One T1w image per contrast state of the session, with noise and gain; returns the last
    series number used."""
    spec = acq.spec
    sig, _ = render(head, lesions, acq.pose, acq.b1, acq.t1w_grid, states, [cfg.t1w_flip_deg],
                    cfg.t1w_tr_s, pv_step_mm=cfg.pv_step_mm, chunk_points=cfg.chunk_points)
    for st_i, (agent, st) in enumerate(zip(spec.states(), states)):
        series += 1
        counts = sig.pop(st.key)[..., 0].astype(np.float64) * levels.k_t1w
        if levels.sigma_t1w:
            counts = add_rician_noise(counts, levels.sigma_t1w,
                                      _noise_rng(cfg, pi, acq.index, st_i, 99))
        counts *= acq.gain
        rel = bidsio.t1w_name(sub, spec.label, agent)
        bidsio.write_nifti(out / rel, counts, acq.t1w_grid.affine, compresslevel=cfg.compresslevel,
                           **_store(cfg, counts, bool(levels.sigma_t1w)))
        sc = dict(common, SeriesDescription=f"t1_fl3d{'_' + agent if agent else ''}",
                  ProtocolName="t1_fl3d_iso", SeriesNumber=series,
                  SliceThickness=round(float(cfg.t1w_voxel_mm[2]), 6), EchoTime=cfg.t1w_te_s,
                  RepetitionTime=cfg.t1w_tr_s, RepetitionTimeExcitation=cfg.t1w_tr_s,
                  FlipAngle=cfg.t1w_flip_deg, **_contrast_fields(agent))
        bidsio.write_json(out / bidsio.sidecar_path(rel), sc)
        acq.files[f"t1w:{st.key}"] = rel
    return series


def _write_vfa(cfg, pi, sub, out, head, lesions, acq: _Acq, states, common,
               levels: _SignalLevels, series: int) -> tuple[int, list[str]]:
    """One VFA image per contrast state and flip angle, with noise and gain; keeps the true
    concentration on the VFA grid in ``acq.vfa_conc``. Returns the last series number used and
    the images written."""
    spec = acq.spec
    sig, conc = render(head, lesions, acq.pose, acq.b1, acq.vfa_grid, states,
                       [fa * cfg.vfa_flip_scale for fa in cfg.vfa_flip_angles_deg], cfg.vfa_tr_s,
                       pv_step_mm=cfg.pv_step_mm,
                       chunk_points=cfg.chunk_points, with_conc=True)
    acq.vfa_conc = conc
    vfa_files = []
    for st_i, (agent, st) in enumerate(zip(spec.states(), states)):
        stack = sig.pop(st.key)
        for fi, fa in enumerate(cfg.vfa_flip_angles_deg):
            series += 1
            counts = stack[..., fi].astype(np.float64) * levels.k_vfa
            if levels.sigma_vfa:
                counts = add_rician_noise(counts, levels.sigma_vfa,
                                          _noise_rng(cfg, pi, acq.index, st_i, fi))
            counts *= acq.gain
            rel = bidsio.vfa_name(sub, spec.label, agent, fi + 1)
            bidsio.write_nifti(out / rel, counts, acq.vfa_grid.affine,
                               compresslevel=cfg.compresslevel,
                               **_store(cfg, counts, bool(levels.sigma_vfa)))
            sc = dict(common, SeriesDescription=f"vfa_fa{fa:g}{'_' + agent if agent else ''}",
                      ProtocolName="vfa_fl3d", SeriesNumber=series,
                      SliceThickness=round(float(cfg.vfa_voxel_mm[2]), 6), EchoTime=cfg.vfa_te_s,
                      RepetitionTime=cfg.vfa_tr_s, RepetitionTimeExcitation=cfg.vfa_tr_s,
                      FlipAngle=float(fa), **_contrast_fields(agent))
            bidsio.write_json(out / bidsio.sidecar_path(rel), sc)
            acq.files[f"vfa:{st.key}:{fi + 1}"] = rel
            vfa_files.append(rel)
    return series, vfa_files


def _write_b1map(cfg, sub, out, acq: _Acq, common, vfa_files, noisy: bool, series: int) -> int:
    """The session's TB1map (factor or percent; int16 when the VFA is noisy), intended for its VFA
    images; returns its series number."""
    series += 1
    b1_vals = evaluate_on_grid(acq.b1, acq.pose, acq.b1_grid, cfg.chunk_points)
    percent = cfg.b1_units == "percent"
    rel = bidsio.b1_name(sub, acq.spec.label)
    b1_store = (dict(dtype=np.int16, slope=0.1 if percent else 0.001) if noisy
                else dict(dtype=np.float32))
    bidsio.write_nifti(out / rel, b1_vals * (100.0 if percent else 1.0), acq.b1_grid.affine,
                       compresslevel=cfg.compresslevel, **b1_store)
    sc = {k: common[k] for k in ("Modality", "MagneticFieldStrength", "ImagingFrequency",
                                 "Manufacturer", "ManufacturersModelName", "SoftwareVersions",
                                 "ConversionSoftware", "ConversionSoftwareVersion")}
    sc.update({k: common[k] for k in _IDENTIFYING if k in common})
    sc.update(SeriesDescription="b1map", SeriesNumber=series, MRAcquisitionType="3D",
              SliceThickness=round(float(acq.b1_grid.voxel_mm[2]), 6),
              IntendedFor=[f"bids::{f}" for f in vfa_files])
    bidsio.write_json(out / bidsio.sidecar_path(rel), sc)
    acq.files["b1"] = rel
    return series


#: Noise stream key of the B1 method images (the VFA and T1w images use their state index).
_B1_NOISE_KEY = 77
#: Stored counts of a B1 method's images per unit proton density (CSF = 1).
B1_METHOD_COUNTS = 1000.0


def _b1_method_images(method: str, m0, t1, b1) -> list[tuple[str, np.ndarray, dict]]:
    """(entities, image, sidecar fields) of each image of ``method`` (protocol
    :data:`~bids_agquant.simulate.config.B1_PROTOCOLS`) from proton density, pre-contrast T1
    and the true B1+ factor on the B1 grid (signal models of :mod:`bids_agquant.qmri.b1methods`)."""
    pr = B1_PROTOCOLS[method]
    k = B1_METHOD_COUNTS
    if method == "TB1AFI":
        s1, s2 = B1M.afi_signals(m0, t1, pr["flip_angle_deg"], pr["tr1_s"], pr["tr2_s"], b1)
        fa = dict(FlipAngle=pr["flip_angle_deg"], EchoTime=pr["echo_time_s"])
        return [("acq-tr1", k * s1, dict(fa, RepetitionTime=pr["tr1_s"])),
                ("acq-tr2", k * s2, dict(fa, RepetitionTime=pr["tr2_s"]))]
    if method == "TB1DAM":
        sa, s2a = B1M.dam_signals(m0, t1, pr["flip_angle_deg"], pr["tr_s"], b1)
        base = dict(RepetitionTime=pr["tr_s"], EchoTime=pr["echo_time_s"])
        return [("flip-1", k * sa, dict(base, FlipAngle=pr["flip_angle_deg"])),
                ("flip-2", k * s2a, dict(base, FlipAngle=2 * pr["flip_angle_deg"]))]
    if method in ("TB1TFL", "TB1RFM"):
        anat = k * spgr_signal(m0, t1, [pr["readout_flip_deg"]], pr["tr_s"], b1)[..., 0]
        base = dict(RepetitionTime=pr["tr_s"], EchoTime=pr["echo_time_s"])
        if method == "TB1TFL":
            famp = B1M.tfl_famp(pr["flip_angle_deg"], b1)
            famp_meta = dict(base, FlipAngle=pr["flip_angle_deg"])
        else:
            famp, famp_meta = B1M.rfm_famp(b1), dict(base, FlipAngle=B1M.RFM_NOMINAL_DEG)
        famp = np.where(m0 > 0, famp, 0.0)             # the scanner masks the background
        return [("acq-anat", anat, dict(base, FlipAngle=pr["readout_flip_deg"])),
                ("acq-famp", famp, famp_meta)]
    se, ste = B1M.epi_signals(m0, t1, pr["flip_angles_deg"], pr["mixing_time_s"], b1)
    out = []
    for i, fa in enumerate(pr["flip_angles_deg"]):
        base = dict(FlipAngle=fa, MixingTime=pr["mixing_time_s"], RepetitionTime=pr["tr_s"],
                    TotalReadoutTime=pr["total_readout_time_s"])
        out += [(f"echo-1_flip-{i + 1}", k * se[i], dict(base, EchoTime=pr["echo_times_s"][0])),
                (f"echo-2_flip-{i + 1}", k * ste[i], dict(base, EchoTime=pr["echo_times_s"][1]))]
    return out


def _write_b1_method(cfg, pi, sub, out, head, lesions, acq: _Acq, common, vfa_files,
                     series: int) -> int:
    """The session's B1 data as the images of ``cfg.b1_method`` on the B1 grid, from the true
    B1+ field and the pre-contrast tissue (proton density, T1 at the voxel centres); with a VFA
    SNR, Rician noise on the signal images (sigma = white-matter signal / SNR; the famp maps of
    TB1TFL and TB1RFM stay noise-free); each sidecar intended for the session's VFA images.
    Returns the series number used."""
    series += 1
    b1_vals = evaluate_on_grid(acq.b1, acq.pose, acq.b1_grid, cfg.chunk_points)
    _, soft = subsampling(acq.b1_grid.voxel_mm, cfg.pv_step_mm)
    props = sample_properties(head, lesions, acq.pose, acq.b1_grid, soft_mm=soft,
                              chunk_points=cfg.chunk_points)
    m0, t1 = props["m0"], props["t1_s"]
    sc = {k: common[k] for k in ("Modality", "MagneticFieldStrength", "ImagingFrequency",
                                 "Manufacturer", "ManufacturersModelName", "SoftwareVersions",
                                 "ConversionSoftware", "ConversionSoftwareVersion")}
    sc.update({k: common[k] for k in _IDENTIFYING if k in common})
    sc.update(SeriesDescription=f"b1map_{cfg.b1_method}", SeriesNumber=series,
              MRAcquisitionType="3D", SliceThickness=round(float(acq.b1_grid.voxel_mm[2]), 6),
              IntendedFor=[f"bids::{f}" for f in vfa_files])
    wm_t1, wm_m0 = TISSUES["wm"]
    wm = _b1_method_images(cfg.b1_method, np.array(wm_m0), np.array(wm_t1), np.array(1.0))
    snr = cfg.vfa_snr_value
    for i, (entities, image, fields) in enumerate(_b1_method_images(cfg.b1_method, m0, t1,
                                                                    b1_vals)):
        rel = bidsio.b1_method_name(sub, acq.spec.label, cfg.b1_method, entities)
        data = np.where(np.isfinite(image), image, 0.0)
        if snr and "acq-famp" not in entities:
            data = add_rician_noise(data, float(wm[i][1]) / snr,
                                    _noise_rng(cfg, pi, acq.index, _B1_NOISE_KEY, i))
        bidsio.write_nifti(out / rel, data, acq.b1_grid.affine, compresslevel=cfg.compresslevel,
                           dtype=np.float32)
        bidsio.write_json(out / bidsio.sidecar_path(rel), dict(sc, **fields))
        acq.files["b1" if i == 0 else f"b1:{entities}"] = rel
    return series


def _sessions_row(cfg: PhantomConfig, pi: int, spec: SessionSpec) -> dict:
    """The session's row of the participant's sessions.tsv."""
    return {"session_id": f"ses-{spec.label}",
            "acq_time": _session_date(pi, spec).strftime("%Y-%m-%dT%H:%M:%S"),
            "days_from_baseline": float(spec.day - cfg.sessions[0].day),
            "contrast_agent": spec.agent or "n/a"}


def _motion_row(sub: str, acq: _Acq) -> dict:
    """The session's row of the truth motion.tsv: head pose relative to baseline, and gain."""
    ex, ey, ez = euler_xyz_deg(acq.pose)
    return {"participant_id": f"sub-{sub}", "session_id": f"ses-{acq.spec.label}",
            "rotation_deg": acq.rotation_deg, "rot_x_deg": ex, "rot_y_deg": ey,
            "rot_z_deg": ez, "translation_mm": float(np.linalg.norm(acq.translation_mm)),
            "trans_x_mm": float(acq.translation_mm[0]),
            "trans_y_mm": float(acq.translation_mm[1]),
            "trans_z_mm": float(acq.translation_mm[2]), "gain": acq.gain,
            "matrix": ",".join(repr(round(float(v), 10)) for v in acq.pose.ravel())}


def _session_meta(head: HeadModel, acq: _Acq) -> dict:
    """The session's entry in truth.json: states, pose, grids, B1 field and files."""
    spec = acq.spec
    return {
        "day": spec.day, "states": [acq.key(a) for a in spec.states()],
        "agent": spec.agent, "has_pre": spec.pre, "pose": acq.pose.tolist(),
        "rotation_deg": acq.rotation_deg, "translation_mm": acq.translation_mm.tolist(),
        "rotation_centre_mm": head.centre.tolist(), "gain": acq.gain,
        "grids": {name: {"shape": list(g.shape), "affine": g.affine.tolist()}
                  for name, g in (("t1w", acq.t1w_grid), ("vfa", acq.vfa_grid), ("b1", acq.b1_grid))},
        "b1_field": {"centre": acq.b1.centre.tolist(), "width_mm": acq.b1.width_mm,
                     "gradient": acq.b1.gradient.tolist(), "curvature": acq.b1.curvature,
                     "offset": acq.b1.offset, "scale": acq.b1.scale},
        "files": acq.files,
    }


def _write_truth_and_masks(cfg, sub, head, lesions, acqs, relax, out, truth_root, dose, tumor):
    """Truth maps on the baseline pre-contrast T1w grid, the lesion-mask derivatives, and the
    truth lesion rows (one per lesion and post-contrast session); returns the rows and the
    reference-grid entry of truth.json."""
    base = acqs[0]
    ref = base.t1w_grid
    ident = np.eye(4)
    soft = float(np.mean(ref.voxel_mm))
    post_keys = [a.key(a.spec.agent) for a in acqs if a.spec.agent]
    props = sample_properties(head, lesions, ident, ref, soft_mm=soft, chunk_points=cfg.chunk_points,
                              state_keys=post_keys)
    comp, label_of = _label_lesions(props["lesion_index"], lesions, ref)

    def tw(name, data, **kw):
        bidsio.write_nifti(truth_root / map_filename(sub, name), data, ref.affine,
                           compresslevel=cfg.compresslevel, **kw)

    def tq(name, kind, data):                          # at the precision of its kind
        tw(name, data, **truth_storage(kind, data))

    in_head = props["m0"] > 0
    tq("T1", "T1", np.where(in_head, props["t1_s"], 0.0))
    tq("M0", "M0", props["m0"])
    tw("lesions", comp, dtype=np.int16)
    b1_at = {}
    for acq in acqs:
        b1_ref = evaluate_on_grid(acq.b1, ident, ref, cfg.chunk_points)
        tq(f"B1:{acq.spec.label}", "B1", np.where(in_head, b1_ref, 0.0))
        b1_at[acq.spec.label] = {k: float(acq.b1(les.centre[:, None])[0]) for k, les in enumerate(lesions)}

    # lesion-mask derivatives, drawn on the baseline pre-contrast T1w grid
    _write_lesion_derivatives(cfg, out, sub, base.spec.label, comp)

    by_label = {acq.spec.label: acq for acq in acqs}
    rows = []
    frac = props["lesion_fraction"]
    near = props["lesion_nearest"]
    for acq in acqs:
        agent = acq.spec.agent
        if not agent:
            continue
        key = acq.key(agent)
        les_c = np.array([les.conc_mM.get(key, 0.0) for les in lesions])
        conc_true = np.where(near >= 0, frac * les_c[np.maximum(near, 0)], 0.0)
        conc_vfa = resample_to_grid(acq.vfa_conc[key], acq.vfa_grid, acq.pose, ref, ident,
                                    cfg.chunk_points)
        tw(f"conc:{key}", conc_true, dtype=np.float32)
        tw(f"conc_vfa:{key}", conc_vfa, dtype=np.float32)
        pre_label = acq.spec.label if acq.spec.pre else base.spec.label
        rows += _lesion_rows(cfg, sub, acq, lesions, label_of, comp, relax[agent], conc_true,
                             conc_vfa, pre_label, b1_at, dose, tumor)
    rows.sort(key=lambda r: (list(by_label).index(r["session_id"][4:]), r["lesion_id"]))
    for name, data in _anatomy_maps(cfg, head, ref, post_keys, props["anatomy"]).items():
        tq(name, "conc_anatomy" if name.startswith("conc_anatomy:") else "fraction", data)
    return rows, _reference_meta(sub, acqs, list(props["anatomy"]))


def _anatomy_maps(cfg, head, ref: Grid, keys, sampled: dict) -> dict:
    """The head model's truth maps (``mni``: tissue fractions, its concentration per state) as
    voxel means over sub-voxel points ~pv_step_mm apart; ``sampled`` (at the voxel centres)
    already is that when one point per voxel suffices."""
    sub, soft = subsampling(ref.voxel_mm, cfg.pv_step_mm)
    if not sampled or sub == (1, 1, 1):
        return sampled
    return average_on_grid(lambda pts: head.truth_properties(pts, soft, keys)[2], ref, sub,
                           cfg.chunk_points)


def _label_lesions(lesion_index: np.ndarray, lesions: list[Lesion], ref: Grid):
    """Lesion labels: the 26-connected components of the lesion mask (as qmri.lesions), in
    scipy's raster order, and the label of each lesion; raise unless each lesion is exactly one
    component of its own."""
    mask = lesion_index >= 0
    comp, ncomp = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    label_of = {}
    for k, les in enumerate(lesions):
        labs = np.unique(comp[lesion_index == k])
        if labs.size != 1 or labs[0] == 0:
            raise ValueError(f"lesion of {les.diameter_mm} mm does not form one component on the "
                             f"{ref.voxel_mm} mm grid: use larger lesions or a finer T1w grid")
        label_of[k] = int(labs[0])
    if ncomp != len(lesions) or len(set(label_of.values())) != len(lesions):
        raise ValueError("lesion masks touch each other: use fewer or smaller lesions")
    return comp, label_of


def _lesion_rows(cfg, sub, acq: _Acq, lesions, label_of, comp, relax, conc_true, conc_vfa,
                 pre_label, b1_at, dose, tumor) -> list[dict]:
    """The truth lesions.tsv rows of one post-contrast session: geometry, T1 before and after,
    concentration (uniform, partial-volume and on the VFA grid) and the signal enhancement."""
    agent = acq.spec.agent
    key = acq.key(agent)
    r1 = relax.r1_per_mM_s
    rows = []
    for k, les in enumerate(lesions):
        lab = label_of[k]
        vox = comp == lab
        ijk = np.argwhere(vox).mean(axis=0)
        c = float(les.conc_mM.get(key, 0.0))
        t1_post = 1.0 / (1.0 / les.t1_pre_s + r1 * c)
        b1_pre, b1_post = b1_at[pre_label][k], b1_at[acq.spec.label][k]
        s = lambda t1, b: float(spgr_signal(1.0, t1, [cfg.t1w_flip_deg], cfg.t1w_tr_s, b)[0])
        rows.append({
            "participant_id": f"sub-{sub}", "session_id": f"ses-{acq.spec.label}",
            "contrast_agent": agent, "lesion_id": lab,
            "centroid_x_mm": les.centre[0], "centroid_y_mm": les.centre[1],
            "centroid_z_mm": les.centre[2],
            "centroid_i": ijk[0], "centroid_j": ijk[1], "centroid_k": ijk[2],
            "longest_diameter_mm": les.diameter_mm,
            "axial_diameter_mm": axial_diameter_mm(les, (0.0, 0.0, 1.0)),
            "measurable": axial_diameter_mm(les, (0.0, 0.0, 1.0)) >= MEASURABLE_DIAMETER_MM - 1e-9,
            "volume_mm3": les.volume_mm3, "n_voxels": int(vox.sum()),
            "t1_pre_s": les.t1_pre_s, "t1_post_s": t1_post, "delta_r1_per_s": r1 * c,
            "r1_per_mM_s": r1, "conc_mM": c,
            "conc_vfa_mM": float(conc_vfa[vox].mean()), "conc_pv_mM": float(conc_true[vox].mean()),
            "conc_mg_per_L": c * relax.mg_per_L_per_mM_gd,
            "se_percent": 100.0 * (s(t1_post, b1_post) / s(les.t1_pre_s, b1_pre) - 1.0),
            "se_nominal_percent": 100.0 * (s(t1_post, 1.0) / s(les.t1_pre_s, 1.0) - 1.0),
            "pre_session_id": f"ses-{pre_label}", "b1_pre": b1_pre, "b1_post": b1_post,
            "dose_mg_per_kg": dose, "primary_tumor": tumor,
        })
    return rows


def _reference_meta(sub: str, acqs: list[_Acq], extra_maps=()) -> dict:
    """The truth.json entry of the reference grid (baseline pre-contrast T1w) and its maps."""
    base = acqs[0]
    ref = base.t1w_grid
    return {"session": base.spec.label, "file": base.files[f"t1w:{base.key(None)}"],
            "shape": list(ref.shape), "affine": ref.affine.tolist(),
            "maps": {n: map_filename(sub, n) for n in
                     ["T1", "M0", "lesions"] + [f"B1:{a.spec.label}" for a in acqs]
                     + [p for a in acqs if a.spec.agent
                        for p in (f"conc:{a.key(a.spec.agent)}", f"conc_vfa:{a.key(a.spec.agent)}")]
                     + list(extra_maps)}}


def _write_lesion_derivatives(cfg, out, sub, ses, comp):
    root = out / "derivatives" / "lesions"
    anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
    affine = None
    ref_rel = bidsio.t1w_name(sub, ses, None)
    affine = nib.load(out / ref_rel).affine
    space = f"_space-{cfg.mask_space}" if cfg.mask_space else ""
    sources = [f"bids:raw:{ref_rel}"]
    if cfg.lesion_derivative in ("mask", "both"):
        p = anat / f"sub-{sub}_ses-{ses}{space}_label-metastasis_mask.nii.gz"
        bidsio.write_nifti(p, comp > 0, affine, dtype=np.uint8, compresslevel=cfg.compresslevel)
        bidsio.write_json(p.with_name(p.name.replace(".nii.gz", ".json")),
                          {"Description": "Brain metastases (binary; connected components are lesions)",
                           "Type": "Lesion", "Sources": sources})
    if cfg.lesion_derivative in ("dseg", "both"):
        p = anat / f"sub-{sub}_ses-{ses}{space}_desc-metastases_dseg.nii.gz"
        bidsio.write_nifti(p, comp, affine, dtype=np.int16, compresslevel=cfg.compresslevel)
        bidsio.write_json(p.with_name(p.name.replace(".nii.gz", ".json")),
                          {"Description": "Brain metastases, one integer label per lesion",
                           "Sources": sources})
        labels = sorted(int(v) for v in np.unique(comp) if v)
        bidsio.write_tsv(p.with_name(p.name.replace(".nii.gz", ".tsv")),
                         [{"index": v, "name": f"metastasis-{v}"} for v in labels], ["index", "name"])
    if not (root / "dataset_description.json").exists():
        bidsio.write_json(root / "dataset_description.json", {
            "Name": "Metastasis masks of the bids_agquant digital phantom",
            "BIDSVersion": bidsio.BIDS_VERSION, "DatasetType": "derivative",
            "GeneratedBy": [{"Name": GENERATOR_NAME, "Version": PHANTOM_MODEL_VERSION,
                             "Description": "Lesion masks drawn from the phantom's true geometry "
                                            "on the baseline pre-contrast T1w grid"}],
            "DatasetLinks": {"raw": "../../"},
        })


def _write_dataset_files(cfg: PhantomConfig, out: Path, part_rows: list[dict]) -> None:
    bidsio.write_json(out / "dataset_description.json", {
        "Name": "bids_agquant digital phantom of the NanoRad AGuIX protocol",
        "BIDSVersion": bidsio.BIDS_VERSION, "DatasetType": "raw", "License": "CC0",
        "Authors": ["bids_agquant contributors"],
        "GeneratedBy": [{"Name": GENERATOR_NAME, "Version": PHANTOM_MODEL_VERSION,
                         "Description": f"bids_agquant.simulate, seed {cfg.seed}"}],
    })
    columns = ["participant_id", "age", "sex", "weight_kg", "dose_mg_per_kg", "primary_tumor"]
    if any("site" in r for r in part_rows):
        columns.append("site")
    bidsio.write_tsv(out / "participants.tsv", part_rows, columns)
    bidsio.write_json(out / "participants.json", {
        "age": {"Description": "age at inclusion", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "weight_kg": {"Description": "body weight", "Units": "kg"},
        "dose_mg_per_kg": {"Description": "injected AGuIX dose", "Units": "mg/kg"},
        "primary_tumor": {"Description": "primary cancer",
                          "Levels": {"NSCLC": "non-small-cell lung cancer", "breast": "breast cancer",
                                     "melanoma": "melanoma", "colon": "colorectal cancer"}},
        **({"site": {"Description": "imaging site (centre) of the participant's sessions"}}
           if any("site" in r for r in part_rows) else {}),
    })
    bidsio.write_json(out / "sessions.json", {
        "acq_time": {"Description": "acquisition date and time of the session (date-shifted)"},
        "days_from_baseline": {"Description": "days since the baseline session", "Units": "day"},
        "contrast_agent": {"Description": "contrast agent of the post-contrast acquisition"},
    })
    sessions = ", ".join(f"ses-{s.label} (day {s.day:g}: {'pre + ' if s.pre else ''}"
                         f"{s.agent or 'none'})" for s in cfg.sessions)
    (out / "README").write_text(
        "bids_agquant digital phantom\n============================\n\n"
        "Simulated brain MRI of patients with brain metastases following the NanoRad AGuIX trial\n"
        "protocol (3D SPGR T1w, variable-flip-angle SPGR for T1 mapping, B1+ maps).\n"
        f"Sessions: {sessions}.\n"
        "Images are synthetic (no patient data). The ground truth is stored outside this\n"
        "dataset (see the generator's truth directory). Lesion masks: derivatives/lesions/.\n"
        f"Generated by {GENERATOR_NAME} model {PHANTOM_MODEL_VERSION}, seed {cfg.seed}.\n")


def _truth_readme(cfg: PhantomConfig, command: str) -> str:
    return (f"Regenerate (from the same working directory):\n\n    {command}\n\n"
            "# Ground truth of a bids_agquant phantom dataset\n\n"
            f"Phantom model {PHANTOM_MODEL_VERSION}, seed {cfg.seed}. Load with\n"
            "`bids_agquant.simulate.truth.load_truth(<this directory>)`.\n\n```\n"
            + (_truth.__doc__ or "") + "```\n")
