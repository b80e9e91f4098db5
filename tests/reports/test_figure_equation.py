"""The fit equation printed on a group figure: R2 only where it says something (three or more
points; through two points it is 1 by construction)."""
from bids_agquant.qmri.cohort import linear_regression
from bids_agquant.reports.figures import _eq


def test_two_points_give_the_line_without_r2():
    fit = linear_regression([50.0, 100.0], [29.5, 68.9])
    assert fit.r2 == 1.0
    text = _eq(fit)
    assert text.startswith("y = 0.79x") and "R\u00b2" not in text


def test_three_points_give_r2():
    fit = linear_regression([30.0, 60.0, 100.0], [20.0, 50.0, 60.0])
    assert f"R\u00b2 = {fit.r2:.2f}" in _eq(fit)
