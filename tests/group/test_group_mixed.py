"""Mixed-effects models of the group level (bids_agquant.group.mixed) on simulated per-lesion
tables with a known truth: a participant random intercept, a known dose slope, a fixed seed.
The real statsmodels fits them; nothing is mocked."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from paper_cohort import write_paper_cohort

from bids_agquant.config import Config
from bids_agquant.group import mixed, run_group

DOSES = (15.0, 30.0, 50.0, 75.0, 100.0)
TRUE_SLOPE = 1.1          # % per mg/kg


def cohort(seed: int, *, participant_sd: float, residual_sd: float, per_dose: int = 3,
           lesions: int = 3) -> pd.DataFrame:
    """Per-lesion rows: SE = 5 + slope * dose + u_participant + e_lesion."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, dose in enumerate(np.repeat(DOSES, per_dose)):
        u = rng.normal(0.0, participant_sd)
        for j in range(lesions):
            rows.append(dict(participant=f"{i + 1:02d}", dose=dose, tumour=f"type{i}",
                             se=5.0 + TRUE_SLOPE * dose + u + rng.normal(0.0, residual_sd)))
    return pd.DataFrame(rows)


def _slope(frame: pd.DataFrame) -> dict[str, mixed.MixedRow]:
    rows = mixed.fit_slope(frame, y="se", x="dose", model="dose response", response="SE (%)",
                           term="dose (mg/kg)", unit="% per mg/kg")
    return {("mixed" if r.method == mixed.MIXED else "lesion"): r for r in rows}


def test_large_participant_variance_mixed_ci_covers_truth_and_is_wider():
    fits = _slope(cohort(7, participant_sd=30.0, residual_sd=5.0))
    m, naive = fits["mixed"], fits["lesion"]
    assert m.status == mixed.OK and naive.status == mixed.OK
    assert m.ci_low < TRUE_SLOPE < m.ci_high
    assert (m.ci_high - m.ci_low) > 1.5 * (naive.ci_high - naive.ci_low)
    assert m.participant_variance > m.residual_variance
    assert (m.n_lesions, m.n_participants) == (45, 15)
    assert m.df == 15 - 2                        # dose is a participant-level covariate


def test_mixed_ci_has_its_coverage_and_the_lesion_level_one_does_not():
    """Over 200 simulated cohorts the mixed 95 % CI covers the true slope about 95 % of the
    time; the lesion-level CI, which treats the 3 lesions of a participant as 3 patients, far
    less (the binomial SD of a 95 % coverage over 200 runs is 1.5 %)."""
    hits = {"mixed": 0, "lesion": 0}
    for seed in range(200):
        for k, r in _slope(cohort(seed, participant_sd=30.0, residual_sd=5.0)).items():
            hits[k] += r.ci_low < TRUE_SLOPE < r.ci_high
    assert 0.90 <= hits["mixed"] / 200 <= 0.99, hits
    assert hits["lesion"] / 200 < 0.80, hits


def test_one_participant_per_level_is_not_testable_and_has_no_p():
    frame = cohort(3, participant_sd=30.0, residual_sd=5.0)
    rows = mixed.fit_factor(frame, y="se", factor="tumour", model="primary tumour",
                            response="SE (%)", unit="%", factor_name="tumour type",
                            level_name="type")
    assert {r.method for r in rows} == {mixed.MIXED, mixed.LESION_LEVEL}
    for r in rows:
        assert r.status == mixed.NOT_TESTABLE
        assert all(math.isnan(v) for v in (r.p_value, r.estimate, r.ci_low, r.ci_high))
        assert "tumour type is confounded with participant (1 participant per type)" in r.note


def test_too_few_participants_is_not_testable():
    frame = cohort(3, participant_sd=30.0, residual_sd=5.0, per_dose=1)[lambda f: f.dose < 40]
    fits = _slope(frame)
    assert {r.status for r in fits.values()} == {mixed.NOT_TESTABLE}
    assert all(math.isnan(r.p_value) for r in fits.values())
    assert f"fewer than {mixed.MIN_PARTICIPANTS} participants (2)" in fits["mixed"].note


def test_no_participant_effect_is_singular_and_says_what_it_fell_back_to():
    """Participant means exactly on the line (lesion errors centred within each participant):
    the participant variance has its REML maximum at zero."""
    frame = cohort(1, participant_sd=0.0, residual_sd=5.0)
    line = 5.0 + TRUE_SLOPE * frame["dose"]
    error = frame["se"] - line
    frame["se"] = line + error - error.groupby(frame["participant"]).transform("mean")
    fits = _slope(frame)
    m = fits["mixed"]
    assert m.status == mixed.SINGULAR
    assert "boundary" in m.note and "clustered" in m.note
    assert math.isfinite(m.p_value) and m.ci_low < TRUE_SLOPE < m.ci_high
    assert m.df == m.n_participants - 1


def test_unfittable_design_fails_with_a_message_and_no_numbers():
    frame = cohort(2, participant_sd=30.0, residual_sd=5.0)
    frame["se"] = np.where(np.arange(len(frame)) % 2, np.inf, frame["se"])   # dropped
    frame.loc[frame.index[::2], "se"] = 1e308                                 # overflows
    fits = _slope(frame)
    m = fits["mixed"]
    assert m.status == mixed.FAILED, m
    assert m.note.startswith("mixed model failed:")
    assert all(math.isnan(v) for v in (m.p_value, m.estimate, m.ci_low, m.ci_high))
    # the lesion-level view of the same data is no better, and says so
    lesion = fits["lesion"]
    assert lesion.status == mixed.FAILED, lesion
    assert lesion.note.startswith("lesion-level fit failed:")
    assert all(math.isnan(v) for v in (lesion.p_value, lesion.estimate, lesion.ci_low,
                                       lesion.ci_high))


def _confounded_cohort(tmp_path):
    """The paper cohort with every participant a different tumour type."""
    bids, out = write_paper_cohort(tmp_path)
    p = pd.read_csv(bids / "participants.tsv", sep="\t")
    p["primary_tumor"] = [f"tumour{i}" for i in range(len(p))]
    p.to_csv(bids / "participants.tsv", sep="\t", index=False)
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    return out / "group"


def test_report_of_a_confounded_design_has_no_p_value_for_that_factor(tmp_path):
    group = _confounded_cohort(tmp_path)
    models = pd.read_csv(group / "mixed_models.tsv", sep="\t", keep_default_na=False)
    tumour = models[models["model"] == "primary tumour"]
    assert set(tumour["status"]) == {"not testable"} and set(tumour["p_value"]) == {"n/a"}
    tests = pd.read_csv(group / "group_tests.tsv", sep="\t", keep_default_na=False)
    kw = tests[tests["factor"] == "primary_tumor"].iloc[0]
    assert kw["p_value"] == "n/a" and kw["note"].startswith("not testable")
    html = (group / "report.html").read_text()
    card = re.search(r"tumour types differ\?.*?</div>\s*</div>", html, re.S).group(0)
    assert "not testable" in card and "confounded with participant" in card
    assert not re.search(r"p\s*(=|&lt;|<)\s*\d", card)
    # no row of the report's test tables about primary tumour shows a p-value either
    tested = [row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
              if ("primary tumour" in row or "primary_tumor" in row)
              and any(k in row for k in ("kruskal", "REML", "OLS"))]
    assert len(tested) == 3                     # the rank test, the mixed and the OLS rows
    for row in tested:
        assert "not testable" in row, row


def test_the_docs_state_the_thresholds_the_code_uses():
    """docs/group_statistics.md quotes the constants of bids_agquant.group.mixed: if one changes,
    this says where the text must follow."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "group_statistics.md").read_text()
    assert f"fewer than {mixed.MIN_PARTICIPANTS} participants in the fit" in text
    assert f"fewer than {mixed.MIN_PARTICIPANTS_PER_LEVEL} participants each" in text
    assert f"within {mixed.BOUNDARY_LOGLIKE_TOLERANCE:g} of the fitted one" in text
    assert f"({mixed.CONFIDENCE:.0%})".replace("%", " %") in text
