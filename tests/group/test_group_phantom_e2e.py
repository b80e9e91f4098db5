"""End to end on a small multi-site phantom cohort: participant level for three participants of
three sites (two 3 T scanners, one 1.5 T; their own B1 patterns, gains, SNR, VFA protocols and
VFA T1 biases), then the group level, through the command line; the group tables agree with the
phantom's truth.

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
from bids_agquant.simulate.sites import apparent_t1_ratio

pytestmark = pytest.mark.slow

DOSES = (30.0, 60.0, 100.0)
SESSIONS = ("base", "inj", "late", "fu")
PARTICIPANTS = ("sub-A01", "sub-B01", "sub-C01")     # one per site of simulate.sites.SITES


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    sites = pytest.importorskip("bids_agquant.simulate.sites")
    from bids_agquant.cli.run import main
    root = tmp_path_factory.mktemp("phantom_cohort")
    bids, out = root / "bids", root / "out"
    sites.simulate_cohort(bids, truth_dir=root / "truth", preset="small", doses=DOSES,
                          primary_tumors=("NSCLC", "breast", "melanoma"), sessions=SESSIONS,
                          seed=5)
    assert main([str(bids), str(out), "participant", "-w", str(root / "work"),
                 "--nprocs", "2"]) == 0
    assert main([str(bids), str(out), "group"]) == 0
    return root


def _cohort_truth(cohort):
    return json.loads((cohort / "truth" / "cohort.json").read_text())


def _truth_lesions(cohort):
    return [r for site in _cohort_truth(cohort)["sites"]
            for r in _rows(cohort / "truth" / site["truth_dir"] / "lesions.tsv")]


def test_group_dose_table_matches_the_truth(cohort):
    truth = [r for r in _truth_lesions(cohort)
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
    for p in PARTICIPANTS:
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
    for p in PARTICIPANTS:
        page = (out / f"{p}.html").read_text()
        agents = {m.agent for m in find_maps(out, p.removeprefix("sub-")) if m.agent}
        # T1w registration, the VFA flicker pair; T1, delta R1, SE, Gd; the 3D views (SE and Gd
        # per agent); B1+ and VFA residual
        assert page.count("data:image/png;base64,") == 1 + 2 + 4 + 2 * len(agents) + 2
        assert f'href="../{p}.html"' in html


def test_sites_scanners_and_site_effects_in_the_group_tables(cohort):
    out, record = cohort / "out" / "group", _cohort_truth(cohort)
    truth_cfg = {s["label"]: json.loads((cohort / "truth" / s["truth_dir"] /
                                         "truth.json").read_text())["config"]
                 for s in record["sites"]}
    by_site = {r["site"]: r for r in _rows(out / "qa_by_site.tsv")}
    assert sorted(by_site) == sorted(truth_cfg)
    assert {float(c["field_strength_t"]) for c in truth_cfg.values()} == {1.5, 3.0}
    for site, cfg in truth_cfg.items():
        row = by_site[site]
        assert row["manufacturer"] == cfg["manufacturer"]
        assert row["manufacturers_model_name"] == cfg["manufacturers_model_name"]
        assert float(row["magnetic_field_strength_t"]) == cfg["field_strength_t"]
        assert int(row["n_participants"]) == 1 and int(row["n_sessions"]) == len(SESSIONS)
        # the site's VFA T1 bias is what the NAWM T1 shows (white matter T1 0.85 s)
        expected = 0.85 * apparent_t1_ratio(cfg)
        assert float(row["nawm_t1_median_s"]) == pytest.approx(expected, rel=0.04), site
    # the biases differ between the sites: 3 T site C reads white matter > 10 % longer than A,
    # which the field-relative column shows against the 3 T median (B is alone at 1.5 T)
    assert float(by_site["C"]["nawm_t1_median_s"]) > 1.1 * float(by_site["A"]["nawm_t1_median_s"])
    ratio = {s: apparent_t1_ratio(c) for s, c in truth_cfg.items()}
    assert float(by_site["B"]["nawm_t1_relative_to_field"]) == 1.0
    for site in ("A", "C"):
        expected = ratio[site] / np.median([ratio["A"], ratio["C"]])
        assert float(by_site[site]["nawm_t1_relative_to_field"]) == pytest.approx(expected,
                                                                                  rel=0.03)
    cohort_rows = _rows(out / "cohort_lesions.tsv")
    site_of = {f"sub-{p}": s["label"] for s in record["sites"] for p in s["participants"]}
    for r in cohort_rows:
        assert r["site"] == site_of[r["participant_id"]]
        assert float(r["magnetic_field_strength_t"]) == \
            truth_cfg[r["site"]]["field_strength_t"]


def test_site_vfa_bias_propagates_to_concentration_as_predicted(cohort):
    """Concentration is delta R1 / r1 (r1 at each site's own field): a protocol that reads T1
    k times too long reads delta R1, hence concentration, about 1/k too low."""
    import pandas as pd
    from bids_agquant.simulate import load_truth
    for site in _cohort_truth(cohort)["sites"]:
        truth = load_truth(cohort / "truth" / site["truth_dir"])
        (p,) = site["participants"]
        t = pd.read_csv(cohort / "out" / f"sub-{p}" / f"sub-{p}_desc-lesions_stats.tsv",
                        sep="\t", na_values="n/a", keep_default_na=False)
        les = t[t.region_type == "lesion"].copy()
        les["truth_id"] = truth.match_lesions(
            p, les[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy())
        m = les.merge(truth.lesion_table(p), left_on=["truth_id", "session_id"],
                      right_on=["lesion_id", "session_id"], suffixes=("", "_true"))
        m = m[m.measurable_true.astype(str).str.lower().eq("true")
              & (m.axial_diameter_mm >= 10)]
        assert len(m) >= 4, site["label"]
        predicted = 1.0 / apparent_t1_ratio(truth.meta["config"])
        got = float(np.median(m.conc_mean_mM / m.conc_vfa_mM))
        assert got == pytest.approx(predicted, rel=0.06), (site["label"], got, predicted)
