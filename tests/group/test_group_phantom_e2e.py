"""End to end on a small phantom cohort: participant level for three participants, then the group
level, through the command line; the group tables agree with the phantom's truth.

Free-text session labels ("base", "inj", "late", "fu") in trial order: the peak and persistence
sessions must be recognised from the data (agents and sessions.tsv acq_time), not from labels.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bids_agquant.bids.evidence import SOURCE_SESSIONS_TSV
from bids_agquant.reports.participant import find_maps

pytestmark = pytest.mark.slow

DOSES = (30.0, 60.0, 100.0)
SESSIONS = ("base", "inj", "late", "fu")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    simulate = pytest.importorskip("bids_agquant.simulate")
    from bids_agquant.cli.run import main
    root = tmp_path_factory.mktemp("phantom_cohort")
    bids, out = root / "bids", root / "out"
    simulate.simulate_dataset(bids, truth_dir=root / "truth", preset="small", n_participants=3,
                              doses=DOSES, primary_tumors=("NSCLC", "breast", "melanoma"),
                              sessions=SESSIONS, seed=5)
    assert main([str(bids), str(out), "participant", "-w", str(root / "work"),
                 "--nprocs", "2"]) == 0
    assert main([str(bids), str(out), "group"]) == 0
    return root


def test_group_dose_table_matches_the_truth(cohort):
    truth = [r for r in _rows(cohort / "truth" / "lesions.tsv")
             if r["session_id"] == "ses-inj" and r["measurable"] == "true"]
    by_dose = {float(r["dose_mg_per_kg"]): r
               for r in _rows(cohort / "out" / "group" / "dose_response_by_dose.tsv")}
    assert sorted(by_dose) == list(DOSES)
    for dose in DOSES:
        true_se = [float(r["se_percent"]) for r in truth if float(r["dose_mg_per_kg"]) == dose]
        row = by_dose[dose]
        assert int(row["n_lesions"]) == len(true_se)
        assert float(row["mean"]) == pytest.approx(np.mean(true_se), rel=0.15, abs=2.0)
    reg = {r["model"]: r for r in _rows(cohort / "out" / "group" /
                                         "dose_response_regression.tsv")}
    true_means = [np.mean([float(r["se_percent"]) for r in truth
                           if float(r["dose_mg_per_kg"]) == d]) for d in DOSES]
    true_slope = np.polyfit(DOSES, true_means, 1)[0]
    assert float(reg["mean SE per dose on dose"]["slope"]) == pytest.approx(true_slope, rel=0.2)


def test_roles_controls_and_reports(cohort):
    out = cohort / "out"
    summary = json.loads((out / "group" / "summary.json").read_text())
    for p in ("sub-01", "sub-02", "sub-03"):
        roles = summary["session_roles"][p]
        assert roles["ordered_by"] == SOURCE_SESSIONS_TSV      # recorded by the participant level
        assert roles["sessions_by_agent"]["AGuIX"] == ["ses-inj", "ses-late"]
        assert roles["sessions_by_agent"]["Dotarem"] == ["ses-base", "ses-fu"]
    assert all(r["flag"] == "ok" for r in _rows(out / "group" / "controls.tsv"))
    pers = _rows(out / "group" / "persistence.tsv")
    assert pers and all(r["later_session"] == "ses-late" for r in pers)
    assert all(float(r["persistence_percent"]) < 50 for r in pers)
    html = (out / "group" / "report.html").read_text()
    assert html.count("data:image/svg+xml;base64,") >= 6
    for p in ("sub-01", "sub-02", "sub-03"):
        page = (out / f"{p}.html").read_text()
        agents = {m.agent for m in find_maps(out, p.removeprefix("sub-")) if m.agent}
        # T1w registration, the VFA flicker pair; T1, delta R1, SE, Gd; the 3D views (SE and Gd
        # per agent); B1+ and VFA residual
        assert page.count("data:image/png;base64,") == 1 + 2 + 4 + 2 * len(agents) + 2
        assert f'href="../{p}.html"' in html
