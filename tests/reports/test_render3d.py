"""The 3D view's surfaces sit where the lesions are (analytic spheres on oblique, flipped grids)."""
from __future__ import annotations

import numpy as np
import pytest

from bids_agquant.reports import render3d as R


def oblique_affine(zooms=(1.0, 1.2, 0.9), flip_x=True, angle_deg=17.0):
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    lin = rot @ np.diag(zooms)
    if flip_x:
        lin[:, 0] *= -1
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = (40.0, -60.0, -30.0)
    return aff


def spheres(shape, affine, centres_mm, radii_mm):
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    dseg = np.zeros(shape, np.int16)
    for label, (c, r) in enumerate(zip(centres_mm, radii_mm), start=1):
        inside = np.linalg.norm(xyz - np.asarray(c), axis=1) <= r
        dseg.reshape(-1)[inside] = label
    return dseg


@pytest.mark.parametrize("flip_x", [False, True])
def test_lesion_surfaces_enclose_the_lesions_centroids(flip_x):
    affine = oblique_affine(flip_x=flip_x)
    shape = (70, 60, 60)
    centre_vox = np.array([35, 30, 30])
    base = affine[:3, :3] @ centre_vox + affine[:3, 3]
    centres = [base + d for d in ((0, 0, 0), (15, 5, 10), (-12, -8, -9))]
    radii = [8.0, 4.0, 2.6]                       # a 5 mm lesion too
    dseg = spheres(shape, affine, centres, radii)
    surfaces = R.lesion_surfaces(dseg, affine)
    assert sorted(surfaces) == [1, 2, 3]
    for label, centre in enumerate(centres, start=1):
        # the voxels' own centroid is the lesion table's centroid definition
        voxels = np.argwhere(dseg == label)
        voxel_centroid = (affine[:3, :3] @ voxels.mean(axis=0)) + affine[:3, 3]
        got = surfaces[label].enclosed_centroid()
        assert np.linalg.norm(got - voxel_centroid) < 0.3, (label, got, voxel_centroid)
        assert np.linalg.norm(got - centre) < 0.6
        # the enclosed volume is the sphere's (marching cubes at level 0.5 of a binary mask)
        tri = surfaces[label].triangles
        volume = abs(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()) / 6
        assert volume == pytest.approx(4 / 3 * np.pi * radii[label - 1] ** 3, rel=0.25)


def test_a_large_lesion_on_a_coarser_step_still_encloses_its_voxels():
    """A 36 mm lesion on a 1 mm grid is extracted on step 3 (fewer triangles for display): its
    surface still encloses the voxels' centroid and the sphere's volume."""
    affine = oblique_affine(zooms=(1.0, 1.0, 1.0))
    shape = (60, 60, 60)
    centre = affine[:3, :3] @ np.array([30, 30, 30]) + affine[:3, 3]
    dseg = spheres(shape, affine, [centre], [18.0])
    fine = R._extract(dseg == 1, affine, 0.5, 1)
    surface = R.lesion_surfaces(dseg, affine)[1]
    assert len(surface.faces) < len(fine.faces) / 4          # the coarser step was taken
    voxels = np.argwhere(dseg == 1)
    voxel_centroid = (affine[:3, :3] @ voxels.mean(axis=0)) + affine[:3, 3]
    assert np.linalg.norm(surface.enclosed_centroid() - voxel_centroid) < 0.5
    tri = surface.triangles
    volume = abs(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()) / 6
    assert volume == pytest.approx(4 / 3 * np.pi * 18.0 ** 3, rel=0.15)


def test_brain_surface_is_in_world_millimetres():
    affine = oblique_affine()
    shape = (70, 60, 60)
    centre = affine[:3, :3] @ np.array([35, 30, 30]) + affine[:3, 3]
    brain = spheres(shape, affine, [centre], [25.0]) > 0
    surface = R.brain_surface(brain, affine)
    radius = np.linalg.norm(surface.vertices - centre, axis=1)
    assert np.median(radius) == pytest.approx(25.0, abs=1.5)
    assert np.linalg.norm(surface.enclosed_centroid() - centre) < 0.5


def test_figure_has_a_panel_per_state_and_view():
    affine = oblique_affine()
    shape = (40, 40, 40)
    centre = affine[:3, :3] @ np.array([20, 20, 20]) + affine[:3, 3]
    dseg = spheres(shape, affine, [centre], [5.0])
    fig = R.lesion_figure(R.brain_surface(dseg > 0, affine), R.lesion_surfaces(dseg, affine),
                          [("ses-D1 AGuIX", {1: 40.0}), ("ses-D8 AGuIX", {1: np.nan})],
                          cmap="magma", vmin=0, vmax=100, quantity="SE (%)")
    panels = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(panels) == 2 * len(R.VIEWS)
    # every panel holds the brain and the lesion collections
    assert all(len(ax.collections) == 2 for ax in panels)
