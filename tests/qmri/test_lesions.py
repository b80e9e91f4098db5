"""Lesions: labelling, RECIST/3-D diameters on shapes of known size (isotropic, anisotropic and
oblique grids), ROI statistics, healthy-tissue control regions."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from bids_agquant.qmri import lesions as lz
from bids_agquant.qmri.lesions import (CONTROL_DIAMETER_MM, CONTROL_MIN_DIAMETER_MM,
                                       MEASURABLE_DIAMETER_MM, ControlRegionError, RoiStats,
                                       control_regions, is_measurable, label_lesions,
                                       lesion_diameters, lesion_volumes_mm3, roi_stats)

OBLIQUE = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()
GRIDS = {   # name: (voxel size mm, rotation of the grid in world space)
    "iso": ((1.0, 1.0, 1.0), None),
    "aniso": ((0.9, 0.9, 3.0), None),
    "iso-oblique": ((1.0, 1.0, 1.0), OBLIQUE),
    "aniso-oblique": ((0.9, 0.9, 3.0), OBLIQUE),
}


# --------------------------------------------------------------------------- shape helpers

def centred_grid(voxel_mm, rotation, extent_mm):
    """Shape and affine of a grid covering a ball of diameter ``extent_mm`` around the origin."""
    voxel_mm = np.asarray(voxel_mm, float)
    shape = tuple(int(math.ceil(extent_mm / v)) + 3 for v in voxel_mm)
    a = np.diag(voxel_mm) if rotation is None else rotation @ np.diag(voxel_mm)
    affine = np.eye(4)
    affine[:3, :3] = a
    affine[:3, 3] = -a @ ((np.array(shape) - 1) / 2.0)
    return shape, affine


def world_centres(shape, affine):
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def voxelised_ellipsoid(shape, affine, centre, semi_axes, orientation=np.eye(3)):
    """Voxels whose centre lies inside the ellipsoid; also returns its true axial and 3-D
    diameters (longest chord in a plane z = c, and the major axis)."""
    semi_axes = np.asarray(semi_axes, float)
    m = orientation @ np.diag(1.0 / semi_axes ** 2) @ orientation.T
    d = world_centres(shape, affine) - centre
    mask = np.einsum("...i,ij,...j->...", d, m, d) <= 1.0
    axial = 2.0 / math.sqrt(np.linalg.eigvalsh(m[:2, :2]).min())
    return mask, axial, 2.0 * semi_axes.max()


def face_convention_box_diameter(n, spacing):
    """Analytic longest distance between boundary face centres of an axis-aligned box of
    ``n`` voxels of ``spacing`` mm: one end on face -e_i, the other on face +e_j, at opposite
    corners of the box."""
    n = np.asarray(n, float)
    spacing = np.asarray(spacing, float)
    best = 0.0
    for i in range(len(n)):
        for j in range(len(n)):
            span = n - 1.0
            span[i] += 0.5
            span[j] += 0.5
            best = max(best, float(np.linalg.norm(span * spacing)))
    return best


# --------------------------------------------------------------------------- labelling

def test_mask_components_are_split_and_numbered():
    img = np.zeros((12, 12, 12))
    img[1:4, 1:4, 1:4] = 1
    img[8:11, 8:11, 8:11] = 1
    img[6, 1, 1] = 1                                  # a single-voxel lesion
    out = label_lesions(img, "mask")
    assert out.n == 3 and out.original_ids == (1, 2, 3)
    assert sorted(np.unique(out.labels)) == [0, 1, 2, 3]
    sizes = sorted(np.bincount(out.labels.ravel())[1:])
    assert sizes == [1, 27, 27]
    labels, ids = out                                 # unpacks as a pair
    assert labels.dtype == np.int32 and labels.shape == img.shape


def test_connectivity_is_documented_and_configurable():
    img = np.zeros((6, 6, 6))
    img[1, 1, 1] = img[2, 2, 2] = 1                   # touching by a corner only
    img[4, 1, 1] = img[4, 2, 1] = 1                   # touching by a face
    assert label_lesions(img, "mask").n == 2          # default: 26-connectivity
    assert label_lesions(img, "mask", connectivity=26).n == 2
    assert label_lesions(img, "mask", connectivity=18).n == 3
    assert label_lesions(img, "mask", connectivity=6).n == 3
    img2 = np.zeros((6, 6, 6))
    img2[1, 1, 1] = img2[2, 2, 1] = 1                 # touching by an edge
    assert label_lesions(img2, "mask", connectivity=18).n == 1
    assert label_lesions(img2, "mask", connectivity=6).n == 2
    with pytest.raises(ValueError, match="connectivity"):
        label_lesions(img, "mask", connectivity=4)


def test_mask_threshold_and_nan():
    img = np.zeros((5, 5, 5))
    img[1, 1, 1] = 255
    img[3, 3, 3] = 0.3                                # below 0.5: not lesion
    img[0, 4, 0] = np.nan
    out = label_lesions(img, "mask")
    assert out.n == 1 and out.labels[1, 1, 1] == 1 and out.labels[3, 3, 3] == 0
    assert label_lesions(img, "mask", mask_threshold=0.2).n == 2


def test_dseg_labels_are_kept_and_relabelled_consecutively():
    img = np.zeros((10, 10, 10), dtype=np.float32)    # NIfTI dsegs are often stored as float
    img[1:3, 1:3, 1:3] = 12
    img[5:7, 5:7, 5:7] = 3
    img[8, 8, 8] = 7
    img[0, 9, 0] = 3                                  # label 3 in two pieces: still one lesion
    out = label_lesions(img, "dseg")
    assert out.original_ids == (3, 7, 12)
    for k, original in enumerate(out.original_ids, start=1):
        np.testing.assert_array_equal(out.labels == k, img == original)


@pytest.mark.parametrize("bad, message", [(1.5, "integer"), (-1, "non-negative"),
                                          (np.nan, "NaN")])
def test_dseg_rejects_non_labels(bad, message):
    img = np.zeros((4, 4, 4))
    img[1, 1, 1] = bad
    with pytest.raises(ValueError, match=message):
        label_lesions(img, "dseg")


def test_label_lesions_rejects_bad_kind_and_shape():
    with pytest.raises(ValueError, match="kind"):
        label_lesions(np.zeros((3, 3, 3)), "probseg")
    with pytest.raises(ValueError, match="3-D"):
        label_lesions(np.zeros((3, 3, 3, 2)), "mask")


# --------------------------------------------------------------------------- diameters: analytic

def test_single_voxel_and_line_analytic():
    labels = np.zeros((14, 5, 5), int)
    labels[2, 2, 2] = 1                               # one voxel: face centres 1 voxel apart
    labels[3:13, 1, 4] = 2                            # ten voxels in a row along i
    sizes = lesion_diameters(labels, np.diag([0.5, 0.8, 2.0, 1.0]))
    assert sizes[1].longest_3d_mm == pytest.approx(2.0)        # widest voxel dimension
    assert sizes[1].longest_axial_mm == pytest.approx(0.8)     # widest in-plane dimension
    assert sizes[2].longest_axial_mm == pytest.approx(5.0)     # 10 x 0.5 mm end to end
    assert sizes[2].longest_3d_mm == pytest.approx(5.0)
    assert sizes[1].n_voxels == 1 and sizes[2].n_voxels == 10
    assert sizes[2].volume_mm3 == pytest.approx(10 * 0.5 * 0.8 * 2.0)


@settings(max_examples=25, deadline=None)
@given(n=st.tuples(*[st.integers(1, 12)] * 3),
       spacing=st.tuples(st.floats(0.4, 1.5), st.floats(0.4, 1.5), st.floats(0.5, 4.0)),
       flip=st.tuples(*[st.sampled_from([1.0, -1.0])] * 3))
def test_axis_aligned_boxes_match_the_analytic_face_convention(n, spacing, flip):
    labels = np.zeros(tuple(k + 4 for k in n), int)
    labels[2:-2, 2:-2, 2:-2] = 1
    affine = np.diag(list(np.multiply(spacing, flip)) + [1.0])
    affine[:3, 3] = [10.0, -40.0, 7.5]
    size = lesion_diameters(labels, affine)[1]
    assert size.longest_3d_mm == pytest.approx(face_convention_box_diameter(n, spacing), rel=1e-9)
    assert size.longest_axial_mm == pytest.approx(
        face_convention_box_diameter(n[:2], spacing[:2]), rel=1e-9)
    # below the box's true diagonals (the corners are cut) by less than one voxel diagonal
    true_3d = float(np.linalg.norm(np.multiply(n, spacing)))
    true_ax = float(np.linalg.norm(np.multiply(n[:2], spacing[:2])))
    diag_3d, diag_ax = float(np.linalg.norm(spacing)), float(np.linalg.norm(spacing[:2]))
    assert true_3d - diag_3d - 1e-9 <= size.longest_3d_mm <= true_3d + 1e-9
    assert true_ax - diag_ax - 1e-9 <= size.longest_axial_mm <= true_ax + 1e-9


def test_rotated_box_keeps_its_3d_diameter():
    n, spacing = (9, 5, 4), (0.9, 0.9, 3.0)
    labels = np.zeros(tuple(k + 4 for k in n), int)
    labels[2:-2, 2:-2, 2:-2] = 1
    affine = np.eye(4)
    affine[:3, :3] = OBLIQUE @ np.diag(spacing)
    size = lesion_diameters(labels, affine)[1]
    assert size.longest_3d_mm == pytest.approx(face_convention_box_diameter(n, spacing), rel=1e-9)
    assert size.longest_axial_mm <= size.longest_3d_mm + 1e-9


# --------------------------------------------------------------------------- diameters: spheres

# Tolerances from the brief: within about one voxel, 1.5 mm at 1 mm voxels.  On 3 mm slices the
# 3-D diameter can reach one face half a slice (1.5 mm) beyond the sphere at each end.
SPHERE_TOLERANCE = {"iso": (1.5, 1.5), "aniso": (1.5, 3.0),
                    "iso-oblique": (1.5, 1.5), "aniso-oblique": (1.5, 3.0)}


@pytest.mark.parametrize("grid", GRIDS)
def test_voxelised_spheres_recover_their_diameter(grid):
    voxel, rotation = GRIDS[grid]
    tol_axial, tol_3d = SPHERE_TOLERANCE[grid]
    rng = np.random.default_rng(11)
    errors_axial, errors_3d = [], []
    for diameter in (6.0, 10.0, 14.5, 23.0):
        shape, affine = centred_grid(voxel, rotation, diameter + 4.0)
        centre = rng.uniform(-0.5, 0.5, 3) * np.asarray(voxel)
        mask, _, _ = voxelised_ellipsoid(shape, affine, centre, [diameter / 2] * 3)
        size = lesion_diameters(mask.astype(np.int16), affine)[1]
        errors_axial.append(size.longest_axial_mm - diameter)
        errors_3d.append(size.longest_3d_mm - diameter)
        assert size.longest_axial_mm <= size.longest_3d_mm + 1e-9
    errors_axial, errors_3d = np.array(errors_axial), np.array(errors_3d)
    assert np.abs(errors_axial).max() <= tol_axial, errors_axial
    assert np.abs(errors_3d).max() <= tol_3d, errors_3d
    # face centres sit on or just outside a sphere: no voxel-sized underestimate
    assert errors_axial.min() > -1.0 and errors_3d.min() > -1.0


@pytest.mark.parametrize("grid", ["iso", "iso-oblique", "aniso"])
def test_voxelised_ellipsoids_recover_their_diameters(grid):
    voxel, rotation = GRIDS[grid]
    rng = np.random.default_rng(5)
    for semi_axes in ([9.0, 5.0, 4.0], [6.0, 6.0, 3.0], [12.0, 4.0, 7.0]):
        orientation = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
        shape, affine = centred_grid(voxel, rotation, 2 * max(semi_axes) + 4.0)
        mask, true_axial, true_3d = voxelised_ellipsoid(shape, affine, rng.uniform(-.5, .5, 3),
                                                        semi_axes, orientation)
        size = lesion_diameters(mask.astype(np.int16), affine)[1]
        tol = 1.5 if grid != "aniso" else 3.0      # one 3 mm slice on the thick grid
        assert abs(size.longest_axial_mm - true_axial) <= tol, (size, true_axial)
        assert abs(size.longest_3d_mm - true_3d) <= tol, (size, true_3d)


def test_measurability_of_spheres_around_the_threshold():
    shape, affine = centred_grid((1.0, 1.0, 1.0), OBLIQUE, 20.0)
    small, _, _ = voxelised_ellipsoid(shape, affine, np.zeros(3), [4.0] * 3)      # 8 mm
    large, _, _ = voxelised_ellipsoid(shape, affine, np.zeros(3), [6.0] * 3)      # 12 mm
    assert not lesion_diameters(small.astype(int), affine)[1].measurable
    assert lesion_diameters(large.astype(int), affine)[1].measurable


# --------------------------------------------------------------------------- diameters: properties

def _random_blob(rng, shape=(14, 14, 8), n_balls=4):
    """A lumpy lesion: union of a few random small balls in index space."""
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), axis=-1)
    mask = np.zeros(shape, bool)
    for _ in range(n_balls):
        c = rng.uniform(3, np.array(shape) - 3)
        mask |= np.linalg.norm(idx - c, axis=-1) <= rng.uniform(1.0, 3.0)
    return mask


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), angle=st.floats(0, 360), shift=st.floats(-50, 50))
def test_axial_diameter_is_invariant_to_rotation_about_z_and_translation(seed, angle, shift):
    rng = np.random.default_rng(seed)
    mask = _random_blob(rng).astype(int)
    base = np.eye(4)
    base[:3, :3] = Rotation.from_euler("x", 25, degrees=True).as_matrix() @ np.diag([0.9, 0.9, 2])
    spin = np.eye(4)
    spin[:3, :3] = Rotation.from_euler("z", angle, degrees=True).as_matrix()
    spin[:3, 3] = [shift, -shift, 0.0]
    a, b = lesion_diameters(mask, base)[1], lesion_diameters(mask, spin @ base)[1]
    assert b.longest_axial_mm == pytest.approx(a.longest_axial_mm, abs=1e-6)
    assert b.longest_3d_mm == pytest.approx(a.longest_3d_mm, abs=1e-9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_3d_diameter_is_invariant_to_any_rotation(seed):
    rng = np.random.default_rng(seed)
    mask = _random_blob(rng).astype(int)
    base = np.diag([0.9, 0.9, 2.0, 1.0])
    turned = np.eye(4)
    turned[:3, :3] = Rotation.random(random_state=seed).as_matrix() @ base[:3, :3]
    assert lesion_diameters(mask, turned)[1].longest_3d_mm == pytest.approx(
        lesion_diameters(mask, base)[1].longest_3d_mm, abs=1e-9)


def test_3d_diameter_equals_brute_force_over_all_face_centres():
    rng = np.random.default_rng(2)
    mask = _random_blob(rng)
    affine = np.eye(4)
    affine[:3, :3] = OBLIQUE @ np.diag([0.9, 0.9, 3.0])
    faces = lz._boundary_face_points(mask, np.zeros(3, int), affine)
    brute = max(np.linalg.norm(faces[:, None] - faces[None], axis=-1).max(), 0)
    assert lesion_diameters(mask.astype(int), affine)[1].longest_3d_mm == pytest.approx(brute)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oblique_axial_sampling_agrees_with_exact_search_and_surface_shortcut(seed):
    """On an oblique grid: sampled planes vs every vertex level, surface voxels vs all voxels."""
    rng = np.random.default_rng(seed)
    mask = _random_blob(rng, shape=(12, 12, 8), n_balls=3)
    affine = np.eye(4)
    affine[:3, :3] = Rotation.random(random_state=seed).as_matrix() @ np.diag([1.0, 1.0, 1.5])
    offset = np.zeros(3, int)
    surface = lz._AxialSections(lz._surface_voxel_centres(mask, offset, affine), affine)
    every = lz._AxialSections(np.argwhere(mask) @ affine[:3, :3].T + affine[:3, 3], affine)
    exact = surface.longest(max_exact_levels=10 ** 9)
    assert every.longest(max_exact_levels=10 ** 9) == pytest.approx(exact, abs=1e-9)
    assert surface.longest(max_exact_levels=0) == pytest.approx(exact, abs=0.03)


def test_several_lesions_volumes_and_input_checks():
    labels = np.zeros((20, 20, 10), int)
    labels[2:8, 2:8, 2:5] = 4
    labels[12:18, 12:14, 5:9] = 9
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    sizes = lesion_diameters(labels, affine)
    assert list(sizes) == [4, 9]
    assert sizes[4].volume_mm3 == pytest.approx(6 * 6 * 3 * 0.5)
    assert lesion_volumes_mm3(labels, affine) == {4: pytest.approx(54.0), 9: pytest.approx(24.0)}
    assert lesion_diameters(np.zeros((4, 4, 4), int), affine) == {}
    with pytest.raises(ValueError, match="singular"):
        lesion_diameters(labels, np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="integers"):
        lesion_diameters(labels * 0.5, affine)


def test_is_measurable():
    assert MEASURABLE_DIAMETER_MM == 10.0
    assert is_measurable(10.0) and is_measurable(10.0 - 1e-9) and is_measurable(25.0)
    assert not is_measurable(9.99) and not is_measurable(float("nan"))
    np.testing.assert_array_equal(is_measurable([5.0, 10.0, np.nan, 12.0]),
                                  [False, True, False, True])


# --------------------------------------------------------------------------- ROI statistics

def test_roi_stats_ignores_nan_and_keeps_zeros():
    values = np.array([0.0, 0.0, 3.0, np.nan, np.inf, 100.0])
    roi = np.array([True, True, True, True, True, False])
    stats = roi_stats(values, roi)
    assert isinstance(stats, RoiStats)
    assert stats.n == 3
    assert stats.mean == pytest.approx(1.0)
    assert stats.median == pytest.approx(0.0)
    assert stats.sd == pytest.approx(np.std([0.0, 0.0, 3.0], ddof=1))
    assert roi_stats(values).n == 4                    # no ROI: every finite value


def test_roi_stats_empty_and_single():
    empty = roi_stats(np.array([np.nan, 1.0]), np.array([True, False]))
    assert empty.n == 0 and all(math.isnan(v) for v in empty[:3])
    single = roi_stats(np.array([2.5, 1.0]), np.array([True, False]))
    assert single.n == 1 and single.mean == 2.5 and single.median == 2.5 and math.isnan(single.sd)
    with pytest.raises(ValueError, match="ROI"):
        roi_stats(np.ones((2, 2)), np.ones(4, bool))


# --------------------------------------------------------------------------- control regions

def _head(voxel=2.0, rotation=None):
    """A small ellipsoidal 'brain' (radii 60, 70, 50 mm) with two spherical lesions."""
    shape, affine = centred_grid((voxel,) * 3, rotation, 150.0)
    centres = world_centres(shape, affine)
    brain = (((centres / [60.0, 70.0, 50.0]) ** 2).sum(axis=-1)) <= 1
    lesions = np.zeros(shape, np.int16)
    lesions[np.linalg.norm(centres - [20, 10, 5], axis=-1) <= 8] = 1       # 16 mm: measurable
    lesions[np.linalg.norm(centres - [-25, -20, -10], axis=-1) <= 6] = 2   # 12 mm: measurable
    return brain, lesions, affine, centres


@pytest.mark.parametrize("rotation", [None, OBLIQUE], ids=["axial", "oblique"])
def test_control_regions_are_disjoint_in_brain_and_away_from_lesions(rotation):
    brain, lesions, affine, centres = _head(rotation=rotation)
    margin = 10.0
    regions = control_regions(brain, lesions, affine, n=3, margin_mm=margin, seed=0)
    assert regions.shape == brain.shape
    assert sorted(np.unique(regions)) == [0, 1, 2, 3]
    assert not (regions.astype(bool) & ~brain).any()                        # inside the brain
    lesion_tree = cKDTree(centres[lesions > 0])
    voxel = np.linalg.norm(affine[:3, :3], axis=0).max()
    points = {k: centres[regions == k] for k in (1, 2, 3)}
    for k, pts in points.items():
        assert lesion_tree.query(pts)[0].min() >= margin                    # margin to lesions
        # inside the tissue: away from the edge of the brain (mask eroded by the radius)
        assert cKDTree(centres[~brain]).query(pts)[0].min() >= voxel
    for a in (1, 2, 3):                                                     # margin between them
        for b in range(a + 1, 4):
            assert cKDTree(points[a]).query(points[b])[0].min() >= margin
    # one size for every participant: the default sphere, whatever the lesions
    target = math.pi / 6 * CONTROL_DIAMETER_MM ** 3
    for pts in points.values():
        assert len(pts) * voxel ** 3 == pytest.approx(target, rel=0.1)


def test_control_regions_are_reproducible_for_a_seed():
    brain, lesions, affine, _ = _head()
    a = control_regions(brain, lesions, affine, seed=7)
    b = control_regions(brain, lesions, affine, seed=7)
    c = control_regions(brain, lesions, affine, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_control_regions_diameter_and_margin_options():
    brain, lesions, affine, centres = _head()
    placed = lz.place_control_regions(brain, lesions, affine, n=2, diameter_mm=20.0,
                                      margin_mm=20.0)
    regions, used = placed.labels, placed.diameter_mm
    assert used == 20.0 and placed.warnings == ()
    np.testing.assert_array_equal(regions, control_regions(brain, lesions, affine, n=2,
                                                           diameter_mm=20.0, margin_mm=20.0))
    assert sorted(np.unique(regions)) == [0, 1, 2]
    for k in (1, 2):
        assert (regions == k).sum() * 8.0 == pytest.approx(math.pi / 6 * 20.0 ** 3, rel=0.1)
        d = cKDTree(centres[lesions > 0]).query(centres[regions == k])[0]
        assert d.min() >= 20.0


def test_control_regions_shrink_together_when_the_brain_is_small():
    # a 50 mm ball of brain: three 25 mm spheres 10 mm apart cannot fit inside, smaller ones can
    shape, affine = (40, 40, 40), np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -39.0
    centres = np.stack(np.meshgrid(*(np.arange(40) * 2.0 - 39.0,) * 3, indexing="ij"), -1)
    brain = np.linalg.norm(centres, axis=-1) <= 25.0
    with pytest.warns(UserWarning, match="shrunk from 25 to"):
        regions = control_regions(brain, np.zeros(shape, np.int16), affine)
    placed = lz.place_control_regions(brain, np.zeros(shape, np.int16), affine)
    used = placed.diameter_mm
    np.testing.assert_array_equal(placed.labels, regions)
    assert len(placed.warnings) == 1 and placed.warnings[0].startswith("control regions shrunk")
    assert CONTROL_MIN_DIAMETER_MM <= used < CONTROL_DIAMETER_MM
    assert sorted(np.unique(regions)) == [0, 1, 2, 3]
    sizes = [int((regions == k).sum()) for k in (1, 2, 3)]
    assert max(sizes) - min(sizes) <= 0.2 * max(sizes)                  # one size for all
    assert np.mean(sizes) * 8.0 == pytest.approx(math.pi / 6 * used ** 3, rel=0.3)
    # the size used is the largest of the steps that fits
    if used + 2.5 <= CONTROL_DIAMETER_MM:
        with pytest.warns(UserWarning, match="only"):
            control_regions(brain, np.zeros(shape, np.int16), affine, diameter_mm=used + 2.5,
                            min_diameter_mm=used + 2.5)


def test_control_regions_warn_or_fail_without_room():
    brain, lesions, affine, _ = _head()
    with pytest.warns(UserWarning, match="only"):
        few = control_regions(brain, lesions, affine, n=400, diameter_mm=20.0)
    used = lz.place_control_regions(brain, lesions, affine, n=400, diameter_mm=20.0).diameter_mm
    assert 3 <= few.max() < 400 and used == CONTROL_MIN_DIAMETER_MM
    with pytest.raises(ControlRegionError, match="no room for a control sphere of 100 mm"):
        control_regions(brain, lesions, affine, diameter_mm=100.0, min_diameter_mm=100.0)
    with pytest.raises(ValueError, match="shape"):
        control_regions(brain[:-1], lesions, affine)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="diameter_mm must be positive"):
            control_regions(brain, lesions, affine, diameter_mm=bad)


def test_control_regions_without_lesions_keep_the_default_size():
    brain, lesions, affine, _ = _head()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regions = control_regions(brain, np.zeros_like(lesions), affine)
    for k in (1, 2, 3):
        assert (regions == k).sum() * 8.0 == pytest.approx(
            math.pi / 6 * CONTROL_DIAMETER_MM ** 3, rel=0.1)


def test_healthy_brain_is_the_brain_at_the_margin_from_every_lesion():
    brain, lesions, affine, centres = _head(rotation=OBLIQUE)
    healthy = lz.healthy_brain(brain, lesions, affine, margin_mm=10.0)
    assert not (healthy & ~brain).any()
    d = cKDTree(centres[lesions > 0]).query(centres.reshape(-1, 3))[0].reshape(brain.shape)
    clear = np.abs(d - 10.0) > 1e-6        # voxels exactly at 10 mm: a rounding tie
    np.testing.assert_array_equal(healthy[clear], (brain & (d >= 10.0))[clear])
    assert lz.healthy_brain(brain, np.zeros_like(lesions), affine).sum() == brain.sum()
    with pytest.raises(ValueError, match="shape"):
        lz.healthy_brain(brain[:-1], lesions, affine)
