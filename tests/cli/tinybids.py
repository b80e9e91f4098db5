"""Tiny raw BIDS datasets of the trial protocol, written with nibabel, for CLI/layout/validation tests.

The images are small (T1w 16x16x10 at 1 mm, VFA 8x8x5 at 2 mm, TB1map 8x8x5 at 2 mm) with a
textured, strictly positive signal; the sidecars carry the metadata a converter writes. Tests then
break one thing at a time with :func:`write_nifti` / :func:`write_json` / :func:`edit_json`.

``make_dataset(root)`` writes the NanoRad timeline (science.md): ses-D0 pre + post-Dotarem, ses-D1
AGuIX, ses-D8 AGuIX, ses-D28 Dotarem, each with a TB1map, plus FLAIR/SWI/DWI distractors,
participants.tsv, sessions.tsv and a lesion-mask derivatives dataset drawn on the D0 pre T1w.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

T1W_SHAPE = (16, 16, 10)
VFA_SHAPE = (8, 8, 5)
FLIP_ANGLES = (3.0, 10.0, 20.0)
TR_S = 0.015


def t1w_affine() -> np.ndarray:
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-8.0, -8.0, -5.0]
    return aff


def vfa_affine() -> np.ndarray:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-7.5, -7.5, -4.5]
    return aff


def textured(shape, seed=0, scale=100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * (1.0 + 0.2 * rng.random(shape))).astype(np.float32)


def write_nifti(path: Path, data, affine=None, *, qform_affine=None) -> Path:
    """Write ``data`` as NIfTI-1 with sform and qform both set to ``affine`` (or different ones)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = t1w_affine() if affine is None else np.asarray(affine, float)
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine if qform_affine is None else qform_affine, code=1)
    nib.save(img, str(path))
    return path


def write_json(path: Path, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1))
    return path


def edit_json(path: Path, **changes) -> None:
    """Set (value) or remove (None) keys of a sidecar."""
    meta = json.loads(Path(path).read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    write_json(path, meta)


def sidecar(path: Path) -> Path:
    name = Path(path).name
    stem = name[:-7] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]
    return Path(path).with_name(stem + ".json")


TRIAL_SESSIONS = {
    # session: (has pre-contrast, [agents], acq_time)
    "D0": (True, ["Dotarem"], "2020-01-06T09:00:00"),
    "D1": (False, ["AGuIX"], "2020-01-07T11:00:00"),
    "D8": (False, ["AGuIX"], "2020-01-14T10:00:00"),
    "D28": (False, ["Dotarem"], "2020-02-03T10:00:00"),
}

PARTICIPANTS = {
    "01": {"dose_mg_per_kg": "50", "weight_kg": "70.5", "primary_tumor": "NSCLC"},
    "02": {"dose_mg_per_kg": "100", "weight_kg": "62", "primary_tumor": "melanoma"},
}


def _base(p, s):
    return f"sub-{p}_ses-{s}"


def write_state(root: Path, p: str, s: str, agent: str | None, *, seed=0, t1w=True, vfa=True,
                flip_angles=FLIP_ANGLES, tr_s=TR_S, field_t=3.0) -> dict:
    """Write the T1w and VFA set of one (session, agent) state; returns their paths."""
    anat = Path(root) / f"sub-{p}" / f"ses-{s}" / "anat"
    ce = f"_ce-{agent}" if agent else ""
    contrast = ({"ContrastBolusIngredient": "GADOLINIUM", "ContrastBolusAgent": agent}
                if agent else {})
    out = {"vfa": []}
    if t1w:
        f = write_nifti(anat / f"{_base(p, s)}{ce}_T1w.nii.gz", textured(T1W_SHAPE, seed))
        write_json(sidecar(f), {"MagneticFieldStrength": field_t, "FlipAngle": 8,
                                "RepetitionTime": 0.008, "PulseSequenceType": "MPRAGE",
                                **contrast})
        out["t1w"] = f
    if vfa:
        for i, fa in enumerate(flip_angles, start=1):
            f = write_nifti(anat / f"{_base(p, s)}{ce}_flip-{i}_VFA.nii.gz",
                            textured(VFA_SHAPE, seed + i), vfa_affine())
            write_json(sidecar(f), {"FlipAngle": fa, "RepetitionTimeExcitation": tr_s,
                                    "MagneticFieldStrength": field_t,
                                    "PulseSequenceType": "SPGR", **contrast})
            out["vfa"].append(f)
    return out


def make_dataset(root: Path, participants=("01",), sessions=None, *, b1=True, lesion_mask=True,
                 distractors=True, sessions_tsv=True) -> Path:
    """Write a trial-like raw BIDS dataset at ``root`` and return ``root``."""
    root = Path(root)
    sessions = TRIAL_SESSIONS if sessions is None else sessions
    write_json(root / "dataset_description.json",
               {"Name": "tiny trial", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    rows = ["participant_id\tdose_mg_per_kg\tweight_kg\tprimary_tumor"]
    for p in participants:
        cov = PARTICIPANTS.get(p, PARTICIPANTS["01"])
        rows.append(f"sub-{p}\t{cov['dose_mg_per_kg']}\t{cov['weight_kg']}\t{cov['primary_tumor']}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    for k, p in enumerate(participants):
        ses_rows = ["session_id\tacq_time"]
        for j, (s, (pre, agents, acq_time)) in enumerate(sessions.items()):
            seed = 100 * k + 10 * j
            if pre:
                write_state(root, p, s, None, seed=seed)
            for a, agent in enumerate(agents):
                write_state(root, p, s, agent, seed=seed + 5 + a)
            if b1:
                f = write_nifti(root / f"sub-{p}" / f"ses-{s}" / "fmap" / f"{_base(p, s)}_TB1map.nii.gz",
                                np.full(VFA_SHAPE, 0.95, np.float32), vfa_affine())
                write_json(sidecar(f), {"MagneticFieldStrength": 3.0, "Units": "a.u."})
            if distractors:
                anat = root / f"sub-{p}" / f"ses-{s}" / "anat"
                write_nifti(anat / f"{_base(p, s)}_FLAIR.nii.gz", textured(T1W_SHAPE, 7))
                write_json(anat / f"{_base(p, s)}_FLAIR.json", {"RepetitionTime": 5.0})
                write_nifti(anat / f"{_base(p, s)}_part-mag_T2starw.nii.gz", textured(T1W_SHAPE, 8))
                dwi = root / f"sub-{p}" / f"ses-{s}" / "dwi"
                write_nifti(dwi / f"{_base(p, s)}_dwi.nii.gz", textured(VFA_SHAPE + (3,), 9), vfa_affine())
                (dwi / f"{_base(p, s)}_dwi.bval").write_text("0 1000 1000\n")
                (dwi / f"{_base(p, s)}_dwi.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n")
            ses_rows.append(f"ses-{s}\t{acq_time}")
        if sessions_tsv:
            (root / f"sub-{p}" / f"sub-{p}_sessions.tsv").write_text("\n".join(ses_rows) + "\n")
        if lesion_mask:
            write_lesion_mask(root / "derivatives" / "masks", p, next(iter(sessions)))
    return root


def write_lesion_mask(deriv_root: Path, p: str, s: str, *, kind="mask", data=None, affine=None):
    """A derivatives dataset with one lesion mask drawn on the given session's T1w grid."""
    deriv_root = Path(deriv_root)
    if not (deriv_root / "dataset_description.json").exists():
        write_json(deriv_root / "dataset_description.json",
                   {"Name": "lesion masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "manual"}]})
    if data is None:
        data = np.zeros(T1W_SHAPE, np.uint8)
        data[4:8, 4:8, 3:6] = 1
        data[10:13, 10:12, 5:7] = 2 if kind == "dseg" else 1
    name = (f"sub-{p}_ses-{s}_label-metastasis_mask.nii.gz" if kind == "mask"
            else f"sub-{p}_ses-{s}_desc-metastases_dseg.nii.gz")
    return write_nifti(deriv_root / f"sub-{p}" / f"ses-{s}" / "anat" / name, data,
                       t1w_affine() if affine is None else affine)
