"""B1+ maps that miss part of the head: the polynomial fill (qmri.b1) against known fields."""
from __future__ import annotations

import numpy as np
import pytest

from bids_agquant.qmri.b1 import MIN_COVERED_FRACTION, fill_uncovered_b1

AFFINE = np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -110], [0, 0, 3.0, -90], [0, 0, 0, 1]])
SHAPE = (90, 110, 60)


def _grid():
    ijk = np.indices(SHAPE).reshape(3, -1).T
    world = ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    head = ((world[:, 0] / 75) ** 2 + (world[:, 1] / 95) ** 2 + (world[:, 2] / 80) ** 2 <= 1)
    return world, head.reshape(SHAPE)


def _slab(b1, head, world, fraction_missing, side):
    z = world[:, 2].reshape(SHAPE)
    if side == "top":
        keep = z <= np.quantile(z[head], 1 - fraction_missing)
    else:
        keep = z >= np.quantile(z[head], fraction_missing)
    return np.where(keep, b1, np.nan)


def test_a_quadratic_field_is_filled_exactly():
    world, head = _grid()
    x, y, z = (world[:, i] / 100 for i in range(3))
    b1 = (1.0 + 0.1 * x - 0.05 * y + 0.08 * z - 0.2 * x * x - 0.1 * z * z + 0.05 * x * y)
    b1 = b1.reshape(SHAPE)
    filled = fill_uncovered_b1(_slab(b1, head, world, 0.3, "top"), head, AFFINE)
    assert filled.filled_fraction == pytest.approx(0.3, abs=0.02)
    covered = head & ~filled.filled
    lo, hi = b1[covered].min(), b1[covered].max()            # the fill is clipped to these
    np.testing.assert_allclose(filled.b1[filled.filled], np.clip(b1[filled.filled], lo, hi),
                               rtol=1e-9)
    assert np.array_equal(filled.b1[covered], b1[covered])          # measured values kept
    assert np.isnan(filled.b1[~head & (world[:, 2].reshape(SHAPE) > 60)]).all()


@pytest.mark.parametrize("width_mm", [60.0, 80.0, 120.0])
@pytest.mark.parametrize("side", ["top", "bottom"])
def test_a_3t_like_field_missing_a_fifth_of_the_head(width_mm, side):
    """Central brightening (a Gaussian bump, as the simulator's fields), a gradient and a
    vertical curvature, spanning 0.8-1.2 over the head; a fifth of the head outside the slab:
    the filled B1 is within 1.5 % (median) and 5 % (95th percentile) of the truth."""
    world, head = _grid()
    centre = np.array([5.0, -8.0, 15.0])
    raw = (np.exp(-((world - centre) ** 2).sum(axis=1) / (2 * width_mm ** 2))
           + (0.3 * world[:, 0] + 0.2 * world[:, 2]) / 100 + 0.5 * (world[:, 2] / 100) ** 2)
    raw = raw.reshape(SHAPE)
    lo, hi = raw[head].min(), raw[head].max()
    b1 = 0.8 + 0.4 * (raw - lo) / (hi - lo)
    filled = fill_uncovered_b1(_slab(b1, head, world, 0.2, side), head, AFFINE)
    err = np.abs(filled.b1[filled.filled] / b1[filled.filled] - 1)
    assert np.median(err) < 0.015 and np.quantile(err, 0.95) < 0.05
    assert filled.b1[filled.filled].min() >= b1[head & ~filled.filled].min()   # clipped


def test_too_little_coverage_is_refused_and_full_coverage_is_untouched():
    world, head = _grid()
    b1 = np.ones(SHAPE)
    with pytest.raises(ValueError, match="covers"):
        fill_uncovered_b1(_slab(b1, head, world, 1 - MIN_COVERED_FRACTION + 0.05, "top"), head,
                          AFFINE)
    same = fill_uncovered_b1(b1, head, AFFINE)
    assert same.filled_fraction == 0.0 and not same.filled.any() and same.b1 is not None
