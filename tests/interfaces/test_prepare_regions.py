"""interfaces.lesions.prepare_regions: load -> the pure region functions (small NIfTI files)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bids_agquant.qmri import geometry as pure
from bids_agquant.interfaces import geometry as G
from bids_agquant.interfaces.lesions import prepare_regions
from bids_agquant.qmri.regions import Regions

SHAPE = (48, 48, 40)


def write_head(tmp_path, radius_mm):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = -(np.asarray(SHAPE) - 1.0)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1)
    world = pure.voxel_to_world(ijk, aff)
    r = np.linalg.norm(world, axis=-1)
    t1w = np.abs(np.random.default_rng(0).normal(0, 3.0, SHAPE)) + np.where(r <= radius_mm, 300, 0)
    lesion = (np.linalg.norm(world - [10.0, 0.0, 0.0], axis=-1) <= 5.0).astype(np.uint8)
    ref = G.save_like(t1w, aff, tmp_path / "t1w.nii")
    mask = G.save_like(lesion, aff, tmp_path / "lesion.nii", dtype=np.uint8)
    return ref, mask, lesion, aff


def test_regions_from_the_t1w_fallback(tmp_path):
    ref, mask, lesion, aff = write_head(tmp_path, 44.0)
    lesions, controls, brain, regions, affine, _ = prepare_regions(
        reference_file=ref, lesion_file=mask, seed=0, control_diameter_mm=12.0)
    np.testing.assert_array_equal(affine, aff)
    np.testing.assert_array_equal(lesions, lesion.astype(np.int32))      # one grid: as drawn
    assert regions.brain_mask_method.startswith("reference T1w above its Otsu threshold")
    assert list(regions.lesions) == ["1"] and regions.lesions["1"].n_voxels == lesion.sum()
    assert regions.control_diameter_mm == 12.0 and regions.control_warnings == ()
    assert sorted(regions.controls) == ["1", "2", "3"]
    assert brain[controls > 0].all() and not (controls[lesion > 0] > 0).any()
    assert regions.lesion_source == str(mask)
    assert Regions.from_dict(json.loads(json.dumps(regions.to_dict()))) == regions


def test_no_room_for_controls_is_a_warning_not_an_error(tmp_path):
    ref, _, _, _ = write_head(tmp_path, 14.0)          # brain eroded by 10 mm: a 4 mm ball
    _, controls, _, regions, _, _ = prepare_regions(reference_file=ref, control_diameter_mm=40.0)
    assert not controls.any() and regions.controls == {}
    assert regions.control_diameter_mm is None
    assert "control_diameter_mm" not in regions.to_dict()
    (message,) = regions.control_warnings
    assert message.startswith("no room for a control sphere")


def test_a_lesion_mask_on_another_grid_is_brought_in_by_nearest_neighbour(tmp_path):
    ref, _, lesion, aff = write_head(tmp_path, 44.0)
    fine = aff.copy()
    fine[:3, :3] /= 2.0                                    # 1 mm grid over the same field
    fine[:3, 3] -= 0.5
    up = np.repeat(np.repeat(np.repeat(lesion, 2, 0), 2, 1), 2, 2)
    path = G.save_like(up, fine, tmp_path / "fine.nii", dtype=np.uint8)
    lesions, _, _, regions, _, _ = prepare_regions(reference_file=ref, lesion_file=path,
                                                control_diameter_mm=12.0)
    assert regions.lesions["1"].n_voxels_input_grid == 8 * lesion.sum()
    assert regions.lesions["1"].volume_mm3 == pytest.approx(lesion.sum() * 8.0)
    assert abs(int((lesions > 0).sum()) - int(lesion.sum())) <= 0.1 * lesion.sum()
