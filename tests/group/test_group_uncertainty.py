"""The group level uses the participant table's per-region limits where it has them."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bids_agquant.group import analysis as A
from bids_agquant.qmri import cohort


def _rows(with_uncertainty: bool) -> pd.DataFrame:
    rows = pd.DataFrame({
        "participant": ["01"] * 5, "session": ["D8"] * 5, "agent": ["AGuIX"] * 5,
        "is_control": [False, False, True, True, True],
        "conc_mean_mM": [0.004, 0.0015, 0.001, -0.001, 0.0005],
        "conc_sd_mM": [0.01, 0.01, 0.003, 0.003, 0.003], "n_voxels": [400.0] * 5})
    nan = float("nan")
    if with_uncertainty:
        rows["conc_lod_mM"] = [0.0010, 0.0030, 0.0012, 0.0012, 0.0012]
        rows["conc_detected"] = pd.Series([True, False, False, False, False], dtype=object)
        rows["conc_quantifiable"] = pd.Series([False, False, False, False, False], dtype=object)
    else:
        rows["conc_lod_mM"] = [nan] * 5
        rows["conc_detected"] = pd.Series([None] * 5, dtype=object)
        rows["conc_quantifiable"] = pd.Series([None] * 5, dtype=object)
    return rows


def test_per_region_limits_are_used_as_written():
    rows = _rows(True)
    A._detection_limits(rows)
    assert list(rows["detection_limit_mM"]) == [0.0010, 0.0030, 0.0012, 0.0012, 0.0012]
    assert set(rows["detection_limit_source"]) == {A.LOD_FROM_LESION}
    # 0.004 mM is above its own limit of detection but below quantification: detected, and
    # not quantified (the old rule, above the LOD, would have called it quantified)
    assert list(rows["conc_detected"]) == [True, False, False, False, False]
    assert list(rows["conc_quantified"]) == [False] * 5


def test_tables_without_them_fall_back_to_the_control_rms():
    rows = _rows(False)
    A._detection_limits(rows)
    lod = cohort.detection_limit(np.array([0.001, -0.001, 0.0005]))
    assert rows["detection_limit_mM"].iloc[0] == pytest.approx(lod)
    assert rows["detection_limit_source"].iloc[0] == A.LOD_FROM_CONTROLS
    assert list(rows["conc_quantified"][:2]) == [0.004 > lod, 0.0015 > lod]
    assert list(rows["conc_detected"][:2]) == [0.004 > lod, 0.0015 > lod]


def test_inverse_variance_mean():
    m, se = cohort.inverse_variance_mean([1.0, 3.0, np.nan, 5.0], [1.0, 2.0, 1.0, 0.0])
    w = np.array([1.0, 0.25])
    assert m == pytest.approx((1.0 * 1 + 3.0 * 0.25) / w.sum())
    assert se == pytest.approx(1 / math.sqrt(w.sum()))
    assert all(math.isnan(v) for v in cohort.inverse_variance_mean([np.nan], [1.0]))
