"""Relaxivity registry: synonyms, field strength, overrides, unknown agents, mass conversion."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from bids_agquant.qmri.relaxivity import (UnknownAgentError, canonical_agent, get_relaxivity,
                                          known_agents)


@pytest.mark.parametrize("label", ["Dotarem", "dotarem", "DOTAREM", "gadoterate", "Gadoterate",
                                   "Gd-DOTA", "gd_dota", "GdDOTA", "gadoterate meglumine",
                                   "Gadoterate-Meglumine"])
def test_dotarem_synonyms_match_case_insensitively(label):
    assert canonical_agent(label) == "Dotarem"
    assert get_relaxivity(label, 3.0).agent == "Dotarem"


@pytest.mark.parametrize("label", ["AGuIX", "aguix", "AGUIX", "AGu-IX"])
def test_aguix_labels(label):
    assert canonical_agent(label) == "AGuIX"


def test_unknown_labels_are_not_guessed():
    assert canonical_agent(None) is None
    assert canonical_agent("gadobutrol") is None
    assert canonical_agent("dota") is None          # a fragment is not a synonym


def test_values_of_the_paper_at_3t_and_field_choice():
    table = json.loads(resources.files("bids_agquant.data").joinpath("relaxivities.json")
                       .read_text())["agents"]
    assert set(known_agents()) == set(table)
    assert get_relaxivity("AGuIX", 3.0).r1_per_mM_s == 8.9           # paper, 3 T, per Gd
    assert get_relaxivity("Dotarem", 3.0).r1_per_mM_s == 3.5         # paper, 3 T
    for agent, entry in table.items():
        for field, r1 in entry["r1_per_gd"].items():
            relax = get_relaxivity(agent, float(field))
            assert relax.r1_per_mM_s == r1 and relax.field_strength_t == float(field)
            assert relax.source == "registry"
    # nearest tabulated field; None means 3 T
    assert get_relaxivity("Dotarem", 1.4).field_strength_t == 1.5
    assert get_relaxivity("Dotarem", 2.0).field_strength_t == 1.5
    assert get_relaxivity("Dotarem", 7.0).field_strength_t == 3.0
    assert get_relaxivity("Dotarem", None).field_strength_t == 3.0
    assert get_relaxivity("AGuIX", 1.5).r1_per_mM_s != get_relaxivity("AGuIX", 3.0).r1_per_mM_s


def test_overrides_win_and_match_through_synonyms():
    relax = get_relaxivity("gadoterate", 3.0, overrides={"Gd-DOTA": 3.0})
    assert relax.r1_per_mM_s == 3.0 and relax.source == "user override"
    assert relax.agent == "Dotarem"
    assert relax.mg_per_L_per_mM_gd == pytest.approx(558.64)     # mass data kept from the table
    # an override for another agent does not leak
    assert get_relaxivity("AGuIX", 3.0, overrides={"Dotarem": 3.0}).r1_per_mM_s == 8.9


def test_override_quantifies_an_unknown_agent_without_mass_data():
    relax = get_relaxivity("Gadovist", 3.0, overrides={"gadovist": 5.0})
    assert relax.r1_per_mM_s == 5.0 and relax.agent == "Gadovist"
    assert relax.mg_per_L_per_mM_gd != relax.mg_per_L_per_mM_gd      # NaN: mass unknown


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), "abc"])
def test_bad_override_value_names_the_option(bad):
    with pytest.raises(ValueError, match="--relaxivity"):
        get_relaxivity("Dotarem", 3.0, overrides={"Dotarem": bad})


def test_unknown_agent_error_names_the_relaxivity_fix():
    with pytest.raises(UnknownAgentError) as info:
        get_relaxivity("Gadovist", 3.0)
    message = str(info.value)
    assert "--relaxivity Gadovist=" in message
    assert "Gadovist" in message and "AGuIX" in message and "Dotarem" in message
    assert not message.startswith("'")          # a sentence, not a quoted KeyError repr


def test_aguix_mass_conversion_one_mg_per_L_is_one_micromolar_gd():
    aguix = get_relaxivity("AGuIX", 3.0)
    # ~10 kDa per particle, ~10 Gd per particle -> 1000 mg/L per mM of Gd -> 1 mg/L per uM
    assert aguix.mg_per_L_per_mM_gd == pytest.approx(1000.0)
    assert aguix.r1_per_mM_s * aguix.gd_per_particle == pytest.approx(89.0)   # per particle
    assert get_relaxivity("Dotarem", 3.0).gd_per_particle == 1
