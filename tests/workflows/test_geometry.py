"""Geometry conventions: nibabel affines vs ANTs images, transform files, resampling.

Small synthetic images; ANTs (antspyx) and scipy run for real.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_agquant.interfaces import geometry as G


def rotation(deg_xyz):
    ax, ay, az = np.deg2rad(deg_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid(deg_xyz, shift_mm):
    m = np.eye(4)
    m[:3, :3] = rotation(deg_xyz)
    m[:3, 3] = shift_mm
    return m


def oblique_affine(voxel_mm, deg_xyz, origin):
    a = np.eye(4)
    a[:3, :3] = rotation(deg_xyz) @ np.diag(voxel_mm) @ np.diag([-1, 1, 1])   # LAS-like
    a[:3, 3] = origin
    return a


def blob_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return (img - img.min()).astype(np.float32)


def test_ants_image_has_the_nibabel_geometry():
    ants = G.import_ants()
    aff = oblique_affine((1.5, 2.0, 3.0), (7, -4, 12), (30.0, -20.0, 10.0))
    img = G.to_ants(np.zeros((5, 6, 7), np.float32), aff, ants)
    for ijk in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        lps = np.asarray(ants.transform_index_to_physical_point(img, ijk))
        ras = aff[:3, :3] @ np.asarray(ijk, float) + aff[:3, 3]
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)


def test_transform_file_roundtrip(tmp_path):
    m = G.ras_to_lps_matrix(rigid((3, -2, 5), (4.0, -7.0, 2.5)))
    path = G.write_transform(m, tmp_path / "x.mat")
    np.testing.assert_allclose(G.read_transform(path), m, atol=1e-5)


def test_scipy_resampling_matches_antsApplyTransforms(tmp_path):
    """Our resampling through a transform file = ants.apply_transforms with that file."""
    ants = G.import_ants()
    src_aff = oblique_affine((2.0, 2.0, 3.0), (5, 3, -8), (40.0, -30.0, -20.0))
    ref_aff = oblique_affine((1.5, 1.5, 1.5), (-3, 6, 2), (35.0, -40.0, -25.0))
    src = blob_image((30, 30, 20))
    m = G.ras_to_lps_matrix(rigid((4, -3, 6), (3.0, -5.0, 2.0)))
    xfm = G.write_transform(m, tmp_path / "t.mat")
    ours = G.resample(src, src_aff, (36, 36, 30), ref_aff, G.read_transform(xfm), fill=0.0)
    theirs = ants.apply_transforms(fixed=G.to_ants(np.zeros((36, 36, 30)), ref_aff, ants),
                                   moving=G.to_ants(src, src_aff, ants), transformlist=[xfm],
                                   interpolator="linear").numpy()
    inside = ours != 0
    assert inside.mean() > 0.3
    np.testing.assert_allclose(ours[inside], theirs[inside], rtol=1e-4, atol=1e-4)


def test_nan_aware_resampling_keeps_nans_local_and_constants_constant():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    data = np.full((10, 10, 10), 3.0, np.float32)
    data[5, 5, 5] = np.nan
    out = G.resample(data, aff, (20, 20, 20), np.diag([1.0, 1.0, 1.0, 1.0]), None,
                     nan_aware=True)
    inside = out[1:18, 1:18, 1:18]
    # the NaN stays NaN where it dominates (its own centre) and does not spread further
    assert np.isnan(out[10, 10, 10]) and np.isnan(inside).sum() == 1
    np.testing.assert_allclose(inside[np.isfinite(inside)], 3.0, rtol=1e-6)
    assert np.isnan(out[19, 19, 19])                      # beyond the last source voxel centre
    plain = G.resample(data, aff, (20, 20, 20), np.diag([1.0, 1.0, 1.0, 1.0]), None)
    assert np.isnan(plain[9, 10, 10]) and not np.isnan(out[9, 10, 10])   # plain spreads it
    r1, m0 = G.resample_many([data, 2 * data], aff, (20, 20, 20), np.eye(4))
    np.testing.assert_array_equal(np.isnan(m0), np.isnan(out))
    np.testing.assert_allclose(m0[np.isfinite(m0)], 6.0, rtol=1e-6)
    assert np.array_equal(np.isnan(r1), np.isnan(m0))


def test_nearest_neighbour_keeps_integer_labels():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros((10, 10, 10), np.int32)
    labels[2:5, 2:5, 2:5] = 7
    out = G.resample(labels, aff, (20, 20, 20), np.eye(4), None, order=0)
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 7}


def test_block_average_keeps_world_positions():
    aff = oblique_affine((1.0, 1.0, 1.0), (10, 0, -5), (0.0, 0.0, 0.0))
    img = np.zeros((40, 40, 40), np.float32)
    img[20:24, 10:14, 30:34] = 1.0
    small, small_aff = G.block_average(img, aff, 2)
    c_big = aff[:3, :3] @ np.argwhere(img > 0).mean(0) + aff[:3, 3]
    w = small / small.sum()
    idx = np.stack(np.nonzero(w), 1)
    c_small = small_aff[:3, :3] @ (idx * w[w > 0][:, None]).sum(0) + small_aff[:3, 3]
    np.testing.assert_allclose(c_small, c_big, atol=1e-4)
    np.testing.assert_allclose(G.voxel_sizes(small_aff), 2.0)


@pytest.mark.parametrize("motion", [((4.0, -3.0, 5.0), (6.0, -8.0, 3.0))])
def test_rigid_registration_recovers_known_motion_and_is_deterministic(motion):
    """A smooth random volume moved by a known rigid transform is registered back."""
    from bids_agquant.interfaces.registration import register_rigid

    aff = oblique_affine((2.0, 2.0, 2.0), (0, 0, 0), (-48.0, -48.0, -40.0))
    shape = (48, 48, 40)
    fixed = blob_image(shape, seed=3)
    body = np.zeros(shape, np.float32)
    body[6:-6, 6:-6, 5:-5] = 1.0
    fixed = ndimage.gaussian_filter(body, 1.0) * (fixed + 1.0)
    true_ras = rigid(*motion)                             # fixed point -> moving point
    moving = G.resample(fixed, aff, shape, aff, G.ras_to_lps_matrix(true_ras), fill=0.0)
    # moving(x) = fixed(T x): resampling moving with T^-1 gives fixed back, so the
    # registration of moving onto fixed must find T^-1 (fixed point -> moving point).
    est = G.ras_to_lps_matrix(register_rigid(fixed, aff, moving, aff, seed=7))
    expected = np.linalg.inv(true_ras)
    pts = np.c_[np.random.default_rng(0).uniform(-30, 30, (200, 3)), np.ones(200)]
    err = np.linalg.norm((pts @ est.T - pts @ expected.T)[:, :3], axis=1)
    assert err.max() < 0.5, err.max()
    again = register_rigid(fixed, aff, moving, aff, seed=7)
    assert np.array_equal(G.ras_to_lps_matrix(again), est)
    # the node's one-pass version (images prepared once) gives the same matrix and quality
    from bids_agquant.interfaces.registration import register_rigid_checked, registration_quality

    matrix, ncc = register_rigid_checked(fixed, aff, moving, aff, seed=7)
    assert np.array_equal(matrix, again)
    assert ncc == registration_quality(fixed, aff, moving, aff, again) and ncc > 0.9


def test_registration_of_small_images_drops_coarse_levels():
    """A 16 x 16 x 10 image cannot be shrunk 4 times: the coarse levels are left out."""
    from bids_agquant.interfaces.registration import register_rigid

    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed = blob_image((16, 16, 10), seed=5) + 1.0
    moving = G.resample(fixed, aff, fixed.shape, aff, G.ras_to_lps_matrix(rigid((0, 0, 0),
                                                                                (1.0, 0, 0))),
                        fill=float(fixed.mean()))
    est = G.ras_to_lps_matrix(register_rigid(fixed, aff, moving, aff, seed=1))
    assert np.isfinite(est).all()
    assert abs(est[0, 3] - (-1.0)) < 0.5          # the 1 mm shift is found (roughly)
