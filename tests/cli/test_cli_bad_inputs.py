"""Every bad input of docs/cli.md: the exit code, the one line the user sees, and no traceback.

Each test copies a small dataset made by the digital phantom (bids_agquant.simulate: oblique
grids, int16 images with scaling, converter-style sidecars), breaks one thing, runs the real CLI
in-process (``main(argv)``; pybids and nibabel for real) and checks: exit code, that the first
stderr line names the file/option and says what to do, that no traceback is printed without
``-v``, and that nothing in BIDS_DIR changed. ``--print-plan`` stops before any computation.
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import tinybids as tb
from testkit import run_checked

SUB = "sub-01"
MASK = Path("derivatives/lesions/sub-01/ses-D0/anat/sub-01_ses-D0_label-metastasis_mask.nii.gz")


@pytest.fixture(scope="module")
def phantom_template(tmp_path_factory):
    """Phantom: sub-01, ses-D0 (pre + Dotarem), ses-D1 (AGuIX), 4 flip angles, TB1maps, mask."""
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("phantom_template")
    simulate.simulate_dataset(root / "bids", preset="small", n_participants=1,
                              sessions=["D0", "D1"], seed=7)
    return root / "bids"


@pytest.fixture
def short_ds(phantom_template, tmp_path):
    """A fresh copy of the phantom dataset, to be broken by one test."""
    return Path(shutil.copytree(phantom_template, tmp_path / "bids", symlinks=True))


def anat(ds, ses="D0"):
    return ds / SUB / f"ses-{ses}" / "anat"


def b1_path(ds, ses="D0"):
    return ds / SUB / f"ses-{ses}" / "fmap" / f"{SUB}_ses-{ses}_TB1map.nii.gz"


def load(path):
    img = nib.load(str(path))
    return img.get_fdata(dtype=np.float32), img.affine


def rewrite(path, data=None, affine=None, *, qform_affine=None, fn=None):
    """Rewrite an image as float32, keeping its grid unless ``affine`` is given."""
    arr, aff = load(path)
    arr = fn(arr) if fn is not None else (arr if data is None else data)
    tb.write_nifti(path, np.asarray(arr, np.float32), aff if affine is None else affine,
                   qform_affine=qform_affine)


def err(run_cli, ds, *args, expect, out=None):
    return run_checked(run_cli, ds, "--print-plan", *args, out=out, expect=expect).first_err_line


def test_the_unbroken_phantom_passes(run_cli, short_ds):
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "VFA: 4 flip angles (2, 5, 10, 15 deg), TR 6 ms, 3 T" in res.out
    assert "ses-D1 AGuIX (agent AGuIX; pre: ses-D0)" in res.out


# --- metadata -------------------------------------------------------------------------------

def test_missing_flip_angle(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-2_VFA.json", FlipAngle=None)
    line = err(run_cli, short_ds, expect=65)
    assert f"{SUB}_ses-D0_flip-2_VFA.nii.gz" in line and "FlipAngle is missing" in line
    assert "degrees" in line


@pytest.mark.parametrize("value", ["ten", [3, 10], True, "NaN"])
def test_non_numeric_flip_angle(run_cli, short_ds, value):
    tb.edit_json(anat(short_ds, "D1") / f"{SUB}_ses-D1_ce-AGuIX_flip-3_VFA.json", FlipAngle=value)
    line = err(run_cli, short_ds, expect=65)
    assert f"{SUB}_ses-D1_ce-AGuIX_flip-3_VFA.nii.gz" in line and "FlipAngle" in line


def test_flip_angle_out_of_range(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-1_VFA.json", FlipAngle=0)
    assert "outside (0, 180)" in err(run_cli, short_ds, expect=65)


def test_bad_value_in_an_inherited_sidecar_names_that_json(run_cli, short_ds):
    """BIDS inheritance: a session-level VFA JSON gives TR to every flip angle; a bad value
    there is reported with the image and the JSON file to edit."""
    shared = anat(short_ds) / f"{SUB}_ses-D0_VFA.json"
    tb.write_json(shared, {"RepetitionTimeExcitation": "6 ms"})
    for i in (1, 2, 3, 4):
        tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-{i}_VFA.json",
                     RepetitionTimeExcitation=None)
    line = err(run_cli, short_ds, expect=65)
    assert f"{SUB}_ses-D0_flip-1_VFA.nii.gz: RepetitionTimeExcitation = '6 ms'" in line
    assert f"(in {SUB}/ses-D0/anat/{SUB}_ses-D0_VFA.json)" in line


def test_own_sidecar_is_named_for_a_bad_flip_angle(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-3_VFA.json", FlipAngle=200)
    line = err(run_cli, short_ds, expect=65)
    assert f"(in {SUB}/ses-D0/anat/{SUB}_ses-D0_flip-3_VFA.json)" in line


@pytest.mark.parametrize("value", ["3T", 3000, -1.5])
def test_field_strength_that_is_not_tesla(run_cli, short_ds, value):
    """The relaxivity depends on the field: a value the app cannot read as tesla is refused,
    not replaced by the 3 T default."""
    for f in anat(short_ds, "D1").glob("*_VFA.json"):
        tb.edit_json(f, MagneticFieldStrength=value)
    line = err(run_cli, short_ds, expect=65)
    assert "MagneticFieldStrength" in line and "_ses-D1_ce-AGuIX_flip-1_VFA.json)" in line


def test_mixed_tr_in_one_vfa_set(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_ce-Dotarem_flip-2_VFA.json",
                 RepetitionTimeExcitation=0.02)
    line = err(run_cli, short_ds, expect=65)
    assert "mixed repetition times" in line and "ce-Dotarem_flip-2_VFA" in line


def test_tr_in_milliseconds_is_refused_not_guessed(run_cli, short_ds):
    for i in (1, 2, 3, 4):
        tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-{i}_VFA.json",
                     RepetitionTimeExcitation=6, RepetitionTime=6)
    line = err(run_cli, short_ds, expect=65)
    assert "looks like milliseconds" in line and "(0.006)" in line


def test_missing_tr(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-1_VFA.json", RepetitionTimeExcitation=None,
                 RepetitionTime=None)
    line = err(run_cli, short_ds, expect=65)
    assert "RepetitionTimeExcitation nor RepetitionTime" in line and "flip-1_VFA" in line


def test_repetition_time_is_the_fallback(run_cli, short_ds):
    for i in (1, 2, 3, 4):
        tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-{i}_VFA.json",
                     RepetitionTimeExcitation=None, RepetitionTime=0.012)
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "TR 12 ms" in res.out and "TR 6 ms" in res.out


def test_fewer_than_two_flip_angles(run_cli, short_ds):
    for i in (2, 3, 4):
        for ext in (".nii.gz", ".json"):
            (anat(short_ds, "D1") / f"{SUB}_ses-D1_ce-AGuIX_flip-{i}_VFA{ext}").unlink()
    line = err(run_cli, short_ds, expect=65)
    assert "1 flip angle" in line and "two or more" in line and "ses-D1" in line


def test_duplicate_flip_angles(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-3_VFA.json", FlipAngle=5.0)
    line = err(run_cli, short_ds, expect=65)
    assert "duplicate flip angle 5 deg" in line
    assert f"{SUB}_ses-D0_flip-2_VFA.nii.gz" in line and f"{SUB}_ses-D0_flip-3_VFA.nii.gz" in line


# --- image files ----------------------------------------------------------------------------

def test_truncated_nii_gz(run_cli, short_ds):
    f = anat(short_ds, "D1") / f"{SUB}_ses-D1_ce-AGuIX_T1w.nii.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) * 2 // 3])
    line = err(run_cli, short_ds, expect=65)
    assert f.name in line and "truncated or corrupt" in line


def test_corrupt_nii_gz(run_cli, short_ds):
    f = anat(short_ds) / f"{SUB}_ses-D0_flip-2_VFA.nii.gz"
    f.write_bytes(gzip.compress(b"this is not a NIfTI file" * 20))
    line = err(run_cli, short_ds, expect=65)
    assert f.name in line and "cannot read the NIfTI header (not a NIfTI file)" in line


def test_4d_where_3d_expected(run_cli, short_ds):
    f = anat(short_ds) / f"{SUB}_ses-D0_ce-Dotarem_flip-1_VFA.nii.gz"
    rewrite(f, fn=lambda a: np.stack([a] * 3, axis=-1))
    line = err(run_cli, short_ds, expect=65)
    assert f.name in line and "is 4D" in line and "3D" in line


def test_nan_and_inf_voxels_are_counted_not_fatal(run_cli, short_ds):
    f = anat(short_ds) / f"{SUB}_ses-D0_flip-2_VFA.nii.gz"
    data, _ = load(f)
    data[0, 0, :3] = np.nan
    data[1, 1, 0] = np.inf
    rewrite(f, data)
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert f"{f.name}: 4 non-finite voxels (NaN/Inf) of {data.size}" in res.out


def test_all_zero_image(run_cli, short_ds):
    f = anat(short_ds) / f"{SUB}_ses-D0_T1w.nii.gz"
    rewrite(f, fn=np.zeros_like)
    line = err(run_cli, short_ds, expect=65)
    assert f.name in line and "every voxel is 0" in line


def test_qform_sform_disagreement(run_cli, short_ds):
    f = anat(short_ds, "D1") / f"{SUB}_ses-D1_ce-AGuIX_T1w.nii.gz"
    _, aff = load(f)
    shifted = aff.copy()
    shifted[:3, 3] += [0.0, 5.0, 0.0]
    rewrite(f, qform_affine=shifted)
    line = err(run_cli, short_ds, expect=65)
    assert f.name in line and "qform and sform disagree" in line and "5.0 mm" in line


def test_non_invertible_affine(run_cli, short_ds):
    f = anat(short_ds) / f"{SUB}_ses-D0_flip-3_VFA.nii.gz"
    data, aff = load(f)
    img = nib.Nifti1Image(data, aff)
    singular = aff.copy()
    singular[:3, 2] = 0.0                      # the third voxel axis has no length
    img.set_sform(singular, code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(f))
    line = err(run_cli, short_ds, expect=65)
    assert f.name in line and "not invertible" in line


def test_broken_symlink_is_missing_input(run_cli, short_ds):
    f = anat(short_ds, "D1") / f"{SUB}_ses-D1_ce-AGuIX_flip-1_VFA.nii.gz"
    f.unlink()
    f.symlink_to(short_ds / ".git" / "annex" / "objects" / "missing")
    line = err(run_cli, short_ds, expect=66)
    assert f.name in line and "broken symbolic link" in line


# --- B1 maps --------------------------------------------------------------------------------

def test_tb1map_in_percent_is_converted_with_a_warning(run_cli, short_ds):
    rewrite(b1_path(short_ds), fn=lambda b1: 100.0 * b1)
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "sub-01_ses-D0_TB1map.nii.gz: TB1map values look like percent (median" in res.out
    assert "dividing by 100" in res.out
    assert "B1: sub-01/ses-D0/fmap/sub-01_ses-D0_TB1map.nii.gz (x0.01)" in res.out
    assert "B1: sub-01/ses-D1/fmap/sub-01_ses-D1_TB1map.nii.gz\n" in res.out


def test_tb1map_on_another_grid_covering_the_vfa_is_fine(run_cli, short_ds):
    f = b1_path(short_ds)
    data, aff = load(f)
    coarse = aff @ np.array([[2, 0, 0, -1.5], [0, 2, 0, -1.5], [0, 0, 2, -1.5], [0, 0, 0, 1.0]])
    shape = tuple(int(np.ceil(n / 2)) + 2 for n in data.shape)   # twice the voxel, wider FOV
    tb.write_nifti(f, np.full(shape, 1.02, np.float32), coarse)
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "(x0.01)" not in res.out and "does not cover" not in res.out


def _shifted_b1(ds, fraction):
    """Move the D1 TB1map by ``fraction`` of its slab along its third axis."""
    f = b1_path(ds, "D1")
    data, aff = load(f)
    moved = aff @ np.array([[1, 0, 0, 0], [0, 1, 0, 0],
                            [0, 0, 1, round(data.shape[2] * fraction)], [0, 0, 0, 1.0]])
    rewrite(f, affine=moved)


def test_tb1map_covering_too_little_of_the_vfa_field_of_view(run_cli, short_ds):
    _shifted_b1(short_ds, 0.75)                # three quarters of the VFA box outside
    line = err(run_cli, short_ds, expect=65)
    assert "sub-01_ses-D1_TB1map.nii.gz" in line and "covers" in line and "less than 50 %" in line
    assert "--b1-correction off" in line
    run_checked(run_cli, short_ds, "--print-plan", "--b1-correction", "off")


def test_lesion_outside_a_partial_tb1map_is_refused(run_cli, short_ds):
    """A lesion in the part of the head a B1 slab misses would get extrapolated B1: exit 65."""
    _shifted_b1(short_ds, 0.3)
    b1_data, b1_aff = load(b1_path(short_ds, "D1"))
    mask, m_aff = load(short_ds / MASK)
    t1w, _ = load(anat(short_ds) / f"{SUB}_ses-D0_T1w.nii.gz")
    ijk = np.indices(mask.shape).reshape(3, -1)
    in_b1 = np.linalg.inv(b1_aff) @ (m_aff @ np.vstack([ijk, np.ones(ijk.shape[1])]))
    inside = np.all((in_b1[:3] >= -0.5)
                    & (in_b1[:3] <= np.array(b1_data.shape)[:, None] - 0.5), axis=0)
    head = (t1w > 0.5 * np.percentile(t1w, 99)).reshape(-1)
    outside_head = np.flatnonzero(head & ~inside)
    assert outside_head.size, "the shifted slab must miss part of the head"
    i, j, k = np.unravel_index(outside_head[outside_head.size // 2], mask.shape)
    lesion = np.zeros_like(mask)
    lesion[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2] = 1
    rewrite(short_ds / MASK, data=lesion)
    line = err(run_cli, short_ds, expect=65)
    assert "sub-01_ses-D1_TB1map.nii.gz" in line and "lesion 1 of" in line
    assert "outside the TB1map's field of view" in line


def test_tb1map_slab_missing_part_of_the_vfa_box_is_accepted(run_cli, short_ds):
    _shifted_b1(short_ds, 0.2)                 # a fifth of the VFA box outside: the usual slab
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "% of the VFA field of view (head voxels outside filled by extrapolation)" in res.out


@pytest.mark.parametrize("scale", [0.01, 0.3, 5.0, 1000.0])
def test_implausible_tb1map(run_cli, short_ds, scale):
    """A map 5x too large (a converter's scaling) is neither read as percent nor accepted as a
    factor of 5: outside the plausible range of a B1+ factor or of percent, exit 65."""
    rewrite(b1_path(short_ds), fn=lambda b1: b1 * scale)
    line = err(run_cli, short_ds, expect=65)
    assert "neither a B1+ factor (0.4-1.6) nor percent (40-160)" in line
    assert "sub-01_ses-D0_TB1map.nii.gz" in line


def test_tb1map_units_decide_and_must_agree_with_the_map(run_cli, short_ds):
    """``Units`` in the TB1map sidecar: percent maps are converted without guessing; a factor map
    that says it is percent is exit 65 naming the file."""
    rewrite(b1_path(short_ds), fn=lambda b1: b1 * 100.0)
    tb.edit_json(tb.sidecar(b1_path(short_ds)), Units="%")
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "(x0.01)" in res.out and "look like percent" not in res.out
    rewrite(b1_path(short_ds), fn=lambda b1: b1 / 100.0)           # a factor again, "%" kept
    line = err(run_cli, short_ds, expect=65)
    assert "sub-01_ses-D0_TB1map.nii.gz" in line and "Units = '%'" in line
    tb.edit_json(tb.sidecar(b1_path(short_ds)), Units="Hz")
    line = err(run_cli, short_ds, expect=65)
    assert "Units = 'Hz'" in line and "neither a B1+ factor nor percent" in line


def test_tb1map_in_percent_is_converted(run_cli, short_ds):
    rewrite(b1_path(short_ds), fn=lambda b1: b1 * 100.0)
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "look like percent" in res.out and "(x0.01)" in res.out


# --- lesion masks ---------------------------------------------------------------------------

def _reoriented(path, codes):
    """The image of ``path`` with its voxel axes in the order/direction ``codes`` (the same
    voxels in the world, as another converter would store them)."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    img = nib.load(str(path))
    return img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(codes)))


@pytest.mark.parametrize("codes", ["LPS", "ASR"])
def test_lesion_mask_with_flipped_or_permuted_axes_is_reindexed(run_cli, short_ds, codes):
    """The reference grid with its axes flipped / permuted: accepted without warning, and the
    lesions land on exactly the voxels of the original mask."""
    from bids_agquant.interfaces.lesions import _lesions_in_reference

    original = short_ds.parent / "original_mask.nii.gz"
    shutil.copy(short_ds / MASK, original)
    moved = _reoriented(original, codes)
    stored = np.asanyarray(nib.load(str(original)).dataobj)
    assert moved.shape != stored.shape or not np.array_equal(moved.dataobj, stored)
    nib.save(moved, str(short_ds / MASK))
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "resampled" not in res.out and "matches no T1w" not in res.out
    ref = nib.load(str(anat(short_ds) / f"{SUB}_ses-D0_T1w.nii.gz"))
    want, _ = _lesions_in_reference(original, "mask", None, ref.shape, ref.affine)
    got, regions = _lesions_in_reference(short_ds / MASK, "mask", None, ref.shape, ref.affine)
    assert want.any() and np.array_equal(got, want)


def test_lesion_mask_on_another_grid_is_resampled_with_a_warning(run_cli, short_ds):
    """A mask on a grid of its own in the session's world (here: the T1w grid at half the voxel
    size): resampled nearest-neighbour, with the diameter change in the warning."""
    data, aff = load(short_ds / MASK)
    fine = np.repeat(np.repeat(np.repeat(data, 2, 0), 2, 1), 2, 2)
    half = aff @ np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 0.5, -0.25],
                           [0, 0, 0, 1.0]])
    tb.write_nifti(short_ds / MASK, fine.astype(np.float32), half)
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert MASK.name in res.out and "resampled (nearest neighbour)" in res.out
    change = float(res.out.split("change by up to ")[1].split(" mm")[0])
    assert 0.0 <= change <= 1.5 * float(np.abs(aff[:3, :3]).max())


def test_lesion_mask_outside_every_t1w(run_cli, short_ds):
    data, aff = load(short_ds / MASK)
    away = aff.copy()
    away[:3, 3] += 500.0                                     # the same voxels 50 cm away
    rewrite(short_ds / MASK, affine=away)
    line = err(run_cli, short_ds, expect=65)
    assert MASK.name in line and "vanish when the mask is resampled" in line


def test_mask_with_no_lesion(run_cli, short_ds):
    rewrite(short_ds / MASK, fn=np.zeros_like)
    line = err(run_cli, short_ds, expect=65)
    assert MASK.name in line and "no lesion" in line


def test_lesion_masks_option_pointing_nowhere(run_cli, short_ds, tmp_path):
    line = err(run_cli, short_ds, "--lesion-masks", tmp_path / "nope", expect=66)
    assert "--lesion-masks" in line and "nope" in line


# --- participants, sessions, agents ---------------------------------------------------------

def test_participant_label_that_does_not_exist(run_cli, short_ds):
    line = err(run_cli, short_ds, "--participant-label", "sub-07", expect=66)
    assert "--participant-label 07: no such participant" in line and "available: 01" in line


@pytest.mark.parametrize("label", ["../01", "sub-01/..", "/tmp", "01;rm"])
def test_participant_label_with_path_characters(run_cli, short_ds, label):
    line = err(run_cli, short_ds, "--participant-label", label, expect=64)
    assert "--participant-label" in line and "letters and digits" in line


def test_no_baseline_pre_contrast_t1w(run_cli, short_ds):
    for f in anat(short_ds).glob(f"{SUB}_ses-D0_T1w.*"):
        f.unlink()
    line = err(run_cli, short_ds, expect=66)
    assert "no baseline pre-contrast T1w" in line and "sub-01" in line


def test_post_contrast_without_any_pre(run_cli, short_ds):
    for f in anat(short_ds).iterdir():
        if "_ce-" not in f.name:
            f.unlink()
    line = err(run_cli, short_ds, expect=66)
    assert "post-contrast images" in line and "no pre-contrast T1w or VFA" in line


def rename_agent(ds, old, new, ses="D1", sidecar_agent=None):
    for f in list(anat(ds, ses).iterdir()):
        if f"_ce-{old}_" in f.name:
            target = f.with_name(f.name.replace(f"_ce-{old}_", f"_ce-{new}_"))
            f.rename(target)
            if target.suffix == ".json":
                tb.edit_json(target, ContrastBolusAgent=sidecar_agent)


def test_unknown_contrast_agent_needs_relaxivity(run_cli, short_ds):
    rename_agent(short_ds, "AGuIX", "Gadovist")
    line = err(run_cli, short_ds, expect=65)
    assert "unknown contrast agent 'Gadovist'" in line and "--relaxivity Gadovist=" in line
    line = err(run_cli, short_ds, "--relaxivity", "Gadovist=4.5", expect=65)
    # the phantom's sessions.tsv says AGuIX for ses-D1: conflicting evidence
    assert "ce-Gadovist names Gadovist but sub-01/sub-01_sessions.tsv contrast_agent 'AGuIX'" in line
    tsv = short_ds / SUB / f"{SUB}_sessions.tsv"
    tsv.write_text(tsv.read_text().replace("AGuIX", "Gadovist"))
    res = run_checked(run_cli, short_ds, "--print-plan", "--relaxivity", "Gadovist=4.5")
    assert "ses-D1 Gadovist (agent Gadovist; pre: ses-D0)" in res.out


def test_baseline_session_that_does_not_exist(run_cli, short_ds):
    line = err(run_cli, short_ds, "--baseline-session", "D5", expect=66)
    assert "--baseline-session D5" in line and "D0, D1" in line


def test_baseline_session_without_pre_contrast_t1w(run_cli, short_ds):
    line = err(run_cli, short_ds, "--baseline-session", "D1", expect=66)
    assert "--baseline-session D1" in line and "no pre-contrast T1w" in line


def test_session_labels_that_match_nothing(run_cli, short_ds):
    line = err(run_cli, short_ds, "--session-label", "D99", expect=66)
    assert "--session-label D99" in line


def test_participants_tsv_missing_or_non_numeric_is_a_warning(run_cli, short_ds):
    (short_ds / "participants.tsv").write_text(
        "participant_id\tdose_mg_per_kg\tweight_kg\tprimary_tumor\nsub-01\tfifty\tn/a\tNSCLC\n")
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "dose_mg_per_kg 'fifty' of sub-01 is not a number; ignored" in res.out
    assert "weight_kg is n/a for sub-01" in res.out
    assert "covariates: dose_mg_per_kg=n/a, weight_kg=n/a, primary_tumor=NSCLC" in res.out
    (short_ds / "participants.tsv").unlink()
    res = run_checked(run_cli, short_ds, "--print-plan")
    assert "participants.tsv is missing" in res.out


# --- BIDS_DIR, OUTPUT_DIR, work dir ---------------------------------------------------------

def test_bids_dir_that_is_not_a_dataset(run_cli, tmp_path):
    (tmp_path / "notbids" / "sub-01").mkdir(parents=True)
    line = err(run_cli, tmp_path / "notbids", expect=66)
    assert "is not a BIDS dataset (no dataset_description.json)" in line


def test_bids_dir_that_does_not_exist(run_cli, tmp_path):
    res = run_cli(tmp_path / "nothing", tmp_path / "out", "participant")
    assert res.code == 66 and "does not exist" in res.first_err_line


def test_dataset_description_not_json(run_cli, short_ds):
    (short_ds / "dataset_description.json").write_text("{'Name': broken")
    line = err(run_cli, short_ds, expect=65)
    assert "dataset_description.json is not valid JSON" in line
    assert "--skip-bids-validation" in line


def test_dataset_description_without_bids_version(run_cli, short_ds):
    tb.write_json(short_ds / "dataset_description.json", {"Name": "x"})
    assert "lacks BIDSVersion" in err(run_cli, short_ds, expect=65)
    run_checked(run_cli, short_ds, "--print-plan", "--skip-bids-validation")


@pytest.mark.parametrize("where", ["", "sub-01", "sub-01/ses-D0", "derivatives"])
def test_output_dir_equal_to_or_inside_the_input(run_cli, short_ds, where):
    out = short_ds / where if where else short_ds
    line = err(run_cli, short_ds, out=out, expect=64)
    assert line.startswith(f"bids-agquant: error: OUTPUT_DIR {out} ")
    assert "derivatives/<name>" in line


def test_output_dir_containing_the_input(run_cli, short_ds):
    line = err(run_cli, short_ds, out=short_ds.parent, expect=64)
    assert "contains BIDS_DIR" in line


def test_output_under_bids_derivatives_is_allowed(run_cli, short_ds):
    res = run_checked(run_cli, short_ds, "--print-plan", out=short_ds / "derivatives" / "agquant")
    assert "sub-01: baseline ses-D0" in res.out


def test_work_dir_inside_the_input(run_cli, short_ds):
    line = err(run_cli, short_ds, "-w", short_ds / "work", expect=64)
    assert "--work-dir" in line and "inside BIDS_DIR" in line


def test_output_dir_not_writable(run_cli, short_ds, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = run_checked(run_cli, short_ds, out=blocker / "out", expect=73)
    assert res.first_err_line.startswith(f"bids-agquant: error: OUTPUT_DIR {blocker / 'out'} "
                                         "cannot be created or written")
    assert "writable location" in res.first_err_line


def test_work_dir_not_writable(run_cli, short_ds, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = run_checked(run_cli, short_ds, "-w", blocker / "work", expect=73)
    assert "--work-dir" in res.first_err_line and "cannot be created" in res.first_err_line


@pytest.mark.skipif(os.geteuid() != 0, reason="/proc is unwritable for everyone; check as root")
def test_output_dir_not_writable_even_for_root(run_cli, short_ds):
    res = run_checked(run_cli, short_ds, out=Path("/proc/bids_agquant_out"), expect=73)
    assert "cannot be created or written" in res.first_err_line


def test_use_plugin_file_missing(run_cli, short_ds, tmp_path):
    line = err(run_cli, short_ds, "--use-plugin", tmp_path / "none.yml", expect=66)
    assert "--use-plugin" in line and "no such file" in line


def test_errors_show_a_traceback_only_with_verbose(run_cli, short_ds):
    tb.edit_json(anat(short_ds) / f"{SUB}_ses-D0_flip-2_VFA.json", FlipAngle=None)
    res = run_cli(short_ds, short_ds.parent / "out", "participant", "--print-plan", "-v")
    assert res.code == 65
    assert res.first_err_line.startswith("bids-agquant: error: sub-01/ses-D0/anat/")
    assert "Traceback" in res.err


def test_print_plan_creates_nothing(run_cli, short_ds):
    out = short_ds.parent / "never_created"
    res = run_checked(run_cli, short_ds, "--print-plan", out=out)
    assert not out.exists()
    assert "ses-D1 AGuIX (agent AGuIX; pre: ses-D0)" in res.out


def test_read_only_input_copy(run_cli, short_ds, tmp_path):
    """The input may be read-only (a mounted archive): planning works and changes nothing."""
    ro = tmp_path / "ro"
    shutil.copytree(short_ds, ro)
    for p in sorted(ro.rglob("*"), reverse=True) + [ro]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        res = run_checked(run_cli, ro, "--print-plan")
        assert "sub-01: baseline ses-D0" in res.out
    finally:
        for p in [ro] + sorted(ro.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
