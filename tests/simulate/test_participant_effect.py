"""The phantom's participant effect (``participant_uptake_sd``): off by default, lognormal with
mean 1 when set, one factor per participant."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bids_agquant.simulate.config import make_config
from bids_agquant.simulate.dataset import participant_uptake_factor


def test_no_participant_effect_by_default_and_not_recorded():
    cfg = make_config("small", n_participants=15)
    assert {participant_uptake_factor(cfg, i) for i in range(15)} == {1.0}
    assert "participant_uptake_sd" not in cfg.to_dict()


def test_participant_factors_are_lognormal_with_mean_one():
    sd = 0.3
    cfg = make_config("small", n_participants=4000, participant_uptake_sd=sd)
    logs = np.log([participant_uptake_factor(cfg, i) for i in range(4000)])
    # log factor ~ N(-sd^2/2, sd^2): 4000 draws give the SD of the mean about 0.005
    assert logs.mean() == pytest.approx(-sd * sd / 2, abs=0.02)
    assert logs.std(ddof=1) == pytest.approx(sd, rel=0.05)
    assert math.isclose(participant_uptake_factor(cfg, 7), participant_uptake_factor(cfg, 7))
    assert cfg.to_dict()["participant_uptake_sd"] == sd
    with pytest.raises(ValueError, match="participant_uptake_sd"):
        make_config("small", participant_uptake_sd=-0.1)
