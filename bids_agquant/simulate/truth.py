"""The phantom's ground truth, written beside (never inside) the BIDS dataset, and its loader.

Layout of a truth directory::

    truth.json                 settings, protocol, per participant: covariates, reference grid,
                               per session: pose (4x4), rotation/translation, gain, grids, files
    lesions.tsv                one row per lesion x post-contrast state (see LESION_COLUMNS)
    motion.tsv                 one row per participant x session
    sub-<p>/sub-<p>_T1map.nii.gz, _M0map.nii.gz, _desc-lesions_dseg.nii.gz,
            sub-<p>_ses-<s>_B1map.nii.gz,
            sub-<p>_ses-<s>_ce-<agent>_desc-true_conc.nii.gz   (mM, point-sampled partial volume)
            sub-<p>_ses-<s>_ce-<agent>_desc-vfa_conc.nii.gz    (mM, VFA-voxel average, resampled)
      anatomy "mni" only (partial-volume fractions 0-1, voxel means over sub-voxel points;
      the healthy anatomy, lesions not subtracted; gm + wm + csf = intracranial):
            sub-<p>_label-intracranial_probseg.nii.gz  (inside dura: parenchyma + CSF)
            sub-<p>_label-parenchyma_probseg.nii.gz    (GM + WM)
            sub-<p>_label-GM_probseg, _label-WM_probseg, _label-CSF_probseg
            sub-<p>_label-enhancing_probseg.nii.gz     (extracranial enhancing tissue: dura,
                                                        marrow, muscle, skin)
            sub-<p>_ses-<s>_ce-<agent>_desc-anatomy_conc.nii.gz (mM taken up by the anatomy)
    README.md

All maps are on the participant's reference grid (the baseline pre-contrast T1w). World
coordinates in the tables are those of the reference (the baseline head position).
``longest_diameter_mm`` is the 3-D longest diameter; ``axial_diameter_mm`` the longest diameter in
a world-axial plane (constant z at baseline, RECIST); ``measurable`` = axial diameter >= 10 mm.
Use :func:`load_truth`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = ["Truth", "load_truth", "LESION_COLUMNS", "MOTION_COLUMNS", "map_filename",
           "TRUTH_PRECISION", "truth_storage",
           "FRACTION_LABELS"]

LESION_COLUMNS = [
    "participant_id", "session_id", "contrast_agent", "lesion_id",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "centroid_i", "centroid_j", "centroid_k",
    "longest_diameter_mm", "axial_diameter_mm", "measurable", "volume_mm3", "n_voxels",
    "t1_pre_s", "t1_post_s", "delta_r1_per_s", "r1_per_mM_s",
    "conc_mM", "conc_vfa_mM", "conc_pv_mM", "conc_mg_per_L",
    "se_percent", "se_nominal_percent", "pre_session_id", "b1_pre", "b1_post",
    "dose_mg_per_kg", "primary_tumor",
]
MOTION_COLUMNS = ["participant_id", "session_id", "rotation_deg", "rot_x_deg", "rot_y_deg",
                  "rot_z_deg", "translation_mm", "trans_x_mm", "trans_y_mm", "trans_z_mm", "gain",
                  "matrix"]


#: Partial-volume fraction maps of the ``mni`` anatomy (key -> BIDS label of the file).
FRACTION_LABELS = {"intracranial": "intracranial", "parenchyma": "parenchyma", "gm": "GM",
                   "wm": "WM", "csf": "CSF", "extracranial_enhancing": "enhancing"}


#: Precision of each kind of truth map: the map is stored as integers (int16, int32 where its
#: range needs it) with this ``scl_slope`` (units of the map); lesion concentrations and the
#: lesion labels are stored exactly (float32, int16).
TRUTH_PRECISION = {"T1": 0.001, "M0": 0.0001, "B1": 0.001, "fraction": 0.0001,
                   "conc_anatomy": 1e-5}


def truth_storage(kind: str, data) -> dict:
    """``dtype`` and ``slope`` to store a truth map of ``kind`` (a key of
    :data:`TRUTH_PRECISION`) at its precision without clipping."""
    step = TRUTH_PRECISION[kind]
    top = float(np.nanmax(np.abs(data))) / step if np.size(data) else 0.0
    return dict(dtype=np.int16 if top < np.iinfo(np.int16).max else np.int32, slope=step)


def map_filename(participant: str, name: str) -> str:
    """Relative path of a truth map. ``name``: "T1", "M0", "lesions", "B1:<ses>",
    "conc:<ses>_<agent>", "conc_vfa:<ses>_<agent>"; with the ``mni`` anatomy also the fraction
    maps of :data:`FRACTION_LABELS` and "conc_anatomy:<ses>_<agent>"."""
    p = f"sub-{participant}"
    if name == "T1":
        return f"{p}/{p}_T1map.nii.gz"
    if name == "M0":
        return f"{p}/{p}_M0map.nii.gz"
    if name == "lesions":
        return f"{p}/{p}_desc-lesions_dseg.nii.gz"
    if name in FRACTION_LABELS:
        return f"{p}/{p}_label-{FRACTION_LABELS[name]}_probseg.nii.gz"
    kind, _, arg = name.partition(":")
    if kind == "B1":
        return f"{p}/{p}_ses-{arg}_B1map.nii.gz"
    if kind in ("conc", "conc_vfa", "conc_anatomy"):
        ses, _, agent = arg.partition("_")
        desc = {"conc": "true", "conc_vfa": "vfa", "conc_anatomy": "anatomy"}[kind]
        return f"{p}/{p}_ses-{ses}_ce-{agent}_desc-{desc}_conc.nii.gz"
    raise KeyError(f"unknown truth map {name!r}")


@dataclass
class Truth:
    """Loaded ground truth of a simulated dataset."""
    root: Path
    meta: dict                 # truth.json
    lesions: pd.DataFrame      # lesions.tsv (one row per lesion x post-contrast state)
    motion: pd.DataFrame       # motion.tsv

    @property
    def participants(self) -> list[str]:
        return list(self.meta["participants"])

    @property
    def bids_dir(self) -> Path | None:
        d = self.meta.get("bids_dir")
        return (self.root / d).resolve() if d else None

    @property
    def protocol(self) -> dict:
        return self.meta["protocol"]

    def participant(self, label: str) -> dict:
        return self.meta["participants"][_strip(label, "sub-")]

    def sessions(self, participant: str) -> list[str]:
        return list(self.participant(participant)["sessions"])

    def pose(self, participant: str, session: str) -> np.ndarray:
        """4x4 head pose of ``session``: world(session) = pose @ world(baseline)."""
        ses = self.participant(participant)["sessions"][_strip(session, "ses-")]
        return np.asarray(ses["pose"], dtype=np.float64)

    def lesion_table(self, participant: str, session: str | None = None,
                     agent: str | None = None) -> pd.DataFrame:
        df = self.lesions[self.lesions["participant_id"] == f"sub-{_strip(participant, 'sub-')}"]
        if session is not None:
            df = df[df["session_id"] == f"ses-{_strip(session, 'ses-')}"]
        if agent is not None:
            df = df[df["contrast_agent"].str.lower() == agent.lower()]
        return df.reset_index(drop=True)

    def lesion_geometry(self, participant: str) -> pd.DataFrame:
        """One row per lesion (geometry columns only)."""
        cols = ["participant_id", "lesion_id", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
                "centroid_i", "centroid_j", "centroid_k", "longest_diameter_mm",
                "axial_diameter_mm", "measurable", "volume_mm3", "n_voxels", "t1_pre_s"]
        df = self.lesion_table(participant)[cols]
        return df.drop_duplicates("lesion_id").sort_values("lesion_id").reset_index(drop=True)

    def map_path(self, participant: str, name: str) -> Path:
        return self.root / map_filename(_strip(participant, "sub-"), name)

    def load_map(self, participant: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(data float64, affine)`` of a truth map (see :func:`map_filename` for names)."""
        img = nib.load(self.map_path(participant, name))
        return np.asarray(img.get_fdata(dtype=np.float64)), img.affine

    def match_lesions(self, participant: str, centroids_world_mm) -> list[int | None]:
        """Truth ``lesion_id`` nearest to each given world centroid (reference space), or None
        when farther than the lesion's radius."""
        geo = self.lesion_geometry(participant)
        xyz = geo[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
        out = []
        for c in np.atleast_2d(np.asarray(centroids_world_mm, dtype=float)):
            d = np.linalg.norm(xyz - c, axis=1)
            k = int(np.argmin(d))
            out.append(int(geo["lesion_id"].iloc[k]) if d[k] <= geo["longest_diameter_mm"].iloc[k] / 2 else None)
        return out


def _strip(label: str, prefix: str) -> str:
    label = str(label)
    return label[len(prefix):] if label.startswith(prefix) else label


def load_truth(path) -> Truth:
    """Load a truth directory written by :func:`bids_agquant.simulate.simulate_dataset`."""
    root = Path(path)
    meta_file = root / "truth.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: pass the truth directory written by "
                                f"bids-agquant-simulate (--truth), not the BIDS dataset")
    meta = json.loads(meta_file.read_text())
    lesions = pd.read_csv(root / "lesions.tsv", sep="\t", na_values="n/a",
                          dtype={"participant_id": str, "session_id": str})
    motion = pd.read_csv(root / "motion.tsv", sep="\t", na_values="n/a")
    return Truth(root=root, meta=meta, lesions=lesions, motion=motion)
