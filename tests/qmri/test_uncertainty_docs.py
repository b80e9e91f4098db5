"""docs/uncertainty.md states the constants of qmri/uncertainty.py as they are."""
from __future__ import annotations

from pathlib import Path

from bids_agquant.qmri import uncertainty as U

DOC = Path(__file__).resolve().parents[2] / "docs" / "uncertainty.md"


def test_the_page_states_the_constants_of_the_code():
    text = DOC.read_text()
    assert f"`NOISE_WINDOW_MM` = {U.NOISE_WINDOW_MM:g} mm" in text
    assert f"`NOISE_PLANES` = {U.NOISE_PLANES}" in text
    assert f"`Z_95` = {U.Z_95:.2f}" in text
    assert f"`CRITICAL_Z * sigma0` = {U.CRITICAL_Z:.3f} sigma0" in text
    assert f"`LOD_FACTOR * sigma0` = {U.LOD_FACTOR:.2f} sigma0" in text
    assert f"`LOQ_FACTOR * sigma0` = {U.LOQ_FACTOR:g} sigma0" in text
