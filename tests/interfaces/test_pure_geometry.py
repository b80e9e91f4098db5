"""bids_agquant.qmri.geometry: affine maths and resampling on arrays, against analytic values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bids_agquant.qmri import geometry as G


def oblique_affine(voxel_mm=(0.9, 1.1, 1.5), deg=(12, -7, 20), origin=(-40.0, 12.0, 5.0)):
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", deg, degrees=True).as_matrix() @ np.diag(voxel_mm)
    a[:3, 3] = origin
    return a


def translation(d):
    m = np.eye(4)
    m[:3, 3] = d
    return m


def test_voxel_sizes_and_volume_of_a_rotated_anisotropic_grid():
    aff = oblique_affine((0.9, 1.1, 1.5))
    np.testing.assert_allclose(G.voxel_sizes(aff), [0.9, 1.1, 1.5], rtol=1e-12)
    assert G.voxel_volume_mm3(aff) == pytest.approx(0.9 * 1.1 * 1.5, rel=1e-12)


def test_a_sphere_through_an_oblique_affine_has_its_analytic_volume_and_centre():
    aff = oblique_affine()
    shape = (60, 50, 40)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    world = G.voxel_to_world(ijk, aff)
    centre = G.voxel_to_world(np.array([30.3, 24.6, 19.8]), aff)
    r = 15.0
    sphere = np.linalg.norm(world - centre, axis=-1) <= r
    volume = sphere.sum() * G.voxel_volume_mm3(aff)
    assert volume == pytest.approx(4.0 / 3.0 * math.pi * r ** 3, rel=0.01)
    np.testing.assert_allclose(G.centroid_world(sphere, aff), centre, atol=0.05)


def test_centroid_of_an_empty_mask_is_nan_and_of_one_voxel_its_centre():
    aff = oblique_affine()
    assert all(math.isnan(v) for v in G.centroid_world(np.zeros((3, 3, 3), bool), aff))
    one = np.zeros((3, 3, 3), bool)
    one[1, 2, 0] = True
    np.testing.assert_allclose(G.centroid_world(one, aff), aff[:3, :3] @ [1, 2, 0] + aff[:3, 3])


def test_ras_lps_is_an_involution_and_compose_is_the_matrix_chain():
    a, b = translation([1.0, -2.0, 3.0]), translation([0.5, 0.5, -1.0])
    b[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    np.testing.assert_allclose(G.ras_to_lps_matrix(G.ras_to_lps_matrix(b)), b)
    np.testing.assert_allclose(G.ras_to_lps_matrix(a)[:3, 3], [-1.0, 2.0, 3.0])
    np.testing.assert_allclose(G.compose([a, b]), a @ b)
    np.testing.assert_allclose(G.compose([]), np.eye(4))


def test_identity_resampling_reproduces_the_array():
    data = np.random.default_rng(0).random((9, 8, 7)).astype(np.float32)
    for aff, inner in ((np.diag([2.0, 1.0, 3.0, 1.0]), np.s_[:, :, :]),
                       (oblique_affine(), np.s_[1:-1, 1:-1, 1:-1])):   # round-off at the edge
        for order in (0, 1):
            out = G.resample(data, aff, data.shape, aff, None, order=order)
            np.testing.assert_allclose(out[inner], data[inner], rtol=0, atol=1e-6)
    labels = (data > 0.5).astype(np.int16) * 7
    aff = np.diag([2.0, 1.0, 3.0, 1.0])
    out = G.resample(labels, aff, labels.shape, aff, np.eye(4), order=0)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, labels)


def test_a_translation_shifts_the_array_by_whole_voxels():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    data = np.random.default_rng(1).random((10, 6, 5))
    # T_target<-source maps a target point to the source point 4 mm further right (RAS +x):
    # out[i] = data[i + 2] along the first axis, outside the source field of view: fill.
    t_lps = G.ras_to_lps_matrix(translation([4.0, 0.0, 0.0]))
    out = G.resample(data, aff, data.shape, aff, t_lps, order=1, dtype=np.float64)
    np.testing.assert_allclose(out[:-2], data[2:], atol=1e-12)
    assert np.isnan(out[-2:]).all()
    out0 = G.resample(data, aff, data.shape, aff, t_lps, order=0, fill=-1.0, dtype=np.float64)
    np.testing.assert_array_equal(out0[:-2], data[2:])
    assert (out0[-2:] == -1.0).all()


def test_a_half_voxel_shift_interpolates_linearly():
    aff = np.eye(4)
    ramp = np.broadcast_to(np.arange(8.0)[:, None, None] * 3.0, (8, 4, 4)).copy()
    out = G.resample(ramp, aff, ramp.shape, aff, G.ras_to_lps_matrix(translation([0.5, 0, 0])),
                     dtype=np.float64)
    np.testing.assert_allclose(out[:-1], ramp[:-1] + 1.5, atol=1e-12)


def test_nan_aware_resampling_does_not_spread_a_nan():
    aff = np.eye(4)
    data = np.full((8, 8, 8), 5.0)
    data[4, 4, 4] = np.nan
    shift = G.ras_to_lps_matrix(translation([0.25, 0.0, 0.0]))
    plain = G.resample(data, aff, data.shape, aff, shift, dtype=np.float64)
    aware = G.resample(data, aff, data.shape, aff, shift, nan_aware=True, dtype=np.float64)
    assert np.isnan(plain[3:5, 4, 4]).all()                # linear: the NaN reaches 2 voxels
    # NaN-aware: only the point with 3/4 of its weight on the NaN is NaN (and outside the FOV)
    nan = np.zeros(data.shape, bool)
    nan[4, 4, 4] = nan[-1] = True
    np.testing.assert_array_equal(np.isnan(aware), nan)
    np.testing.assert_allclose(aware[~nan], 5.0)
    (many,) = G.resample_many([data], aff, data.shape, aff, shift, dtype=np.float64)
    np.testing.assert_allclose(many, aware, rtol=1e-12)


def test_resample_many_is_nan_where_any_map_is_nan():
    aff = np.eye(4)
    a = np.full((6, 6, 6), 1.0)
    b = np.full((6, 6, 6), 2.0)
    b[2:4, 2:4, 2:4] = np.nan
    ra, rb = G.resample_many([a, b], aff, a.shape, aff, None, dtype=np.float64)
    assert np.array_equal(np.isnan(ra), np.isnan(b)) and np.array_equal(np.isnan(rb), np.isnan(b))
    np.testing.assert_allclose(ra[~np.isnan(b)], 1.0)


@pytest.mark.parametrize("deg", [(0, 0, 0), (12, -7, 20), (-15, 30, 5)])
def test_resample_mask_within_its_box_is_the_whole_volume_nearest_neighbour(deg):
    """A small mask of a coarse oblique grid onto a fine grid through a rotation: the boxed
    resampling equals the whole-volume nearest-neighbour one voxel for voxel."""
    rng = np.random.default_rng(3)
    source = oblique_affine((2.0, 2.0, 3.0), deg)
    target = oblique_affine((1.0, 1.0, 1.0), (0, 0, 0), origin=(-20.0, -5.0, -10.0))
    mask = np.zeros((30, 30, 20), bool)
    mask[8:20, 5:17, 6:14] = rng.random((12, 12, 8)) > 0.4
    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("xyz", (4, -3, 6), degrees=True).as_matrix()
    rotation[:3, 3] = (2.0, -1.0, 3.0)
    shape = (90, 80, 70)
    whole = G.resample(mask.astype(np.uint8), source, shape, target, rotation, order=0) > 0
    boxed = G.resample_mask(mask, source, shape, target, rotation)
    assert whole.sum() > 1000                            # the mask lands inside the target
    np.testing.assert_array_equal(boxed, whole)
    assert not G.resample_mask(np.zeros_like(mask), source, shape, target, rotation).any()


@pytest.mark.parametrize("deg", [(0, 0, 0), (12, -7, 20)])
def test_resample_many_of_a_map_nan_outside_a_region_equals_the_whole_volume_resampling(deg):
    """Maps finite only in a region (a brain in a head) through a rotation onto a finer grid:
    the boxed resampling equals the NaN-aware whole-volume one, NaN for NaN, value for value."""
    rng = np.random.default_rng(5)
    source = oblique_affine((2.0, 2.0, 3.0), deg)
    target = oblique_affine((1.0, 1.0, 1.0), (0, 0, 0), origin=(-20.0, -5.0, -10.0))
    region = np.zeros((30, 30, 20), bool)
    region[6:21, 4:18, 5:15] = rng.random((15, 14, 10)) > 0.1
    a = np.where(region, rng.random(region.shape) + 1.0, np.nan)
    b = np.where(region, rng.random(region.shape), np.nan)
    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("xyz", (4, -3, 6), degrees=True).as_matrix()
    rotation[:3, 3] = (2.0, -1.0, 3.0)
    shape = (90, 80, 70)
    ra, rb = G.resample_many([a, b], source, shape, target, rotation, dtype=np.float64)
    whole_a = G.resample(a, source, shape, target, rotation, nan_aware=True, dtype=np.float64)
    assert np.isfinite(whole_a).sum() > 5000
    np.testing.assert_array_equal(np.isnan(ra), np.isnan(whole_a))
    np.testing.assert_allclose(ra, whole_a, rtol=1e-10, equal_nan=True)
    assert np.array_equal(np.isnan(rb), np.isnan(ra))
    empty = G.resample_many([np.full(region.shape, np.nan)], source, shape, target, rotation)
    assert np.isnan(empty[0]).all() and empty[0].shape == shape


@pytest.mark.parametrize("reach_mm", [0.0, 2.5, 7.0])
def test_boxed_distances_equal_the_whole_volume_transform(reach_mm):
    """distance_to_mask_mm within its reach and depth_in_mask_mm everywhere equal scipy's
    whole-volume Euclidean distance transforms, for a mask touching the array's edge too."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    mask = np.zeros((40, 36, 30), bool)
    mask[10:22, 8:20, 0:12] = rng.random((12, 12, 12)) > 0.3      # touches the z = 0 face
    spacing = (1.0, 1.5, 2.0)
    whole_out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    boxed_out = G.distance_to_mask_mm(mask, spacing, reach_mm)
    near = whole_out <= reach_mm
    np.testing.assert_array_equal(boxed_out[near], whole_out[near])
    assert (boxed_out[~near] > reach_mm).all()
    assert np.isinf(boxed_out).any()                              # the box is smaller
    whole_in = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    np.testing.assert_array_equal(G.depth_in_mask_mm(mask, spacing), whole_in)
    none = np.zeros_like(mask)
    assert np.isinf(G.distance_to_mask_mm(none, spacing, 3.0)).all()
    assert not G.depth_in_mask_mm(none, spacing).any()


def test_block_average_means_blocks_and_keeps_world_positions():
    aff = oblique_affine((1.0, 1.0, 1.0))
    data = np.random.default_rng(2).random((7, 6, 9)).astype(np.float32)
    small, small_aff = G.block_average(data, aff, 3)
    assert small.shape == (2, 2, 3)
    assert small[1, 0, 2] == pytest.approx(data[3:6, 0:3, 6:9].mean(), rel=1e-6)
    block_centre = G.voxel_to_world(np.array([4.0, 1.0, 7.0]), aff)   # centre of that block
    np.testing.assert_allclose(G.voxel_to_world(np.array([1, 0, 2]), small_aff), block_centre)
    np.testing.assert_allclose(G.voxel_sizes(small_aff), 3.0)
    same, same_aff = G.block_average(data, aff, 1)
    assert same is data and same_aff is aff


@pytest.mark.parametrize("voxel, spacing, factor", [(0.5, 2.0, 4), (1.0, 2.0, 2), (0.9, 2.0, 2),
                                                    (2.0, 2.0, 1), (3.0, 2.0, 1)])
def test_downsample_factor(voxel, spacing, factor):
    assert G.downsample_factor(np.diag([voxel, voxel * 2, voxel, 1.0]), spacing) == factor


@pytest.mark.parametrize("spacing, factor", [(2.0, 2), (3.0, 3)])
def test_downsample_factor_ignores_rounding_of_an_oblique_affine(spacing, factor):
    # an oblique 1 mm grid: its edges come out as 1.00000002 mm, still block size 2 (3) for 2 mm (3 mm)
    aff = oblique_affine((1.0, 1.0, 1.0))
    aff[:3, :3] *= 1.0 + 2e-8
    assert G.voxel_sizes(aff).min() > 1.0
    assert G.downsample_factor(aff, spacing) == factor


@pytest.mark.parametrize("codes", ["LAS", "LPS", "ASR", "SLA", "IPL"])
def test_reindexing_reads_a_reoriented_copy_back_exactly(codes):
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    data = np.random.default_rng(4).random((5, 6, 7)).astype(np.float32)
    aff = oblique_affine((1.0, 1.2, 2.0))
    copy = nib.Nifti1Image(data, aff).as_reoriented(
        ornt_transform(io_orientation(aff), axcodes2ornt(codes)))
    how = G.reindexing(copy.shape, copy.affine, data.shape, aff, 1e-3)
    assert how is not None
    assert np.array_equal(G.reindexed(np.asanyarray(copy.dataobj), how), data)


def test_reindexing_refuses_other_voxel_centres():
    aff = oblique_affine((1.0, 1.0, 1.0))
    shifted = aff.copy()
    shifted[:3, 3] += 0.5                                        # half a voxel off
    assert G.reindexing((5, 6, 7), shifted, (5, 6, 7), aff, 0.25) is None
    assert G.reindexing((5, 6, 7), aff, (6, 5, 7), aff, 0.25) is None      # other shape
    finer = aff @ np.diag([0.5, 0.5, 0.5, 1.0])
    assert G.reindexing((10, 12, 14), finer, (5, 6, 7), aff, 0.25) is None
