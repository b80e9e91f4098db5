"""Cohort statistics: the paper's dose response, analytic regressions, grouping and tests."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bids_agquant.qmri import cohort

PAPER_DOSES = [15.0, 30.0, 50.0, 75.0, 100.0]
PAPER_MEAN_SE = [26.3, 24.8, 56.7, 64.4, 120.5]


def test_paper_dose_response_slope_and_r2():
    fit = cohort.linear_regression(PAPER_DOSES, PAPER_MEAN_SE)
    assert round(fit.slope, 2) == 1.08          # paper: slope 1.08
    assert round(fit.r2, 2) == 0.90             # paper: R2 = 0.90
    assert fit.n == 5
    assert fit.slope_ci_low < fit.slope < fit.slope_ci_high
    assert fit.slope_ci_low > 0                 # the dose effect is significant at 5 %
    assert fit.p_value < 0.05


def test_perfect_line_is_recovered_exactly():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    fit = cohort.linear_regression(x, 2.5 * x - 4.0)
    assert fit.slope == pytest.approx(2.5, abs=1e-12)
    assert fit.intercept == pytest.approx(-4.0, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.slope_se == pytest.approx(0.0, abs=1e-12)
    assert fit.slope_ci_low == pytest.approx(2.5, abs=1e-10)
    assert fit.p_value == 0.0
    assert np.allclose(fit.predict([0.0, 1.0]), [-4.0, -1.5])


def test_matches_scipy_linregress_and_textbook_ci():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 100, 23)
    y = 0.8 * x + 5 + rng.normal(0, 10, x.size)
    fit = cohort.linear_regression(x, y, confidence=0.90)
    ref = stats.linregress(x, y)
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert fit.r2 == pytest.approx(ref.rvalue ** 2, rel=1e-12)
    assert fit.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert fit.slope_se == pytest.approx(ref.stderr, rel=1e-12)
    assert fit.intercept_se == pytest.approx(ref.intercept_stderr, rel=1e-12)
    # textbook CI: estimate +/- t(0.95, n-2) * se  (90 % two-sided)
    t = stats.t.ppf(0.95, x.size - 2)
    assert fit.slope_ci_low == pytest.approx(ref.slope - t * ref.stderr, rel=1e-12)
    assert fit.intercept_ci_high == pytest.approx(ref.intercept + t * ref.intercept_stderr,
                                                  rel=1e-12)


def test_hand_computed_three_point_ci():
    # x = 0, 1, 2; y = 0, 2, 1: slope 0.5, intercept 0.5, SSE = 1.5, s2 = 1.5, Sxx = 2
    fit = cohort.linear_regression([0, 1, 2], [0, 2, 1])
    assert fit.slope == pytest.approx(0.5)
    assert fit.intercept == pytest.approx(0.5)
    se = math.sqrt(1.5 / 2)
    assert fit.slope_se == pytest.approx(se)
    t = 12.706204736174707                      # t(0.975, 1 dof), tables
    assert fit.slope_ci_high == pytest.approx(0.5 + t * se, rel=1e-9)
    assert fit.r2 == pytest.approx(0.25)


def test_regression_drops_nan_and_degenerates_to_nan():
    fit = cohort.linear_regression([1, 2, np.nan, 4], [2, 4, 5, np.nan])
    assert fit.n == 2 and fit.slope == pytest.approx(2.0)
    assert math.isnan(fit.slope_ci_low)         # no dof for a CI with two points
    assert math.isnan(cohort.linear_regression([3, 3, 3], [1, 2, 3]).slope)
    assert math.isnan(cohort.linear_regression([1], [1]).r2)
    with pytest.raises(ValueError, match="same length"):
        cohort.linear_regression([1, 2], [1])


def test_dose_normalisation():
    out = cohort.dose_normalised_se([26.3, 120.5, 10.0, 10.0], [15, 100, 0, np.nan])
    assert out[0] == pytest.approx(26.3 * 100 / 15)
    assert out[1] == pytest.approx(120.5)
    assert np.isnan(out[2]) and np.isnan(out[3])


@pytest.mark.parametrize("d, label", [(9.99, "other"), (10.0, "10-20 mm"), (19.9, "10-20 mm"),
                                      (20.0, "20-50 mm"), (50.0, "20-50 mm"), (50.1, "other"),
                                      (float("nan"), "other")])
def test_size_bins(d, label):
    assert cohort.size_bin(d) == label
    assert cohort.size_bins([d])[0] == label


def test_summaries_and_sensitivity():
    s = cohort.summarise_groups([1.0, 3.0, 10.0, np.nan], ["a", "a", "b", "b"])
    assert [g.group for g in s] == ["a", "b"]
    assert s[0].mean == pytest.approx(2.0) and s[0].sd == pytest.approx(math.sqrt(2))
    assert s[1].n == 1 and math.isnan(s[1].sd)
    assert cohort.sensitivity_percent(120.5, 195.6) == pytest.approx(61.6, abs=0.05)
    assert np.isnan(cohort.sensitivity_percent(10.0, 0.0))
    assert cohort.persistence_percent(32.4, 175.8) == pytest.approx(18.43, abs=0.01)


def test_kruskal_and_anova_against_scipy():
    g = {"NSCLC": [107, 50, 160, 90], "melanoma": [115, 40, 200], "colon": [87]}
    kw = cohort.group_difference_test(g)
    ref = stats.kruskal([107, 50, 160, 90], [115, 40, 200], [87])
    assert kw.test == "kruskal-wallis"
    assert kw.p_value == pytest.approx(ref.pvalue) and kw.n == 8 and kw.n_groups == 3
    an = cohort.group_difference_test(values=[1, 2, 3, 10, 11, 12], labels=list("aaabbb"),
                                      test="anova")
    assert an.test == "one-way anova"
    assert an.p_value == pytest.approx(stats.f_oneway([1, 2, 3], [10, 11, 12]).pvalue)
    assert an.p_value < 0.001
    single = cohort.group_difference_test({"a": [1, 2], "b": []})
    assert math.isnan(single.p_value) and "fewer than two" in single.note


def test_regress_by_group_and_detection_limit():
    x = np.array([10, 20, 30, 10, 20, 30], float)
    y = np.r_[3.3 * x[:3], 1.7 * x[3:] + 5]
    fits = cohort.regress_by_group(x, y, ["13", "13", "13", "14", "14", "14"])
    assert fits["13"].slope == pytest.approx(3.3) and fits["14"].slope == pytest.approx(1.7)
    assert cohort.detection_limit([0.001, -0.001, 0.002]) == pytest.approx(
        3 * math.sqrt((1 + 1 + 4) / 3) * 1e-3)
    assert math.isnan(cohort.detection_limit([np.nan]))


def test_confidence_band_matches_textbook_and_contains_line():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 10, 12)
    y = 2 * x + 1 + rng.normal(0, 1, x.size)
    fit = cohort.linear_regression(x, y)
    lo, hi = fit.confidence_band([fit.x_mean, 0.0])
    # at mean(x) the half width is t * s / sqrt(n); at x = 0 it is the intercept's CI
    t = stats.t.ppf(0.975, x.size - 2)
    assert hi[0] - lo[0] == pytest.approx(2 * t * fit.residual_sd / math.sqrt(x.size))
    assert lo[1] == pytest.approx(fit.intercept_ci_low) and hi[1] == pytest.approx(
        fit.intercept_ci_high)
