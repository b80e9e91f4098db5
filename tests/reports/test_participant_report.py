"""The participant report: found maps, sections, inline images, lesion table, warnings."""
from __future__ import annotations

import base64
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from participant_fixture import CONTROLS, LESIONS, make_participant_outputs
from testkit import PageParts

from bids_agquant.bids import derivatives as D
from bids_agquant.bids.plan import (ContrastState, IntensityScaling, LesionMask,
                                    ParticipantPlan, VFASet)
from bids_agquant.reports.participant import (SHOWN_MAPS, _session_t1ws,
                                               build_participant_report, find_maps)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("derivatives")
    written = make_participant_outputs(out, "01")
    return out, written


def _vfa_d1(written, **change):
    """The D1 VFA set the fixture wrote (``change``: fields to alter, e.g. a wrong B1 scale)."""
    return VFASet(**{**written["vfa"], **change})


def _plan(bids, vfa_d1=None):
    raw = bids / "sub-01"
    anat = raw / "ses-D0" / "anat"
    vfa = VFASet(files=(anat / "a.nii.gz", anat / "b.nii.gz"), flip_angles_deg=(3.0, 15.0),
                 tr_s=0.0052, b1map=raw / "ses-D0" / "fmap" / "sub-01_ses-D0_TB1map.nii.gz",
                 b1_scale=0.01, b1_coverage=0.83)
    return ParticipantPlan(
        participant="01", baseline_session="D0",
        reference_t1w=anat / "sub-01_ses-D0_T1w.nii.gz",
        states=(ContrastState("D0", None, None, anat / "sub-01_ses-D0_T1w.nii.gz", vfa),
                ContrastState("D1", "AGuIX", "AGuIX",
                              raw / "ses-D1" / "anat" / "sub-01_ses-D1_ce-AGuIX_T1w.nii.gz",
                              vfa_d1 or vfa,
                              "D0", evidence="sidecar ContrastBolusAgent 'AGUIX 100 MG/KG'")),
        lesion_mask=LesionMask(anat / "sub-01_ses-D0_desc-metastases_dseg.nii.gz", "dseg", "D0"),
        covariates={"dose_mg_per_kg": 100.0, "primary_tumor": "NSCLC"},
        warnings=("plan says hello",), baseline_reason="earliest by acq_time in scans.tsv",
        session_order="acq_time in scans.tsv",
        intensity={anat / "a.nii.gz": IntensityScaling(0.25, "Philips display values / 4")})


def test_find_maps_classifies_by_registry_key(outputs):
    out, _ = outputs
    keys = {(m.key, m.session, m.agent) for m in find_maps(out, "01")}
    for ses, agent in (("D0", "Dotarem"), ("D1", "AGuIX"), ("D8", "AGuIX")):
        for key in ("T1map", "enhancement", "concentration", "delta_r1"):
            assert (key, ses, agent) in keys
    assert ("T1map", "D0", None) in keys
    assert ("lesion_dseg", None, None) in keys and ("control_dseg", None, None) in keys
    assert not any(k[0] == "R1map" for k in keys)      # desc-delta_R1map is delta R1


def test_registration_check_applies_the_pipeline_transforms(outputs):
    """Native T1w + from-orig_to-T1w transform -> back on the reference (D1); a wrong (identity)
    transform leaves the 3-voxel motion visible (D8)."""
    out, written = outputs

    grid = nib.as_closest_canonical(nib.load(str(written["reference"])))
    ref = np.asanyarray(grid.dataobj)
    lesion_free = written["lesions"] == 0
    notes = []
    planes = tuple(n // 2 - 1 for n in ref.shape)
    moved = dict(_session_t1ws(out, "01", None, written["bids"], written["reference"], grid,
                               planes, notes))
    assert not notes and set(moved) == {"ses-D0 Dotarem", "ses-D1 AGuIX", "ses-D8 AGuIX"}
    inner = np.zeros_like(lesion_free)
    inner[4:-4, 4:-4, 4:-4] = True
    d1, d8 = moved["ses-D1 AGuIX"], moved["ses-D8 AGuIX"]
    on_planes = np.zeros(ref.shape, bool)
    on_planes[planes[0]], on_planes[:, planes[1]], on_planes[:, :, planes[2]] = True, True, True
    assert (np.isfinite(d1) == on_planes).all()          # only the three planes are resampled
    sel = lesion_free & inner & on_planes
    assert np.abs(d1[sel] - ref[sel]).max() < 1e-3 * ref.max()
    assert np.abs(d8[sel] - ref[sel]).mean() > 0.05 * ref[sel].mean()


def test_report_drawn_in_parallel_is_the_report_drawn_in_one_process(outputs, tmp_path):
    """--nprocs 2 draws the figure sections in two forked processes: the page is byte for byte
    the one drawn in one process, the notes the sections add included (a missing B1 map adds a
    note from the fit section, which runs in a worker)."""
    out, written = outputs
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    plan = _plan(written["bids"], _vfa_d1(written, b1map=tmp_path / "missing_TB1map.nii.gz"))
    serial = build_participant_report(copy, "01", plan=plan, nprocs=1).read_text()
    parallel = build_participant_report(copy, "01", plan=plan, nprocs=2).read_text()
    assert "fit-quality view of" in serial          # the fit section's note reached the page
    assert parallel == serial


def test_participant_report_sections_images_and_content(outputs):
    out, written = outputs
    path = build_participant_report(out, "sub-01", plan=_plan(written["bids"], _vfa_d1(written)),
                                    warnings=["registration of ses-D8 moved 2 mm"])
    assert path == out / "sub-01.html"
    text = path.read_text()
    parser = PageParts(text)
    assert {"summary", "plan", "registration", "maps", "view3d", "fit", "lesions", "methods",
            "software"} <= parser.ids
    assert not parser.external                      # self-contained: no scripts or stylesheets
    # T1w registration, the VFA flicker pair; T1, delta R1, SE, Gd; the 3D views (SE and Gd,
    # one per agent of the post states); B1+ and VFA residual
    agents = {m.agent for m in find_maps(out, "01") if m.agent}
    assert len(parser.imgs) == 1 + 2 + 4 + 2 * len(agents) + 2
    for src in parser.imgs:
        m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
        assert m and base64.b64decode(m.group(1))[:4] == b"\x89PNG"
    # the plan, the warnings (argument, plan, log file) and the lesion table are shown
    assert "3, 15" in text and "ses-D0" in text and "NSCLC" in text
    # ... and why: baseline, order, evidence, B1 (percent, partial coverage), scaling
    assert "earliest by acq_time in scans.tsv" in text and "acq_time in scans.tsv" in text
    assert "sidecar ContrastBolusAgent &#x27;AGUIX 100 MG/KG&#x27;" in text
    assert "sub-01_ses-D0_TB1map.nii.gz (x0.01), covering 83 % of the VFA field of view" in text
    assert "a.nii.gz (scaling: Philips display values / 4; x0.25)" in text
    for w in ("registration of ses-D8 moved 2 mm", "plan says hello",
              "ses-D8: no pre-contrast T1w, baseline used",
              "ses-D1: no B1 map, nominal flip angles used"):
        assert w in text
    assert "stale warning" not in text and "bids_agquant.layout" not in text
    assert text.count("control-") == len(CONTROLS)
    assert "measurable lesions" in text
    assert re.search(r"card-value\">%d<" % sum(2 * r * 2.0 >= 10 for _, r in LESIONS.values()),
                     text)
    assert "numpy" in text and "nibabel" in text


def test_report_without_maps_still_builds(tmp_path):
    (tmp_path / "sub-02").mkdir()
    path = build_participant_report(tmp_path, "02")
    text = path.read_text()
    assert "No lesion table" in text and "No session T1w could be brought" in text
    assert "No maps were found" in text


def test_report_finds_the_reference_from_sidecars_without_plan(outputs):
    out, written = outputs
    path = build_participant_report(out, "01", bids_dir=written["bids"])
    text = path.read_text()
    agents = {m.agent for m in find_maps(out, "01") if m.agent}
    # no plan: no VFA views; T1w registration, four mosaics, the 3D views (SE, Gd per agent)
    assert text.count("data:image/png;base64,") == 1 + 4 + 2 * len(agents)
    assert "reference T1w not found" not in text


def _copy(outputs, tmp_path):
    out, written = outputs
    shutil.copytree(out, tmp_path / "out")
    shutil.copytree(written["bids"], tmp_path / "out_bids")
    return tmp_path / "out", tmp_path / "out_bids"


def test_report_shows_every_registered_map_and_no_error(outputs):
    """The maps the registry finds on disk are exactly the ones the report lists; no note of
    the report is an error, and none holds a path."""
    out, written = outputs
    on_disk = [p.relative_to(out) for p in (out / "sub-01").rglob("*") if p.is_file()]
    registered = {rel: D.registered_key(rel) for rel in on_disk}
    expected = {rel.as_posix() for rel, hit in registered.items()
                if hit is not None and hit[0] in SHOWN_MAPS}
    # every NIfTI the fixture wrote is a registered map; the sidecars and the log are not
    assert expected == {rel.as_posix() for rel in on_disk if rel.name.endswith(".nii.gz")}
    assert not any(hit for rel, hit in registered.items() if rel.suffix == ".json"
                   and "stats" not in rel.name)
    assert {m.path.relative_to(out).as_posix() for m in find_maps(out, "01")} == expected
    notes = []
    _session_t1ws(out, "01", _plan(written["bids"]), written["bids"], written["reference"],
                  nib.load(str(written["reference"])), (4, 4, 4), notes)
    assert notes == []
    path = build_participant_report(out, "01", plan=_plan(written["bids"], _vfa_d1(written)),
                                    bids_dir=written["bids"])
    parser = PageParts(path.read_text())
    assert expected <= set(parser.codes)
    assert f">{len(expected)}<" in path.read_text()          # the "maps found" card
    for note in parser.notes:
        assert "skipped" not in note and "error" not in note.lower()
        assert str(out) not in note and "/tmp" not in note


def test_transform_sidecar_is_never_read_as_a_transform(outputs, tmp_path):
    """Each registered transform has its JSON sidecar beside it; only the transform is found,
    and a session whose transform is missing (sidecar left) is simply not shown."""
    out, bids = _copy(outputs, tmp_path)
    xfms = D.find_outputs(out, "01", "xfm_t1w")
    assert len(xfms) == 3
    for f in xfms:
        side = f.path.with_suffix(".json")
        assert f.path.suffix == ".mat" and side.is_file()
        assert D.registered_key(side.relative_to(out)) is None
    d8 = D.find_outputs(out, "01", "xfm_t1w", ses="D8")
    assert len(d8) == 1
    d8[0].path.unlink()                                    # the sidecar stays
    notes = []
    ref = bids / "sub-01" / "ses-D0" / "anat" / "sub-01_ses-D0_T1w.nii.gz"
    moved = dict(_session_t1ws(out, "01", None, bids, ref, nib.load(str(ref)), (4, 4, 4), notes))
    assert notes == [] and set(moved) == {"ses-D0 Dotarem", "ses-D1 AGuIX"}


def test_unreadable_transform_gives_a_one_line_note_without_paths(outputs, tmp_path):
    out, bids = _copy(outputs, tmp_path)
    (bad,) = D.find_outputs(out, "01", "xfm_t1w", ses="D1")
    bad.path.write_bytes(b"not an ITK transform")
    notes = []
    ref = bids / "sub-01" / "ses-D0" / "anat" / "sub-01_ses-D0_T1w.nii.gz"
    moved = dict(_session_t1ws(out, "01", None, bids, ref, nib.load(str(ref)), (4, 4, 4), notes))
    assert "ses-D1 AGuIX" not in moved and len(moved) == 2
    assert len(notes) == 1 and "ses-D1 AGuIX" in notes[0]
    assert "\n" not in notes[0] and "/" not in notes[0] and bad.path.name not in notes[0]


def test_qa_section_shows_every_state_and_marks_the_flagged_cell(outputs, tmp_path):
    from bids_agquant.bids import columns as C
    from bids_agquant.bids import tables as T
    from bids_agquant.interfaces.qa import qa_rows

    out, _ = outputs
    shutil.copytree(out, tmp_path / "out")
    out = tmp_path / "out"
    d0 = {"session_id": "ses-D0", "contrast_state": "pre"}
    d1 = {"session_id": "ses-D1", "contrast_state": "AGuIX"}
    rows = qa_rows("sub-01", [(d0, "vfa_fit", {"vfa_systematic_residual": 0.002}),
                              (d1, "vfa_fit", {"vfa_systematic_residual": 0.04}),
                              (d1, "t1w_to_reference", {"registration_ncc": 0.95})],
                   [], [(d0, 40.0), (d1, 41.0)], None, (1.0, 1.0, 1.0))
    T.write_tsv(out / D.participant_path("qa_table", "01"), rows, C.columns(C.QA_TABLE))
    text = build_participant_report(out, "01").read_text()
    parts = PageParts(text)
    assert "qa" in parts.ids
    assert parts.cards["QA flags"]["value"] == "1"
    section = text[text.index('id="qa"'):]
    section = section[:section.index("</section>")]
    assert section.count('class="num qa-flag"') == 1
    assert "ses-D1 AGuIX: vfa fit vfa_systematic_residual = 0.04" in section
    assert section.split("<tbody>")[1].count("<tr>") == 2      # one row per state
    # without a QA table (older outputs) there is no section and no card
    (out / D.participant_path("qa_table", "01")).unlink()
    parts = PageParts(build_participant_report(out, "01").read_text())
    assert "qa" not in parts.ids and "QA flags" not in parts.cards
