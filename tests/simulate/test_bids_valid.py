"""The phantom writes a valid BIDS dataset (schema + legacy validator), pybids indexes it."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
from bidsschematools import schema as bst_schema
from bidsschematools import validator as bst_validator

from bids_agquant.simulate import simulate_dataset

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
               "InstitutionAddress", "DeviceSerialNumber", "AcquisitionDateTime", "StationName")


def _files(root: Path):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_every_path_matches_the_bids_schema(small_phantom):
    root = small_phantom.bids_dir
    result = bst_validator.validate_bids([str(root)])
    assert result["path_tracking"] == [], result["path_tracking"]
    assert len(result["path_listing"]) > 50
    deriv = bst_validator.validate_bids([str(root / "derivatives" / "lesions")])
    assert deriv["path_tracking"] == [], deriv["path_tracking"]


def test_legacy_bids_validator_accepts_every_raw_file(small_phantom):
    import bids_validator
    v = bids_validator.BIDSValidator()
    root = small_phantom.bids_dir
    rejected = [p for p in _files(root) if "derivatives" not in p.parts
                and not v.is_bids("/" + p.relative_to(root).as_posix())]
    assert rejected == []


def test_entity_order_and_names(small_phantom):
    root = small_phantom.bids_dir
    anat = root / "sub-01" / "ses-D0" / "anat"
    assert (anat / "sub-01_ses-D0_ce-Dotarem_flip-1_VFA.nii.gz").is_file()
    assert (anat / "sub-01_ses-D0_flip-4_VFA.nii.gz").is_file()
    assert (anat / "sub-01_ses-D0_ce-Dotarem_T1w.nii.gz").is_file()
    assert (root / "sub-01" / "ses-D1" / "anat" / "sub-01_ses-D1_ce-AGuIX_T1w.nii.gz").is_file()
    assert not (root / "sub-01" / "ses-D1" / "anat" / "sub-01_ses-D1_T1w.nii.gz").exists()
    assert (root / "sub-01" / "ses-D28" / "anat" / "sub-01_ses-D28_T1w.nii.gz").is_file()
    for ses in ("D0", "D1", "D8", "D28"):
        assert (root / "sub-01" / f"ses-{ses}" / "fmap" / f"sub-01_ses-{ses}_TB1map.nii.gz").is_file()
    mask = (root / "derivatives" / "lesions" / "sub-01" / "ses-D0" / "anat"
            / "sub-01_ses-D0_label-metastasis_mask.nii.gz")
    ref = nib.load(anat / "sub-01_ses-D0_T1w.nii.gz")
    m = nib.load(mask)
    assert m.shape == ref.shape and (m.affine == ref.affine).all()
    assert root not in small_phantom.root.parents and small_phantom.root != root


def test_sidecars_hold_what_the_app_needs_and_no_identifying_fields(small_phantom):
    schema = bst_schema.load_schema()
    vfa_required = [k for k, v in schema.rules.sidecars.qmri.VariableFlipAngleMetadata.fields.items()
                    if v == "required"]
    assert set(vfa_required) >= {"FlipAngle", "RepetitionTimeExcitation", "PulseSequenceType"}
    root = small_phantom.bids_dir
    flips = small_phantom.protocol["vfa"]["flip_angles_deg"]
    for sc_path in root.glob("sub-*/ses-*/anat/*_VFA.json"):
        sc = json.loads(sc_path.read_text())
        for key in vfa_required + ["MagneticFieldStrength", "Manufacturer", "RepetitionTime", "EchoTime"]:
            assert key in sc, f"{sc_path.name} lacks {key}"
        idx = int(sc_path.name.split("_flip-")[1].split("_")[0])
        assert sc["FlipAngle"] == flips[idx - 1]
        assert sc["RepetitionTimeExcitation"] == small_phantom.protocol["vfa"]["tr_s"]
    for sc_path in root.glob("sub-*/ses-*/*/*.json"):
        sc = json.loads(sc_path.read_text())
        assert not set(IDENTIFYING) & set(sc), sc_path.name
        if "_ce-" in sc_path.name:
            agent = sc_path.name.split("_ce-")[1].split("_")[0]
            assert sc["ContrastBolusAgent"] == agent
            assert sc["ContrastBolusIngredient"] == "GADOLINIUM"
        elif sc_path.parent.name == "anat":
            assert "ContrastBolusIngredient" not in sc


def test_b1_intended_for_resolves_to_the_session_vfa(small_phantom):
    root = small_phantom.bids_dir
    for sc_path in root.glob("sub-*/ses-*/fmap/*_TB1map.json"):
        ses = sc_path.parent.parent.name
        targets = json.loads(sc_path.read_text())["IntendedFor"]
        assert targets
        for uri in targets:
            assert uri.startswith("bids::")
            rel = uri[len("bids::"):]
            assert (root / rel).is_file() and f"/{ses}/" in rel and rel.endswith("_VFA.nii.gz")
        n_vfa = len(list((sc_path.parent.parent / "anat").glob("*_VFA.nii.gz")))
        assert len(targets) == n_vfa


def test_pybids_indexes_raw_and_derivatives(small_phantom):
    from bids import BIDSLayout
    root = small_phantom.bids_dir
    layout = BIDSLayout(root, derivatives=True)
    assert layout.get_subjects() == ["01"]
    assert sorted(layout.get_sessions()) == sorted(["D0", "D1", "D8", "D28"])
    n_flip = len(small_phantom.protocol["vfa"]["flip_angles_deg"])
    vfa = layout.get(subject="01", session="D1", suffix="VFA", extension=".nii.gz")
    assert len(vfa) == n_flip
    assert {f.entities["ceagent"] for f in vfa} == {"AGuIX"}
    assert vfa[0].get_metadata()["RepetitionTimeExcitation"] > 0
    pre = layout.get(subject="01", session="D0", suffix="T1w", extension=".nii.gz",
                     ceagent=None)
    assert len(pre) == 1
    masks = layout.get(subject="01", suffix="mask", label="metastasis", extension=".nii.gz",
                       scope="derivatives")
    assert len(masks) == 1 and masks[0].entities["session"] == "D0"
    tsv = (root / "participants.tsv").read_text().splitlines()
    header = tsv[0].split("\t")
    for col in ("participant_id", "dose_mg_per_kg", "weight_kg", "primary_tumor", "sex", "age"):
        assert col in header
    sessions = (root / "sub-01" / "sub-01_sessions.tsv").read_text().splitlines()
    assert sessions[0].split("\t")[:2] == ["session_id", "acq_time"]
    assert len(sessions) == 5


def test_options_identifying_fields_percent_b1_dseg_and_labels(tmp_path):
    truth = simulate_dataset(tmp_path / "bids", truth_dir=tmp_path / "truth", preset="small",
                             n_participants=1, sessions=("day0", "day1"), identifying_fields=True,
                             b1_units="percent", lesion_derivative="both", mask_space="orig",
                             lesion_diameters_mm=(12.0, 20.0), seed=3)
    root = truth.bids_dir
    sc = json.loads((root / "sub-01/ses-day0/anat/sub-01_ses-day0_T1w.json").read_text())
    assert set(IDENTIFYING) <= set(sc)
    b1 = nib.load(root / "sub-01/ses-day1/fmap/sub-01_ses-day1_TB1map.nii.gz").get_fdata()
    assert 80 < b1[b1.shape[0] // 2, b1.shape[1] // 2, b1.shape[2] // 2] < 120
    d = root / "derivatives/lesions/sub-01/ses-day0/anat"
    mask = nib.load(d / "sub-01_ses-day0_space-orig_label-metastasis_mask.nii.gz").get_fdata()
    dseg = nib.load(d / "sub-01_ses-day0_space-orig_desc-metastases_dseg.nii.gz").get_fdata()
    assert ((dseg > 0) == (mask > 0)).all() and set(map(int, set(dseg.ravel()))) == {0, 1, 2}
    assert (d / "sub-01_ses-day0_space-orig_desc-metastases_dseg.tsv").is_file()
    assert truth.sessions("01") == ["day0", "day1"]
    result = bst_validator.validate_bids([str(root / "derivatives" / "lesions")])
    assert result["path_tracking"] == []
