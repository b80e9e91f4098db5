"""The participant report of a real pipeline run (small simulated phantom, through the CLI).

Slow: runs the participant workflow once. Checks computed facts: the maps the report lists are
exactly the registered maps on disk, every registered transform has its JSON sidecar beside it
(the case that used to put ITK errors in every report), and the report shows no error note.
"""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from bids_agquant import simulate
from bids_agquant.bids import derivatives as D
from bids_agquant.cli.run import main
from bids_agquant.reports.participant import SHOWN_MAPS, find_maps

pytestmark = pytest.mark.slow


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.notes, self.codes, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "p" and dict(attrs).get("class") == "note":
            self._in, self.notes = "note", self.notes + [""]
        elif tag == "code":
            self._in, self.codes = "code", self.codes + [""]

    def handle_endtag(self, tag):
        if tag in ("p", "code"):
            self._in = None

    def handle_data(self, data):
        if self._in:
            (self.notes if self._in == "note" else self.codes)[-1] += data


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_run")
    simulate.simulate_dataset(root / "bids", preset="small", n_participants=1,
                              sessions=["pre", "inj"], seed=21)
    out = root / "out"
    code = main([str(root / "bids"), str(out), "participant", "-w", str(root / "work"),
                 "--nprocs", "2"])
    assert code == 0
    return out


def test_report_of_a_pipeline_run_lists_the_registered_maps_and_no_error(pipeline_run):
    out = pipeline_run
    on_disk = [p.relative_to(out) for p in (out / "sub-01").rglob("*") if p.is_file()]
    hits = {rel: D.registered_key(rel) for rel in on_disk}
    expected = {rel.as_posix() for rel, hit in hits.items() if hit and hit[0] in SHOWN_MAPS}
    assert expected and {m.path.relative_to(out).as_posix()
                         for m in find_maps(out, "01")} == expected
    xfms = [rel for rel, hit in hits.items() if hit and hit[0] in ("xfm_t1w", "xfm_vfa")]
    assert xfms and all((out / rel).with_suffix(".json").is_file() for rel in xfms)
    parser = _Text()
    parser.feed((out / "sub-01.html").read_text())
    assert expected <= set(parser.codes)
    for note in parser.notes:
        assert "skipped" not in note and "error" not in note.lower() and str(out) not in note


def test_3d_view_puts_every_lesion_where_the_lesion_table_says(pipeline_run):
    """The surfaces the report's 3D view draws enclose each lesion's table centroid (2 mm)."""
    import csv

    import numpy as np

    from bids_agquant.reports import render3d as R3
    from bids_agquant.reports.citation import CITATION_FILE

    out = pipeline_run
    maps = find_maps(out, "01")
    dseg = next(m.path for m in maps if m.key == "lesion_dseg")
    brain = next(m.path for m in maps if m.key == "brain_mask")
    _, surfaces = R3.surfaces_of(brain, dseg)
    table = out / D.participant_path("lesion_table", "01")
    with open(table, newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["region_type"] == "lesion"]
    centroids = {int(r["lesion_id"]): np.array([float(r[f"centroid_{a}_mm"]) for a in "xyz"])
                 for r in rows}
    assert centroids and sorted(surfaces) == sorted(centroids)
    for label, centre in centroids.items():
        assert np.linalg.norm(surfaces[label].enclosed_centroid() - centre) < 2.0, label
    page = (out / "sub-01.html").read_text()
    assert 'id="view3d"' in page and "per lesion" in page
    # the methods text of the run is written and shown
    methods = (out / CITATION_FILE).read_text()
    assert "bids_agquant" in methods and "## References" in methods
    assert (out / CITATION_FILE).with_suffix(".bib").read_text().count("@article") >= 5
    assert "No methods text was written" not in page and "[verry2020]" not in page
