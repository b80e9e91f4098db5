"""The official schema-based BIDS validator (``bids-validator-deno``), run for real.

Here: the raw sample dataset (data/sample_bids, with its lesion-mask derivatives) gives no error,
and the validator does report the errors this app once made (so a clean report means something).
The app's own outputs are validated where an end-to-end test already made them: the phantom run
of tests/workflows/test_participant.py and the participant + group run of
tests/reliability/test_rel_pipeline.py. The validator comes from the ``test`` extra; a machine
without it skips, CI (``CI=true``) fails (:func:`testkit.bids_validator_path`).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bids_agquant.bids import derivatives as D
from testkit import run_bids_validator

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_bids"


def test_raw_sample_dataset_has_no_validator_error():
    res = run_bids_validator(SAMPLE, recursive=True)
    assert res.errors == [], res.errors
    assert res.code == 0
    assert res.of("warning"), "the sample data has known warnings: is this the validator's report?"


def _tiny_derivative(root: Path, sidecar: dict) -> Path:
    """A one-map derivative dataset written with the app's own functions."""
    D.ensure_dataset_description(root)
    D.ensure_readme(root)
    D.update_bidsignore(root)
    rel = D.derivative_path("T1map", "sub-01_ses-D1_flip-1_VFA.nii.gz")
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    D.write_nifti(root / rel, img)
    D.write_json(root / str(rel).replace(".nii.gz", ".json"), sidecar)
    return root / rel


def test_a_map_sidecar_from_the_registry_is_valid_and_one_without_skullstripped_is_not(tmp_path):
    good = {**D.describe("T1map"), "SpatialReference": "orig"}
    assert good["SkullStripped"] is False
    _tiny_derivative(tmp_path / "good", good)
    res = run_bids_validator(tmp_path / "good")
    assert res.errors == [], res.errors

    bad = {k: v for k, v in good.items() if k != "SkullStripped"}
    _tiny_derivative(tmp_path / "bad", bad)
    res = run_bids_validator(tmp_path / "bad")
    assert res.code != 0
    assert any(e.startswith("SIDECAR_KEY_REQUIRED SkullStripped") for e in res.errors), res.errors


def test_non_bids_folders_are_ignored_by_their_bidsignore_lines(tmp_path):
    """``group/``, ``logs/`` and the reports are files no BIDS rule names: the ``.bidsignore``
    lines the app writes keep the validator quiet about them; without the lines it reports the
    group folder and the report (it skips a ``logs`` folder on its own)."""
    root = tmp_path / "out"
    _tiny_derivative(root, {**D.describe("T1map"), "SpatialReference": "orig"})
    for folder in D.NON_BIDS_FOLDERS:
        (root / folder).mkdir()
        (root / folder / "results_table.tsv").write_text("a\tb\n1\t2\n")
    (root / "sub-01.html").write_text("<html></html>")
    assert run_bids_validator(root).errors == []

    (root / ".bidsignore").write_text("")
    errors = run_bids_validator(root).errors
    assert any("NOT_INCLUDED" in e and "/group/" in e for e in errors), errors
    assert any("NOT_INCLUDED" in e and "/sub-01.html" in e for e in errors), errors

