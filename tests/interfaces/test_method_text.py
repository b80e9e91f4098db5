"""bids_agquant.methods: the sidecar method text follows the constants it describes."""
from __future__ import annotations

import pytest

from bids_agquant import methods
from bids_agquant.interfaces.registration import REGISTRATION_SETTINGS
from bids_agquant.qmri import lesions as L


def test_registration_text_states_the_sampling_the_code_uses():
    text = methods.registration_software("0.6.3", REGISTRATION_SETTINGS)
    assert text == ("antspyx 0.6.3 antsRegistration: rigid, Mattes MI (32 bins, ~10000 random "
                    "samples), images at ~2 mm, shrink (4, 2) then 1, one thread, fixed seed")
    assert REGISTRATION_SETTINGS["sampling_strategy"] == "Random"
    other = {**REGISTRATION_SETTINGS, "sampling_strategy": "Regular", "samples": 5000,
             "histogram_bins": 64, "target_spacing_mm": 1.5, "coarse_shrink_factors": (8, 4)}
    assert methods.registration_software("x", other) == (
        "antspyx x antsRegistration: rigid, Mattes MI (64 bins, ~5000 regular samples), images "
        "at ~1.5 mm, shrink (8, 4) then 1, one thread, fixed seed")


def test_control_text_is_made_of_the_placement_constants():
    text = methods.control_regions_method(seed=0, diameter_mm=25.0)
    assert text == ("qmri.lesions.control_regions: three spheres of one diameter in the brain "
                    "mask, each >= 97 % parenchyma by the tissue classes and by the registered "
                    "template's priors, >= 10 mm from lesions and from each other, seed 0; 25 mm "
                    "asked, shrunk in 2.5 mm steps (down to 10 mm) only when three do not fit: "
                    "RegionDiameterMM is the size used")
    assert (L.N_CONTROLS, L.CONTROL_MARGIN_MM, L.CONTROL_DIAMETER_STEP_MM,
            L.CONTROL_MIN_DIAMETER_MM, L.CONTROL_MIN_PARENCHYMA_FRACTION) == (3, 10.0, 2.5, 10.0,
                                                                              0.97)
    assert methods.control_regions_method(seed=4, diameter_mm=17.5, n=2).startswith(
        "qmri.lesions.control_regions: two spheres")
    assert "when 12 do not fit" in methods.control_regions_method(seed=4, diameter_mm=17.5, n=12)


def test_brain_mask_and_normalisation_texts():
    assert methods.brain_mask_method(from_t1=True) == (
        "baseline pre-contrast T1 within 0.5-2.2 s, opened and closed with a 3 mm ball, largest "
        "component")
    assert methods.brain_mask_method(from_t1=False) == (
        "reference T1w above its Otsu threshold, largest component, eroded by 10 mm (no baseline "
        "T1 map)")
    assert methods.intensity_normalization("brain", same_session=True).startswith(
        f"post-contrast T1w divided by the median of post/pre over the brain mask >= "
        f"{L.HEALTHY_MARGIN_MM:g} mm from every lesion")
    assert methods.intensity_normalization("off", same_session=True) == (
        "none (pre- and post-contrast T1w of one session)")
    assert methods.intensity_normalization("off", same_session=False) == (
        "none (--se-normalization off)")


@pytest.mark.parametrize("fit", sorted(methods.FIT_METHODS))
def test_vfa_method_text_names_the_fit(fit):
    assert methods.vfa_estimation_method(fit) == f"VFA / DESPOT1: {methods.FIT_METHODS[fit]}"
    with pytest.raises(KeyError):
        methods.vfa_estimation_method("unknown")
