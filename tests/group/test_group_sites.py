"""Group level on a multi-site cohort: site and scanner per session, QA by site, exclusion.

The paper cohort (15 participants, ``paper_cohort.py``) is spread over three sites, two at 3 T
and one at 1.5 T (T1 map sidecars of every session), with participant QA tables written by the
participant level's own row builder; one session of one participant carries a flagged metric.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
from paper_cohort import write_paper_cohort

from bids_agquant.bids import columns as C
from bids_agquant.bids import derivatives as D
from bids_agquant.bids import tables as T
from bids_agquant.config import Config
from bids_agquant.errors import GroupDataError
from bids_agquant.group import run_group
from bids_agquant.interfaces.qa import qa_rows

SITES = {"A": ("Siemens", "Prisma", 3.0), "B": ("GE", "SIGNA Premier", 3.0),
         "C": ("Philips", "Ingenia", 1.5)}


def _multisite(root, flagged=("01", "D8")):
    bids, out = write_paper_cohort(root)
    parts = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    labels = [p.removeprefix("sub-") for p in parts["participant_id"]]
    site_of = {p: "ABC"[i % 3] for i, p in enumerate(labels)}
    parts["site"] = [site_of[p] for p in labels]
    parts.to_csv(bids / "participants.tsv", sep="\t", index=False)
    lesions = pd.concat(pd.read_csv(f, sep="\t", dtype=str) for f in
                        sorted(out.glob("sub-*/sub-*_desc-lesions_stats.tsv")))
    for p in labels:
        man, model, b0 = SITES[site_of[p]]
        sessions = sorted(set(lesions.loc[lesions.participant_id == f"sub-{p}", "session_id"]))
        for ses in sessions:
            anat = out / f"sub-{p}" / ses / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            (anat / f"sub-{p}_{ses}_space-T1w_T1map.json").write_text(json.dumps(
                {"Manufacturer": man, "ManufacturersModelName": model,
                 "MagneticFieldStrength": b0}))
        records = []
        for ses in sessions:
            where = {"session_id": ses, "contrast_state": "pre"}
            bad = (p, ses.removeprefix("ses-")) == flagged
            records.append((where, "vfa_fit", {"vfa_systematic_residual": 0.03 if bad else
                                               0.002}))
            records.append((where, "vfa_to_t1w", {"registration_ncc": 0.97}))
        rows = qa_rows(f"sub-{p}", records, [], [({"session_id": s, "contrast_state": "pre"},
                                                  40.0) for s in sessions], None, (1, 1, 1))
        T.write_tsv(out / D.participant_path("qa_table", p), rows, C.columns(C.QA_TABLE))
    return bids, out, site_of


@pytest.fixture(scope="module")
def multisite(tmp_path_factory):
    return _multisite(tmp_path_factory.mktemp("sites"))


def test_cohort_rows_carry_site_scanner_and_session_qa(multisite):
    bids, out, site_of = multisite
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    cohort = T.read_tsv(out / "group" / "cohort_lesions.tsv")
    for r in cohort.to_dict("records"):
        p = r["participant_id"].removeprefix("sub-")
        man, model, b0 = SITES[site_of[p]]
        assert (r["site"], r["manufacturer"], r["manufacturers_model_name"]) == (
            site_of[p], man, model)
        assert float(r["magnetic_field_strength_t"]) == b0
        bad = (p, r["session_id"]) == ("01", "ses-D8")
        assert r["session_qa_flagged"] == ("true" if bad else "false"), r
        assert (r["session_qa_flags"] == "pre vfa_fit vfa_systematic_residual") == bad
    by_site = T.read_tsv(out / "group" / "qa_by_site.tsv")
    assert list(by_site.columns) == list(C.columns("qa_by_site"))
    assert sorted(by_site["site"]) == ["A", "B", "C"]
    assert set(by_site["magnetic_field_strength_t"].astype(float)) == {1.5, 3.0}
    n_flagged = dict(zip(by_site["site"], by_site["n_sessions_flagged"].astype(int)))
    assert n_flagged == {site_of["01"]: 1, **{s: 0 for s in "ABC" if s != site_of["01"]}}
    assert by_site["n_participants"].astype(int).sum() == 15
    row = by_site[by_site["site"] == site_of["01"]].iloc[0]
    assert row["flagged_metrics"] == "vfa_systematic_residual (1)"
    report = (out / "group" / "report.html").read_text()
    assert "Sites and QA" in report and "sub-01 ses-D8" in report
    summary = json.loads((out / "group" / "summary.json").read_text())
    assert summary["qa_excluded_sessions"] == []


def test_exclude_qa_flagged_leaves_the_flagged_session_out(tmp_path):
    bids, out, _ = _multisite(tmp_path)
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group",
                     exclude_qa_flagged=True))
    cohort = T.read_tsv(out / "group" / "cohort_lesions.tsv")
    kept = set(zip(cohort["participant_id"], cohort["session_id"]))
    assert ("sub-01", "ses-D8") not in kept and ("sub-01", "ses-D1") in kept
    summary = json.loads((out / "group" / "summary.json").read_text())
    assert summary["qa_excluded_sessions"] == ["sub-01 ses-D8"]
    assert any("--exclude-qa-flagged" in w for w in summary["warnings"])
    # the persistence table no longer holds sub-01's D8 lesions
    pers = T.read_tsv(out / "group" / "persistence.tsv")
    assert not ((pers["participant_id"] == "sub-01") & (pers["later_session"] == "ses-D8")).any()
    assert (pers["later_session"] == "ses-D8").any()


def test_exclusion_of_everything_is_one_clear_error(tmp_path):
    bids, out, _ = _multisite(tmp_path)
    for f in out.glob("sub-*/sub-*_desc-qa_stats.tsv"):
        df = T.read_tsv(f)
        df["qa_flag"] = "true"
        T.write_tsv(f, df, list(df.columns))
    with pytest.raises(GroupDataError, match="every session has a QA flag"):
        run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group",
                         exclude_qa_flagged=True))


def test_outputs_without_qa_tables_or_sites_still_group(tmp_path):
    bids, out = write_paper_cohort(tmp_path)
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group",
                     exclude_qa_flagged=True))
    cohort = T.read_tsv(out / "group" / "cohort_lesions.tsv")
    assert cohort["session_qa_flagged"].isna().all() and cohort["site"].isna().all()
    by_site = T.read_tsv(out / "group" / "qa_by_site.tsv")
    assert len(by_site) == 1 and int(by_site["n_sessions_with_qa"].iloc[0]) == 0
