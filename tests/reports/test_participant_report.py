"""The participant report: found maps, sections, inline images, lesion table, warnings."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest
from participant_fixture import CONTROLS, LESIONS, make_participant_outputs

from bids_agquant.bids.plan import ContrastState, LesionMask, ParticipantPlan, VFASet
from bids_agquant.reports.participant import build_participant_report, find_maps


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.external = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("link", "script", "iframe"):
            self.external.append(tag)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("derivatives")
    make_participant_outputs(out, "01")
    return out


def _plan(out):
    anat = out / "sub-01" / "ses-D0" / "anat"
    vfa = VFASet(files=(anat / "a.nii.gz", anat / "b.nii.gz"), flip_angles_deg=(3.0, 15.0),
                 tr_s=0.0052)
    return ParticipantPlan(
        participant="01", baseline_session="D0",
        reference_t1w=anat / "sub-01_ses-D0_space-T1w_desc-preproc_T1w.nii.gz",
        states=(ContrastState("D0", None, None, anat / "pre_T1w.nii.gz", vfa),
                ContrastState("D1", "AGuIX", "AGuIX", anat / "post_T1w.nii.gz", vfa, "D0")),
        lesion_mask=LesionMask(anat / "sub-01_ses-D0_desc-metastases_dseg.nii.gz", "dseg", "D0"),
        covariates={"dose_mg_per_kg": 100.0, "primary_tumor": "NSCLC"},
        warnings=("plan says hello",))


def test_find_maps_classifies_by_entities(outputs):
    kinds = {(m.kind, m.session, m.agent) for m in find_maps(outputs, "01")}
    for ses, agent in (("D0", "Dotarem"), ("D1", "AGuIX"), ("D8", "AGuIX")):
        for kind in ("T1w", "T1map", "SE", "conc", "deltaR1"):
            assert (kind, ses, agent) in kinds
    assert ("T1map", "D0", None) in kinds and ("T1w", "D0", None) in kinds
    assert ("lesions", None, None) in kinds and ("controls", None, None) in kinds


def test_participant_report_sections_images_and_content(outputs):
    path = build_participant_report(outputs, "sub-01", plan=_plan(outputs),
                                    warnings=["registration of ses-D8 moved 2 mm"])
    assert path == outputs / "sub-01.html"
    text = path.read_text()
    parser = _Collect()
    parser.feed(text)
    assert {"summary", "plan", "registration", "maps", "lesions", "software"} <= parser.ids
    assert not parser.external                      # self-contained: no scripts or stylesheets
    assert len(parser.imgs) == 2                    # registration mosaic + maps mosaic
    for src in parser.imgs:
        m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
        assert m and base64.b64decode(m.group(1))[:4] == b"\x89PNG"
    # the plan, the warnings (argument, plan, log file) and the lesion table are shown
    assert "3, 15" in text and "ses-D0" in text and "NSCLC" in text
    for w in ("registration of ses-D8 moved 2 mm", "plan says hello",
              "ses-D8: no pre-contrast T1w, baseline used"):
        assert w in text
    assert text.count("control-") == len(CONTROLS)
    assert "measurable lesions" in text
    assert re.search(r"card-value\">%d<" % sum(2 * r * 2.0 >= 10 for _, r in LESIONS.values()),
                     text)
    assert "numpy" in text and "nibabel" in text


def test_report_without_maps_still_builds(tmp_path):
    (tmp_path / "sub-02").mkdir()
    path = build_participant_report(tmp_path, "02")
    text = path.read_text()
    assert "No lesion table" in text and "No T1w in the reference space" in text
    assert "No maps were found" in text
