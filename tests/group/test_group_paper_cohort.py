"""run_group on a cohort built from the paper's numbers: the paper's statistics come back."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from paper_cohort import (DIAMETERS, PAPER_DOSES, PAPER_MEAN_SE, PAPER_SENSITIVITY,
                      PERSISTENCE_FRACTION, SE_CONC_SLOPES, TUMORS, lesion_se, read_tsv,
                      session_labels, write_paper_cohort)
from scipy import stats

from bids_agquant.config import Config
from bids_agquant.group import GroupDataError, GroupInputError, run_group


def _num(v: str) -> float:
    return float("nan") if v == "n/a" else float(v)


def test_dose_response_is_the_papers(paper_group):
    _, out = paper_group
    reg = {r["model"]: r for r in read_tsv(out / "group" / "dose_response_regression.tsv")}
    means = reg["mean SE per dose on dose"]
    assert round(_num(means["slope"]), 2) == 1.08          # paper Fig. 2A
    assert round(_num(means["r2"]), 2) == 0.90
    assert int(means["n"]) == 5
    assert _num(means["slope_ci_low"]) < 1.08 < _num(means["slope_ci_high"])
    by_dose = read_tsv(out / "group" / "dose_response_by_dose.tsv")
    assert [_num(r["dose_mg_per_kg"]) for r in by_dose] == list(PAPER_DOSES)
    # the 8 mm lesions (SE 500 %) are not measurable and must not enter the means
    assert np.allclose([_num(r["mean"]) for r in by_dose], PAPER_MEAN_SE, atol=1e-4)
    assert all(int(r["n_lesions"]) == 9 for r in by_dose)
    # all lesion SEs on dose: the same slope (balanced design), more points
    assert int(reg["lesion SE on dose"]["n"]) == 45
    assert _num(reg["lesion SE on dose"]["slope"]) == pytest.approx(_num(means["slope"]), rel=1e-5)


def test_sessions_ordered_by_acq_time_not_by_label(paper_group):
    _, out = paper_group
    rows = read_tsv(out / "group" / "cohort_lesions.tsv")
    roles = {(r["participant_id"], r["session_id"], r["contrast_agent"]): r["session_role"]
             for r in rows}
    # participant 02 uses labels baseline/inj/week1/month1: "month1" < "week1" by name
    assert roles[("sub-02", "ses-inj", "AGuIX")] == "peak"
    assert roles[("sub-02", "ses-week1", "AGuIX")] == "persistence"
    assert roles[("sub-02", "ses-baseline", "Dotarem")] == "reference"
    assert roles[("sub-02", "ses-month1", "Dotarem")] == "other"
    assert {r["session_order_source"] for r in rows} == {"acq_time in sessions.tsv"}


def test_dose_normalised_groups_and_kruskal_wallis(paper_group):
    _, out = paper_group
    expected: dict[str, list] = {}
    by_size: dict[str, list] = {"10-20 mm": [], "20-50 mm": []}
    for i, tumor in enumerate(TUMORS):
        norm = [se * 100 / PAPER_DOSES[i // 3] for se in lesion_se(i)]
        expected.setdefault(tumor, []).extend(norm)
        for d, v in zip(DIAMETERS, norm):
            by_size["10-20 mm" if d < 20 else "20-50 mm"].append(v)
    groups = {(r["factor"], r["group"]): r
              for r in read_tsv(out / "group" / "se_normalised_by_group.tsv")}
    for tumor, values in expected.items():
        row = groups[("primary_tumor", tumor)]
        assert int(row["n"]) == len(values)
        assert _num(row["mean"]) == pytest.approx(np.mean(values), rel=1e-5)
        assert _num(row["sd"]) == pytest.approx(np.std(values, ddof=1), rel=1e-5)
    tests = {r["factor"]: r for r in read_tsv(out / "group" / "group_tests.tsv")}
    ref = stats.kruskal(*[expected[k] for k in sorted(expected)])
    assert tests["primary_tumor"]["test"] == "kruskal-wallis"
    assert _num(tests["primary_tumor"]["p_value"]) == pytest.approx(ref.pvalue, rel=1e-5)
    ref_size = stats.kruskal(by_size["10-20 mm"], by_size["20-50 mm"])
    assert _num(tests["size_bin"]["p_value"]) == pytest.approx(ref_size.pvalue, rel=1e-5)


def test_sensitivity_and_aguix_vs_dotarem(paper_group):
    _, out = paper_group
    sens = read_tsv(out / "group" / "sensitivity_by_dose.tsv")
    assert np.allclose([_num(r["sensitivity_percent"]) for r in sens], PAPER_SENSITIVITY,
                       atol=1e-4)
    cmp = {r["primary_tumor"]: r for r in read_tsv(out / "group" / "aguix_vs_dotarem.tsv")}
    assert set(cmp) == {"all", "NSCLC", "breast"}          # the 100 mg/kg patients #13-#15
    assert all(r["dose_or_scope"] == "100" for r in cmp.values())
    assert _num(cmp["NSCLC"]["slope"]) == pytest.approx(0.616, rel=1e-5)
    assert int(cmp["NSCLC"]["n"]) == 6 and int(cmp["breast"]["n"]) == 3


def test_concentration_slopes_upper_bound_and_uptake(paper_group):
    _, out = paper_group
    fits = {r["participant_id"]: r for r in read_tsv(out / "group" / "se_vs_concentration.tsv")}
    assert set(fits) == {"sub-13", "sub-14", "sub-15"}
    for p, slope in SE_CONC_SLOPES.items():
        assert _num(fits[f"sub-{p}"]["slope"]) == pytest.approx(slope, rel=1e-5)
    pers = read_tsv(out / "group" / "persistence.tsv")
    assert len(pers) == 45
    for r in pers:
        assert _num(r["persistence_percent"]) == pytest.approx(100 * PERSISTENCE_FRACTION)
        assert r["conc_quantified"] == "false"     # 0.0005 mM < 3 x RMS(controls) or n/a
        p = r["participant_id"].removeprefix("sub-")
        if p in SE_CONC_SLOPES:
            assert _num(r["conc_upper_mg_per_L"]) == pytest.approx(
                _num(r["se_later_percent"]) / SE_CONC_SLOPES[p], rel=1e-5)
        else:
            assert math.isnan(_num(r["conc_upper_mg_per_L"]))
    per_p = {r["participant_id"]: r
             for r in read_tsv(out / "group" / "persistence_by_participant.tsv")}
    for p, slope in SE_CONC_SLOPES.items():      # paper: D8 bound = mean D8 SE / slope
        row = per_p[f"sub-{p}"]
        assert int(row["n_quantified"]) == 0
        assert _num(row["conc_upper_mg_per_L"]) == pytest.approx(
            PERSISTENCE_FRACTION * np.mean(lesion_se(int(p) - 1)) / slope, rel=1e-5)
    idg = [r for r in read_tsv(out / "group" / "percent_id_per_g.tsv")
           if r["session_role"] == "peak" and r["measurable"] == "true"]
    assert len(idg) == 9                                    # patients #13-#15, 3 lesions each
    for r in idg:
        expected = 100 * (_num(r["conc_mean_mg_per_L"]) / 1000) / (
            _num(r["dose_mg_per_kg"]) * _num(r["weight_kg"]))
        assert _num(r["percent_id_per_g"]) == pytest.approx(expected, rel=1e-5)


def test_control_flag_and_summary(paper_group):
    _, out = paper_group
    ctl = read_tsv(out / "group" / "controls.tsv")
    flagged = [r for r in ctl if r["flag"] != "ok"]
    assert [(r["participant_id"], r["session_role"]) for r in flagged] == [("sub-04", "peak")]
    assert "|SE| > 10 %" in flagged[0]["flag"]
    summary = json.loads((out / "group" / "summary.json").read_text())
    assert any("sub-04" in w and "control" in w for w in summary["warnings"])
    assert summary["n_participants"] == 15
    assert summary["dose_response"]["mean_se_on_dose"]["slope"] == pytest.approx(1.0809, abs=1e-4)
    assert summary["session_roles"]["sub-02"]["sessions_by_agent"]["AGuIX"] == [
        "ses-inj", "ses-week1"]
    for t in ("cohort_lesions", "dose_response_regression", "persistence"):
        dictionary = json.loads((out / "group" / f"{t}.json").read_text())
        header = (out / "group" / f"{t}.tsv").read_text().splitlines()[0].split("\t")
        assert list(dictionary) == header
        assert all("Description" in v for v in dictionary.values())


def test_writes_only_under_group(tmp_path):
    bids, out = write_paper_cohort(tmp_path, n_participants=6)
    (out / "sub-01.html").write_text("<html></html>")           # a participant report
    # Every input is dated one day back first: a file the run rewrites then shows a new mtime
    # even on a filesystem that keeps whole seconds (an unchanged mtime proves "not rewritten").
    for p in tmp_path.rglob("*"):
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 86_400 * 10**9))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    # (the folder OUTPUT_DIR itself changes: group/ is created in it)
    new_or_changed = {p for p in after if before.get(p) != after[p] and p != out}
    assert new_or_changed
    assert all(p == out / "group" or (out / "group") in p.parents for p in new_or_changed)
    assert not any(p.name.endswith(".tmp") for p in after)
    html = (out / "group" / "report.html").read_text()
    assert 'href="../sub-01.html"' in html and 'href="../sub-02.html"' not in html


def test_missing_covariates_skip_only_what_needs_them(tmp_path, caplog):
    bids, out = write_paper_cohort(tmp_path, participants_columns=("primary_tumor",),
                                   n_participants=6)
    with caplog.at_level("WARNING", logger="bids_agquant.group"):
        run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    g = out / "group"
    assert read_tsv(g / "dose_response_regression.tsv") == []      # needs dose
    assert read_tsv(g / "percent_id_per_g.tsv") == []              # needs dose and weight
    assert read_tsv(g / "sensitivity_by_dose.tsv") == []
    assert len(read_tsv(g / "controls.tsv")) == 6 * 4               # needs nothing
    assert len(read_tsv(g / "persistence.tsv")) == 6 * 3
    assert any("dose_mg_per_kg" in m for m in caplog.messages)
    summary = json.loads((g / "summary.json").read_text())
    assert any("dose_mg_per_kg" in w for w in summary["warnings"])
    assert any("weight_kg" in w for w in summary["warnings"])
    html = (g / "report.html").read_text()
    assert "dose_mg_per_kg" in html and "warning" in html


def test_no_participants_tsv_and_labels_without_acq_time(tmp_path):
    bids, out = write_paper_cohort(tmp_path, write_participants=False, n_participants=4)
    for f in bids.glob("sub-*/sub-*_sessions.tsv"):
        f.unlink()
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    summary = json.loads((out / "group" / "summary.json").read_text())
    assert any("participants.tsv" in w for w in summary["warnings"])
    assert any("ordered by label" in w for w in summary["warnings"])
    # D-labels sort naturally (D0 < D1 < D8 < D28): roles still right for participant 01
    roles = {(r["session_id"], r["contrast_agent"]): r["session_role"]
             for r in read_tsv(out / "group" / "cohort_lesions.tsv")
             if r["participant_id"] == "sub-01"}
    assert roles[("ses-D1", "AGuIX")] == "peak" and roles[("ses-D8", "AGuIX")] == "persistence"
    assert roles[("ses-D0", "Dotarem")] == "reference"
    assert session_labels(0)["D1"] == "D1"
    assert read_tsv(out / "group" / "group_tests.tsv") == []


def test_clear_errors(tmp_path):
    (tmp_path / "bids").mkdir()
    (tmp_path / "out").mkdir()
    with pytest.raises(GroupInputError, match="run the participant level first"):
        run_group(Config(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                         analysis_level="group"))
    bad = tmp_path / "out" / "sub-01" / "sub-01_desc-lesions_stats.tsv"
    bad.parent.mkdir()
    bad.write_text("participant_id\tsession_id\nsub-01\tses-D1\n")
    with pytest.raises(GroupDataError, match="sub-01_desc-lesions_stats.tsv.*missing column"):
        run_group(Config(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                         analysis_level="group"))
