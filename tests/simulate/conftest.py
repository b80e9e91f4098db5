"""Small phantoms shared by the simulator tests (generated once per test module)."""
from __future__ import annotations

import pytest

from bids_agquant.simulate import simulate_dataset


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    """Noisy small phantom: one participant, all four sessions, three lesions."""
    root = tmp_path_factory.mktemp("small")
    truth = simulate_dataset(root / "bids", truth_dir=root / "truth", preset="small",
                             n_participants=1, seed=11)
    return truth


@pytest.fixture(scope="module")
def noiseless_phantom(tmp_path_factory):
    """Noiseless small phantom (float32 images): one participant, sessions D0 D1 D28."""
    root = tmp_path_factory.mktemp("noiseless")
    return simulate_dataset(root / "bids", truth_dir=root / "truth", preset="small",
                            n_participants=1, seed=7, snr=None, motion_deg=5.0, motion_mm=8.0,
                            lesion_diameters_mm=(10.0, 24.0), drop_sessions={"01": ("D8",)})
