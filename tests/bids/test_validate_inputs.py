"""Unit checks of the pre-compute validation (bids_agquant.bids.validate) on real NIfTI files."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
import tinybids as tb  # noqa: E402

from bids_agquant.bids import validate as V  # noqa: E402
from bids_agquant.errors import BadDataError, MissingInputError  # noqa: E402


def test_grid_mismatch_is_the_corner_displacement():
    shape = (10, 20, 5)
    a = np.diag([1.0, 2.0, 3.0, 1.0])
    b = a.copy()
    b[:3, 3] = [3.0, 4.0, 0.0]                                  # a pure shift of 5 mm
    assert V.grid_mismatch_mm(shape, a, b) == pytest.approx(5.0)
    c = a.copy()
    c[0, 0] = 1.1                                               # 10 % larger x voxels
    assert V.grid_mismatch_mm(shape, a, c) == pytest.approx(0.1 * 9)


@pytest.mark.parametrize("meta, expected", [
    ({"FlipAngle": 10}, 10.0), ({"FlipAngle": "12.5"}, 12.5), ({"FlipAngle": 179.0}, 179.0)])
def test_flip_angle_accepts_numbers(meta, expected):
    assert V.flip_angle_deg(meta, "f") == expected


@pytest.mark.parametrize("meta, text", [
    ({}, "FlipAngle is missing"), ({"FlipAngle": None}, "FlipAngle is missing"),
    ({"FlipAngle": "ten"}, "not a number"), ({"FlipAngle": [3, 10]}, "not a number"),
    ({"FlipAngle": False}, "not a number"), ({"FlipAngle": "inf"}, "not finite"),
    ({"FlipAngle": -5}, "outside (0, 180)"), ({"FlipAngle": 180}, "outside (0, 180)")])
def test_flip_angle_errors(meta, text):
    with pytest.raises(BadDataError, match=r".*") as info:
        V.flip_angle_deg(meta, "sub-01_flip-1_VFA.nii.gz")
    assert text in str(info.value) and "sub-01_flip-1_VFA.nii.gz" in str(info.value)
    assert info.value.exit_code == 65


def test_repetition_time_prefers_excitation_and_refuses_ms():
    assert V.repetition_time_s({"RepetitionTimeExcitation": 0.015, "RepetitionTime": 2.0}, "f") == 0.015
    assert V.repetition_time_s({"RepetitionTime": 0.02}, "f") == 0.02
    assert V.repetition_time_s({"RepetitionTime": 1.0}, "f") == 1.0        # the limit itself
    for meta, text in (({"RepetitionTime": 25}, "milliseconds"), ({}, "neither"),
                       ({"RepetitionTimeExcitation": 0}, "not positive")):
        with pytest.raises(BadDataError, match=text):
            V.repetition_time_s(meta, "f")


def test_vfa_set_sorted_and_checked():
    files = [Path("c"), Path("a"), Path("b")]
    out_files, fas, tr = V.check_vfa_set(files, [20.0, 3.0, 10.0], [0.015] * 3, "set")
    assert [f.name for f in out_files] == ["a", "b", "c"] and fas == (3.0, 10.0, 20.0)
    assert tr == 0.015
    with pytest.raises(BadDataError, match="duplicate flip angle 10 deg in a and b"):
        V.check_vfa_set(files, [3.0, 10.0, 10.0000001], [0.015] * 3, "set")
    with pytest.raises(BadDataError, match="mixed repetition times"):
        V.check_vfa_set(files, [3.0, 10.0, 20.0], [0.015, 0.015, 0.016], "set")
    with pytest.raises(BadDataError, match="has 1 flip angle"):
        V.check_vfa_set(files[:1], [3.0], [0.015], "set")


def test_inspect_image_reports_shape_affine_and_non_finite(tmp_path):
    data = tb.textured((6, 7, 8))
    data[0, 0, 0] = np.nan
    f = tb.write_nifti(tmp_path / "x.nii.gz", data, tb.vfa_affine())
    info = V.inspect_image(f)
    assert info.shape == (6, 7, 8) and info.n_nonfinite == 1
    assert info.zooms == pytest.approx((2.0, 2.0, 2.0))
    np.testing.assert_allclose(info.affine, tb.vfa_affine())


def test_inspect_image_accepts_integer_images(tmp_path):
    data = (tb.textured((6, 7, 8)) * 10).astype(np.int16)
    info = V.inspect_image(tb.write_nifti(tmp_path / "x.nii", data))
    assert info.n_nonfinite == 0


def test_inspect_image_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match="does not exist"):
        V.inspect_image(tmp_path / "none.nii.gz")


def test_image_without_orientation_is_a_warning(tmp_path, caplog):
    img = nib.Nifti1Image(tb.textured((5, 5, 5)), np.eye(4))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    f = tmp_path / "x.nii.gz"
    nib.save(img, str(f))
    V.inspect_image(f)
    assert "neither qform nor sform is set" in caplog.text


def test_b1_scale():
    def info(median):
        return V.ImageInfo(Path("b1.nii.gz"), (2, 2, 2), np.eye(4), (1, 1, 1), 0,
                           median_positive=median)
    assert V.b1_scale(info(0.97)) == 1.0
    assert V.b1_scale(info(101.0)) == 0.01
    for median in (0.05, 0.3, 1.7, 4.8, 7.0, 900.0, None):
        with pytest.raises(BadDataError):
            V.b1_scale(info(median))


@pytest.mark.parametrize("units, median, scale", [
    ("%", 97.0, 0.01), ("percent", 8.0, None), ("1", 0.97, 1.0), ("factor", 97.0, None),
    ("a.u.", 97.0, 0.01), ("arbitrary", 1.02, 1.0), (None, 1.02, 1.0), ("Hz", 1.0, None),
    ("degrees", 60.0, None)])
def test_b1_scale_from_the_sidecar_units(units, median, scale):
    """Units decide when given (no guessing from the median); arbitrary units fall back to the
    median; a median the Units contradict, and units that are neither, are exit 65."""
    info = V.ImageInfo(Path("b1.nii.gz"), (2, 2, 2), np.eye(4), (1, 1, 1), 0,
                       median_positive=median)
    if scale is None:
        with pytest.raises(BadDataError, match="b1.nii.gz"):
            V.b1_scale(info, units=units)
    else:
        assert V.b1_scale(info, units=units) == scale


def test_b1_coverage_in_world_coordinates():
    def info(shape, zoom, origin):
        aff = np.diag([zoom, zoom, zoom, 1.0])
        aff[:3, 3] = origin
        return V.ImageInfo(Path("x"), shape, aff, (zoom,) * 3, 0)

    vfa = info((8, 8, 5), 2.0, [-7.5, -7.5, -4.5])         # centres -7.5 .. 6.5 (x), -4.5 .. 3.5 (z)
    assert V.check_b1_coverage(vfa, vfa) == 1.0             # same grid
    big = info((6, 6, 4), 4.0, [-10.0, -10.0, -6.0])         # edges -12 .. 12 (x), -8 .. 8 (z)
    assert V.check_b1_coverage(big, vfa) == 1.0             # another grid, resampled
    slab = info((6, 6, 2), 4.0, [-10.0, -10.0, -4.0])        # z edges -6 .. 2: 4 of 5 slices
    assert V.check_b1_coverage(slab, vfa) == pytest.approx(4 / 5)
    small = info((3, 3, 2), 4.0, [-4.0, -4.0, -2.0])         # edges -6 .. 6 (x, y), -4 .. 4 (z)
    assert V.b1_box_coverage(small, vfa) == pytest.approx(0.75 * 0.75 * 0.8)
    with pytest.raises(BadDataError, match="covers 45 % of the VFA"):
        V.check_b1_coverage(small, vfa)


def test_qform_rounding_near_180_degrees_is_not_a_disagreement(tmp_path):
    """A qform stores a float32 quaternion: near a half turn it is off by ~0.1 mm; that passes."""
    angle = np.deg2rad(179.98)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.deg2rad(7.0)
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-1.0, 1.0, 1.0])          # LAS-like, det -1
    aff[:3, 3] = [90.0, -110.0, -80.0]
    f = tb.write_nifti(tmp_path / "x.nii.gz", tb.textured((180, 220, 4)), aff)
    hdr = nib.load(f).header
    gap = V.grid_mismatch_mm((180, 220, 4), hdr.get_qform(), hdr.get_sform())
    assert gap < 0.5                                        # some rounding is expected ...
    V.inspect_image(f)                                      # ... and accepted
