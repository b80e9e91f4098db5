"""What the participant report draws: colour scales shared across sessions, orientation labels
that follow the affine, the B1+ / VFA-residual / VFA-registration views against the fixture's
analytic truth, outline colours that are the ones the captions name, readable messages, and the
colour ranges of docs/report.md generated from their one home."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.image as mimage
import nibabel as nib
import numpy as np
import pytest
from participant_fixture import (LESIONS, SE_IN_LESION, SHIFT_VOXELS, VFA_FLIP_DEG, VFA_TR_S,
                                 b1_factor_true, make_participant_outputs)
from test_participant_report import _plan, _vfa_d1
from testkit import PageParts

from bids_agquant.bids import derivatives as D
from bids_agquant.qmri.spgr import spgr_signal
from bids_agquant.reports import display as V
from bids_agquant.reports import fitcheck as Q
from bids_agquant.reports import participant as P
from bids_agquant.reports.html import readable

DOCS = Path(__file__).resolve().parents[2] / "docs" / "report.md"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("views")
    return out, make_participant_outputs(out, "01")


def _map(out, key, ses, ce):
    (m,) = [m for m in P.find_maps(out, "01") if (m.key, m.session, m.agent) == (key, ses, ce)]
    return m.path


def _grid(written):
    return P._load(written["reference"])


# ------------------------------------------------------------------------------------------
# colour scales
def test_one_colour_scale_per_quantity_and_agent_across_sessions(outputs):
    """Day 8 (SE 20 % of day 1 in the fixture) is drawn on day 1's scale, so its lesion sits at
    a fifth of day 1's colour, not at the top of a scale of its own; Dotarem has its own."""
    out, written = outputs
    grid = _grid(written)
    lesions, _, brain = P._label_images(P.find_maps(out, "01"), grid)
    styles, lesion_mean = {}, {}
    for ses, agent in (("D0", "Dotarem"), ("D1", "AGuIX"), ("D8", "AGuIX")):
        d = P._on_grid(P._load(_map(out, "enhancement", ses, agent)), grid)
        styles[ses] = P._mosaic_style("enhancement", agent, d, lesions, brain)
        lesion_mean[ses] = float(d[lesions == 1].mean())
    scale = [(s["vmin"], s["vmax"], s["cmap"]) for s in styles.values()]
    assert scale[1] == scale[2] != scale[0]
    assert scale[1][:2] == V.RANGES["enhancement"]["AGuIX"][:2]
    norm = mcolors.Normalize(styles["D1"]["vmin"], styles["D1"]["vmax"])
    assert lesion_mean["D1"] == pytest.approx(SE_IN_LESION[1], abs=1.0)
    assert norm(lesion_mean["D8"]) / norm(lesion_mean["D1"]) == pytest.approx(0.2, abs=0.03)
    page = P.build_participant_report(out, "01", bids_dir=written["bids"]).read_text()
    assert V.range_text("enhancement", ["Dotarem", "AGuIX"]) in page      # the caption says so


def test_docs_colour_ranges_are_generated_from_the_constant():
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(r"<!-- colour-ranges:start -->\n(.*?)<!-- colour-ranges:end -->", text, re.S)
    assert m, "docs/report.md lost its colour-ranges block"
    assert m.group(1) == V.ranges_markdown(), (
        "docs/report.md is out of date: paste the output of python -c 'from "
        "bids_agquant.reports.display import ranges_markdown; print(ranges_markdown())'")
    for kind in V.OUTLINES:                  # the outline colours the docs name are the code's
        assert V.outline_text(kind) in text, kind


# ------------------------------------------------------------------------------------------
# orientation
def _flipped(img: nib.Nifti1Image, axes) -> nib.Nifti1Image:
    """The same image stored with voxel ``axes`` reversed (same world positions)."""
    data = np.asanyarray(img.dataobj)
    flip = np.eye(4)
    for a in axes:
        data = np.flip(data, axis=a)
        flip[a, a], flip[a, 3] = -1, img.shape[a] - 1
    return nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip)


def test_plane_labels_read_the_affine():
    ras = np.diag([2.0, 2.0, 2.5, 1.0])
    assert V.plane_labels(ras, "axial") == {"left": "L", "right": "R", "bottom": "P",
                                            "top": "A"}
    las = ras @ np.diag([-1.0, 1.0, 1.0, 1.0])
    assert V.plane_labels(las, "axial")["right"] == "L"
    assert V.plane_labels(las, "coronal") == {"left": "R", "right": "L", "bottom": "I",
                                              "top": "S"}
    assert V.plane_labels(ras, "sagittal") == {"left": "P", "right": "A", "bottom": "I",
                                               "top": "S"}


@pytest.mark.parametrize("flip", [(), (0,), (0, 1), (0, 1, 2)])
def test_each_lesion_is_drawn_on_the_side_its_label_names(outputs, flip):
    """Lesion 1 is left and anterior, lesion 2 right, posterior and inferior (fixture voxels ->
    world mm); stored with axes reversed, each still lands on the side its label names."""
    out, _ = outputs
    img = _flipped(nib.load(str(out / D.participant_path("lesion_dseg", "01"))), flip)
    canon = nib.as_closest_canonical(img)
    world = {lab: nib.affines.apply_affine(img.affine, np.argwhere(
        np.asanyarray(img.dataobj) == lab).mean(axis=0)) for lab in LESIONS}
    for lab, centre in world.items():
        ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(canon.affine), centre)).astype(int)
        for plane, (h, v, cut) in V.PLANES.items():
            shown, labels = P.display_plane(img, plane, int(ijk[cut]))
            rows, cols = np.nonzero(shown == lab)
            side = "right" if cols.mean() > shown.shape[1] / 2 else "left"
            end = "top" if rows.mean() > shown.shape[0] / 2 else "bottom"   # origin="lower"
            for edge, axis in ((side, h), (end, v)):
                letter = {0: "RL", 1: "AP", 2: "SI"}[axis][0 if centre[axis] > 0 else 1]
                assert labels[edge] == letter, (lab, plane, edge)


# ------------------------------------------------------------------------------------------
# the VFA views, against the fixture's analytic signals
def _vfa_state(out, written, **change):
    plan = _plan(written["bids"], _vfa_d1(written, **change))
    (vs,) = [v for v in Q.vfa_states(out, "01", plan) if v.session == "D1"]
    return plan, vs


def _on(shape, planes) -> np.ndarray:
    sel = np.zeros(shape, bool)
    for axis, index in planes:
        where = [slice(None)] * 3
        where[axis] = index
        sel[tuple(where)] = True
    return sel


def _inner(m0, planes):
    """Head voxels of ``planes`` at least 4 voxels from the border (no wrap of the motion)."""
    away = np.zeros(m0.shape, bool)
    away[4:-4, 4:-4, 4:-4] = True
    return _on(m0.shape, planes) & away & (m0 > 0)


@pytest.fixture(scope="module")
def d1(outputs):
    out, written = outputs
    grid = _grid(written)
    m0 = P._on_grid(P._load(_map(out, "M0map", "D1", "AGuIX")), grid)
    t1 = P._on_grid(P._load(_map(out, "T1map", "D1", "AGuIX")), grid)
    return out, written, grid, m0, t1


def test_b1_view_is_the_measured_factor_on_the_reference_grid(d1):
    out, written, grid, m0, _ = d1
    planes = [(2, 18), (0, 20)]
    _, vs = _vfa_state(out, written)
    b1 = Q.b1_on_planes(vs, out, "01", grid, planes)
    inner = _inner(m0, planes)
    assert inner.sum() > 500
    np.testing.assert_allclose(b1[inner], b1_factor_true()[inner], rtol=1e-5)
    assert np.isnan(b1[~_on(grid.shape, planes)]).all()      # only the planes shown


def test_vfa_residual_view_zero_for_the_true_b1_and_as_spgr_predicts_for_a_wrong_one(d1):
    out, written, grid, m0, t1 = d1
    planes = [(2, 18)]
    inner = _inner(m0, planes)
    plan, vs = _vfa_state(out, written)
    b1 = Q.b1_on_planes(vs, out, "01", grid, planes)
    assert np.nanmax(Q.residual_on_planes(vs, plan, m0, t1, b1, grid, planes)[inner]) < 1e-3
    # the TB1map read 10 % too high: the residual of the SPGR equation with that error
    plan_w, vs_w = _vfa_state(out, written, b1_scale=0.011)
    b1_w = Q.b1_on_planes(vs_w, out, "01", grid, planes)
    shown = Q.residual_on_planes(vs_w, plan_w, m0, t1, b1_w, grid, planes)[inner]
    s = spgr_signal(m0[inner], t1[inner], VFA_FLIP_DEG, VFA_TR_S, b1_factor_true()[inner])
    p = spgr_signal(m0[inner], t1[inner], VFA_FLIP_DEG, VFA_TR_S, 1.1 * b1_factor_true()[inner])
    expected = 100 * np.sqrt(np.mean((s - p) ** 2, axis=-1)) / np.mean(s, axis=-1)
    np.testing.assert_allclose(shown, expected, rtol=1e-3)
    assert expected.mean() > 1.0         # visible on the residual's colour range
    assert expected.mean() < V.RANGES["vfa_residual"]["*"].vmax


def test_vfa_registration_pair_before_moved_after_on_the_reference(d1):
    out, written, grid, m0, t1 = d1
    planes = [(2, 18)]
    inner = _inner(m0, planes)
    _, vs = _vfa_state(out, written)
    before, after = Q.registration_pair(vs, grid, planes)
    truth = spgr_signal(m0, np.where(m0 > 0, t1, 1.0), VFA_FLIP_DEG[-1:], VFA_TR_S,
                        b1_factor_true())[..., 0]
    np.testing.assert_allclose(after[inner], truth[inner], rtol=1e-4, atol=1e-3)
    moved = np.roll(truth, SHIFT_VOXELS["D1"], axis=0)
    np.testing.assert_allclose(before[inner], moved[inner], rtol=1e-4, atol=1e-3)
    assert np.abs(before[inner] - after[inner]).mean() > 0.02 * truth[inner].mean()


def test_report_shows_the_vfa_views_and_the_flicker_without_script(d1):
    out, written, *_ = d1
    page = P.build_participant_report(out, "01", plan=_plan(written["bids"], _vfa_d1(written)),
                                      bids_dir=written["bids"]).read_text()
    parts = PageParts(page)
    assert not parts.external and "<script" not in page
    pair = re.search(r'<div class="flicker-stack"><img src="([^"]+)"[^>]*>'
                     r'<img class="flicker-top" src="([^"]+)"', page)
    assert pair and pair.group(1) != pair.group(2)
    assert "@keyframes flicker" in page and "B1+ factor of the VFA fit" in page
    assert "VFA fit residual" in page and "\u0394R1 = R1 post" in page
    for key in ("b1", "vfa_residual"):
        assert V.range_text(key) in page


# ------------------------------------------------------------------------------------------
# outlines and messages
def _nearest_name(colour: str) -> str:
    names = ("cyan", "magenta", "yellow", "orange", "green", "red", "blue", "white")
    rgb = np.array(mcolors.to_rgb(colour))
    return min(names, key=lambda n: np.abs(np.array(mcolors.to_rgb(n)) - rgb).sum())


def test_outlines_are_drawn_in_the_colour_the_caption_names(outputs):
    out, written = outputs
    for kind, (name, colour, _) in V.OUTLINES.items():
        assert _nearest_name(colour) == name, kind
    grid = _grid(written)
    anat = P._data3d(grid)
    lesions, controls, brain = P._label_images(P.find_maps(out, "01"), grid)
    for n in (2, 3):                          # the slices shown cross a control region
        slices = P._choose_slices(anat.shape, lesions, n, controls)
        assert len(slices) == n and any((controls[:, :, z] > 0).any() for z in slices)
        assert any((lesions[:, :, z] == 1).any() for z in slices)      # the largest lesion
    z = int(np.argwhere(controls == 1)[:, 2].mean())
    counts = {}
    for label_set in ("with", "without"):
        c = controls if label_set == "with" else np.zeros_like(controls)
        png = P._maps_figure("T1", [("ses-D0 pre", None, dict(cmap="gray", vmin=0, vmax=1,
                                                              unit="s"))],
                             anat, (np.zeros_like(lesions), c, brain), [z], 1.0,
                             V.plane_labels(grid.affine, "axial"))
        rgb = mimage.imread(io.BytesIO(png))[..., :3]
        target = np.array(mcolors.to_rgb(V.OUTLINES["controls"][1]))
        counts[label_set] = int((np.abs(rgb - target).max(axis=-1) < 0.12).sum())
    assert counts["with"] > 20 and counts["without"] == 0
    text = P.build_participant_report(out, "01", bids_dir=written["bids"]).read_text()
    assert f"{V.outline_text('controls')}: healthy-tissue control regions" in text


def test_readable_turns_a_traceback_and_paths_into_one_line():
    msg = ("node fit_vfa failed\nTraceback (most recent call last):\n  File \"/usr/lib/x.py\", "
           "line 3, in f\n    raise ValueError(p)\nValueError: /data/bids/sub-01/anat/a.nii.gz "
           "unreadable (crash file /scratch/work/crash-1.txt)")
    assert readable(msg, ["/data/bids"]) == ("node fit_vfa failed ValueError: sub-01/anat/"
                                             "a.nii.gz unreadable (crash file crash-1.txt)")
    assert readable("R1 in 1/s at 100 mg/kg, A/P, bids:raw:sub-01/anat/x.nii.gz") == (
        "R1 in 1/s at 100 mg/kg, A/P, bids:raw:sub-01/anat/x.nii.gz")
    assert readable("see file:///tmp/out/logs/a.log", ["/tmp/out"]) == "see logs/a.log"


def test_report_shows_warnings_and_errors_as_readable_lines(outputs, tmp_path):
    out, written = outputs
    shutil.copytree(out, tmp_path / "out")
    out = tmp_path / "out"
    (out / "logs" / "sub-01_20991231T000000.log").write_text(
        "2099-12-31 00:00:00,001 INFO bids_agquant.cli: started\n"
        f"2099-12-31 00:00:01,002 ERROR bids_agquant.cli: sub-01: node fit_vfa failed: "
        f"ValueError: bad flip angle (crash file {tmp_path}/work/crash-x.txt)\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/site-packages/nipype/x.py", line 1, in run\n'
        "ValueError: bad flip angle\n"
        f"2099-12-31 00:00:02,003 WARNING bids_agquant.vfa: {out}/sub-01/anat/x.nii.gz: the "
        "VFA fit failed in 3 of 100 voxels\n")
    page = P.build_participant_report(out, "01", bids_dir=written["bids"],
                                      warnings=[f"a warning about {written['bids']}/sub-01/"
                                                f"ses-D1/anat/y.nii.gz\nTraceback (most recent "
                                                f"call last):\nOSError: gone"]).read_text()
    assert '<div class="callout bad"><strong>1 error</strong>' in page
    assert ("sub-01: node fit_vfa failed: ValueError: bad flip angle (crash file crash-x.txt)"
            in page)
    assert "sub-01/anat/x.nii.gz: the VFA fit failed in 3 of 100 voxels" in page
    assert "a warning about sub-01/ses-D1/anat/y.nii.gz OSError: gone" in page
    assert "Traceback" not in page and str(tmp_path) not in page
    assert "/usr/lib" not in page
