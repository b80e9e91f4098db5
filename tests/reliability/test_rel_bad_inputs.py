"""Bad inputs not covered by tests/cli/test_cli_bad_inputs.py, each built from the digital phantom.

tests/cli/test_cli_bad_inputs.py covers the list of issue 6 on tiny hand-made datasets; here the
broken dataset is a copy of a ``bids_agquant.simulate`` phantom (free-text sessions, four flip
angles, int16 images, oblique grids) and the inputs are the ones that list leaves out: sidecars
that are not JSON objects, images entirely NaN or constant, lying headers, broken lesion masks and
B1 maps, malformed participants.tsv / sessions.tsv, a TB1map whose IntendedFor points nowhere.

Every test runs the real CLI in-process (pybids, nibabel) with ``--print-plan`` (validation is
complete before anything is computed) and checks: the exit code, one line on stderr that names
the file or option and says what to do, no traceback without ``-v``, the input unchanged.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import relkit as rk
from testkit import tree_state

SUB = "sub-01"
PRE = f"{SUB}/ses-pre/anat/{SUB}_ses-pre"
MASK = f"derivatives/lesions/{SUB}/ses-pre/anat/{SUB}_ses-pre_label-metastasis_mask"
B1 = f"{SUB}/ses-pre/fmap/{SUB}_ses-pre_TB1map"


def plan(run_cli, ds, *args, expect=0, out=None):
    """``--print-plan`` on ``ds``: exit code, no traceback, BIDS_DIR untouched, one clear line."""
    before = tree_state(ds)
    res = run_cli(ds, out or ds.parent / "out", "participant", "--print-plan", *args)
    assert res.code == expect, (res.code, res.err, res.out[-2000:])
    assert "Traceback" not in res.out + res.err
    assert tree_state(ds) == before, "BIDS_DIR was modified"
    if expect:
        line = res.first_err_line
        assert line.startswith("bids-agquant: error: ") and "; " in line, line
        assert len(res.err.strip().splitlines()) == 1, res.err
    return res


def first_line(run_cli, ds, *args, expect):
    return plan(run_cli, ds, *args, expect=expect).first_err_line


# --- sidecars that are not JSON objects (before the fix: "fix dataset_description.json") ----

@pytest.mark.parametrize("content, why", [
    (b'{"FlipAngle": 5,', "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[2, 5, 10]", "holds a JSON list, not an object"),
    ('{"FlipAngle": 5, "SeriesDescription": "s\u00e9q"}'.encode("latin-1"), "not UTF-8 text"),
])
def test_vfa_sidecar_that_is_not_a_json_object(run_cli, phantom_copy, content, why):
    (phantom_copy / f"{PRE}_flip-2_VFA.json").write_bytes(content)
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"error: {PRE}_flip-2_VFA.json: {why}" in line
    assert "json.tool" in line and "dataset_description" not in line


def test_top_level_json_that_is_not_json(run_cli, phantom_copy):
    (phantom_copy / "participants.json").write_text("{broken")
    line = first_line(run_cli, phantom_copy, expect=65)
    assert "error: participants.json: not valid JSON" in line


def test_broken_sidecar_of_an_image_never_read_is_ignored(run_cli, phantom_copy):
    """FLAIR, DWI, ... are never looked at, so their sidecars cannot stop a run."""
    flair = phantom_copy / f"{PRE}_FLAIR.nii.gz"
    flair.write_bytes((phantom_copy / f"{PRE}_T1w.nii.gz").read_bytes())
    (phantom_copy / f"{PRE}_FLAIR.json").write_text("{broken")
    dwi = phantom_copy / SUB / "ses-pre" / "dwi"
    dwi.mkdir()
    (dwi / f"{SUB}_ses-pre_dwi.json").write_text("not json")
    res = plan(run_cli, phantom_copy)
    assert "FLAIR" not in res.out and "dwi" not in res.out


def test_flip_angle_that_overflows_to_infinity(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_flip-2_VFA.json"
    text = f.read_text()
    f.write_text(text.replace('"FlipAngle": 5.0', '"FlipAngle": 1e400'))
    assert '"FlipAngle": 1e400' in f.read_text()
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_flip-2_VFA.nii.gz: FlipAngle = inf (in {PRE}_flip-2_VFA.json) is not finite" in line


def test_repetition_time_not_positive(run_cli, phantom_copy):
    for i in range(1, 5):
        rk.edit_json(phantom_copy / f"{PRE}_flip-{i}_VFA.json", RepetitionTimeExcitation=-0.006)
    line = first_line(run_cli, phantom_copy, expect=65)
    assert "RepetitionTimeExcitation = -0.006 s (in " in line and "flip-1_VFA.json) is not positive" in line


# --- images ---------------------------------------------------------------------------------

def test_image_entirely_nan(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_flip-3_VFA.nii.gz"
    img, data = rk.load(f)
    rk.save_like(f, np.full(data.shape, np.nan, np.float32))
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_flip-3_VFA.nii.gz: every voxel is NaN or Inf" in line


def test_constant_image(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_T1w.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, np.full(data.shape, 7.0, np.float32))
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_T1w.nii.gz: every voxel has the same value (7)" in line


def test_flip_angles_of_one_set_on_different_grids(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_flip-2_VFA.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, data[:-2])
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_flip-2_VFA.nii.gz: not on the grid of {SUB}_ses-pre_flip-1_VFA.nii.gz" in line


def test_empty_file(run_cli, phantom_copy):
    (phantom_copy / f"{PRE}_flip-2_VFA.nii.gz").write_bytes(b"")
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_flip-2_VFA.nii.gz: cannot read the NIfTI header" in line


def test_complex_valued_image(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_flip-2_VFA.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, data.astype(np.complex64))
    line = first_line(run_cli, phantom_copy, expect=65)
    assert "holds complex values" in line and "magnitude" in line


def test_nan_in_the_affine(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_T1w.nii.gz"
    rk.patch_header(f, qform_code=0, sform_code=1, srow_x=[np.nan, 0, 0, 0])
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_T1w.nii.gz: the voxel-to-world affine is not invertible" in line


def test_header_claims_a_shape_the_file_does_not_hold(run_cli, phantom_copy):
    f = phantom_copy / f"{PRE}_flip-2_VFA.nii.gz"
    rk.patch_header(f, shape=(4000, 4000, 4000))
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_flip-2_VFA.nii.gz: the image data cannot be read" in line


def test_truncated_uncompressed_nii(run_cli, phantom_copy):
    import nibabel as nib
    gz = phantom_copy / f"{PRE}_flip-2_VFA.nii.gz"
    nii = gz.with_name(gz.name[:-3])
    nib.save(nib.load(str(gz)), str(nii))
    gz.unlink()
    data = nii.read_bytes()
    nii.write_bytes(data[: len(data) // 2])
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{PRE}_flip-2_VFA.nii: the image data cannot be read; the file is truncated" in line


# --- lesion masks and B1 maps ---------------------------------------------------------------

def test_lesion_mask_4d(run_cli, phantom_copy):
    f = phantom_copy / f"{MASK}.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, np.stack([data, data], axis=-1), dtype=np.uint8)
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{MASK}.nii.gz is 4D" in line and "3D lesion mask" in line


def test_lesion_dseg_with_non_integer_labels(run_cli, phantom_copy):
    f = phantom_copy / f"{MASK}.nii.gz"
    _, data = rk.load(f)
    dseg = phantom_copy / MASK.replace("label-metastasis_mask", "desc-metastases_dseg")
    rk.save_like(dseg.with_name(dseg.name + ".nii.gz"), data * 1.5, ref=f)
    f.unlink()
    (phantom_copy / f"{MASK}.json").unlink()
    line = first_line(run_cli, phantom_copy, expect=65)
    assert "desc-metastases_dseg.nii.gz: a dseg must hold integer lesion labels" in line


def test_probability_mask_is_thresholded_with_a_warning(run_cli, phantom_copy):
    f = phantom_copy / f"{MASK}.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, data * 0.7)
    res = plan(run_cli, phantom_copy)
    assert any(f"{MASK}.nii.gz: mask values go up to 0.7" in w for w in res.warnings())


def test_tb1map_entirely_nan(run_cli, phantom_copy):
    f = phantom_copy / f"{B1}.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, np.full(data.shape, np.nan, np.float32))
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{B1}.nii.gz: every voxel is NaN or Inf" in line
    plan(run_cli, phantom_copy, "--b1-correction", "off")      # the documented way out


def test_tb1map_without_a_positive_value(run_cli, phantom_copy):
    f = phantom_copy / f"{B1}.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, -np.abs(data.astype(np.float32)) - 0.1)
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{B1}.nii.gz: the TB1map has no positive value" in line
    assert "--b1-correction off" in line


def test_tb1map_4d(run_cli, phantom_copy):
    f = phantom_copy / f"{B1}.nii.gz"
    _, data = rk.load(f)
    rk.save_like(f, np.stack([data, data], axis=-1))
    line = first_line(run_cli, phantom_copy, expect=65)
    assert f"{B1}.nii.gz is 4D" in line


def test_tb1map_whose_intended_for_lists_no_vfa_file(run_cli, phantom_copy):
    """Before the fix the map was silently dropped (no B1 correction, no word about it)."""
    rk.edit_json(phantom_copy / f"{B1}.json",
                 IntendedFor=[f"bids::{SUB}/ses-pre/anat/{SUB}_ses-pre_acq-other_T1w.nii.gz"])
    res = plan(run_cli, phantom_copy)
    warned = [w for w in res.warnings() if f"{B1}.nii.gz is not used for this VFA set" in w]
    assert len(warned) == 2          # the pre-contrast and the Dotarem VFA sets of ses-pre
    assert all("IntendedFor" in w for w in warned)
    assert "B1: none" in res.out


# --- participants.tsv and sessions.tsv (warnings, never a crash) ----------------------------

@pytest.mark.parametrize("content, expected", [
    (b"participant_id\tdose_mg_per_kg\tweight_kg\nsub-01\t100\n",
     "participants.tsv: weight_kg is n/a for sub-01"),
    (b"subject\tdose_mg_per_kg\nsub-01\t100\n", "participants.tsv has no row for sub-01"),
    (bytes(range(256)), "participants.tsv cannot be read"),
    (b"participant_id\tdose_mg_per_kg\tweight_kg\nsub-01\t100\t70\nsub-01\t50\t70\n",
     "participants.tsv has 2 rows for sub-01; using the first"),
    (b"participant_id\tdose_mg_per_kg\tweight_kg\nsub-01\t-100\t70\n",
     "dose_mg_per_kg '-100' of sub-01 is not a positive number; ignored"),
    (b"participant_id\tdose_mg_per_kg\tweight_kg\nsub-01\t100\tinf\n",
     "weight_kg 'inf' of sub-01 is not a positive number; ignored"),
])
def test_malformed_participants_tsv_is_a_warning(run_cli, phantom_copy, content, expected):
    (phantom_copy / "participants.tsv").write_bytes(content)
    res = plan(run_cli, phantom_copy)
    assert any(expected in w for w in res.warnings()), res.warnings()
    covariates = [ln for ln in res.out.splitlines() if "covariates:" in ln]
    assert not any("-100" in ln or "inf" in ln for ln in covariates)


@pytest.mark.parametrize("content, expected", [
    (b"session_id\tacq_time\nses-pre\tyesterday\nses-inj\t2021-99-99T00:00:00\n",
     "acq_time 'yesterday' of ses-pre is not an ISO date-time; ignored"),
    (b"\xff\xfe\x00garbage\x00", "sub-01_sessions.tsv: cannot be read"),
])
def test_malformed_sessions_tsv_is_a_warning(run_cli, phantom_copy, content, expected):
    (phantom_copy / SUB / f"{SUB}_sessions.tsv").write_bytes(content)
    res = plan(run_cli, phantom_copy)
    assert any(expected in w for w in res.warnings()), res.warnings()
    assert f"{SUB}: baseline ses-pre" in res.out


# --- paths and labels -----------------------------------------------------------------------

def test_symlink_loop_inside_the_dataset(run_cli, phantom_copy):
    (phantom_copy / SUB / "ses-pre" / "anat" / "loop").symlink_to(phantom_copy / SUB)
    res = plan(run_cli, phantom_copy)
    assert f"{SUB}: baseline ses-pre" in res.out


def test_paths_with_spaces_and_non_ascii(run_cli, phantom_src, tmp_path):
    ds = rk.copy_dataset(phantom_src, tmp_path / "essai clinique é" / "bids dir")
    res = plan(run_cli, ds, out=tmp_path / "sortie à" / "out")
    assert f"{SUB}: baseline ses-pre" in res.out


def test_empty_participant_label(run_cli, phantom_copy):
    line = first_line(run_cli, phantom_copy, "--participant-label", "sub-", expect=64)
    assert "--participant-label 'sub-'" in line and "letters and digits" in line


def test_output_dir_is_an_existing_file(run_cli, phantom_copy, tmp_path):
    out = tmp_path / "a_file"
    out.write_text("x")
    before = tree_state(phantom_copy)
    res = run_cli(phantom_copy, out, "participant")
    assert res.code == 73, res.err
    assert res.first_err_line.startswith(f"bids-agquant: error: OUTPUT_DIR {out} cannot be created")
    assert "Traceback" not in res.err and out.read_text() == "x"
    assert tree_state(phantom_copy) == before


def test_json_fix_names_the_sidecar_also_with_skip_bids_validation(run_cli, phantom_copy):
    (phantom_copy / f"{PRE}_T1w.json").write_text('{"MagneticFieldStrength": 3,, }')
    line = first_line(run_cli, phantom_copy, "--skip-bids-validation", expect=65)
    assert f"error: {PRE}_T1w.json: not valid JSON" in line
    json.loads((phantom_copy / f"{PRE}_flip-1_VFA.json").read_text())   # others untouched
