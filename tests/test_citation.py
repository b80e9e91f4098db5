"""The methods text and its references follow the run (bids_agquant/citation.py)."""
from __future__ import annotations

import dataclasses
import re

import pytest

from bids_agquant.reports import citation as C
from bids_agquant import methods as MT
from bids_agquant.bids.layout import build_plans
from bids_agquant.bids.tables import software_versions
from bids_agquant.config import Config, VFAFit
from bids_agquant.interfaces.brain import TEMPLATE_REGISTRATION
from bids_agquant.interfaces.registration import REGISTRATION_SETTINGS
from bids_agquant.qmri import b1methods as B1M


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("citation")
    out = {}
    for method in ("TB1map", "TB1AFI"):
        simulate.simulate_dataset(root / method, preset="small", n_participants=1,
                                  sessions=["D0", "D1"], snr=None, seed=5, b1_method=method)
        out[method] = root / method
    return out


def text_of(ds, **changes):
    config = Config(bids_dir=ds, output_dir=ds.parent / "out", analysis_level="participant",
                    work_dir=ds.parent / "work")
    config = dataclasses.replace(config, **changes)
    plans = build_plans(config)
    text, keys = C.methods_text(versions=software_versions(), config=config, plans=plans,
                                registration_settings=REGISTRATION_SETTINGS,
                                brain_settings=TEMPLATE_REGISTRATION)
    return text, keys, plans


def test_the_text_states_the_protocol_the_fit_and_the_versions_of_the_run(datasets):
    text, keys, plans = text_of(datasets["TB1map"])
    vfa = next(s.vfa for s in plans[0].states if s.vfa is not None)
    for angle in vfa.flip_angles_deg:
        assert f"{angle:g}" in text
    assert f"TR {vfa.tr_s * 1e3:g} ms" in text
    assert MT.FIT_METHODS["nonlinear"] in text
    versions = software_versions()
    for name in ("nipype", "pybids", "antspyx"):
        assert versions[name] in text
    # the linear fit changes the sentence
    linear, _, _ = text_of(datasets["TB1map"], vfa_fit=VFAFit.LINEAR)
    assert MT.FIT_METHODS["linear"] in linear and MT.FIT_METHODS["nonlinear"] not in linear


def test_relaxivity_values_and_their_source_are_the_runs(datasets):
    text, _, _ = text_of(datasets["TB1map"])
    assert "(registry)" in text
    overridden, _, _ = text_of(datasets["TB1map"], relaxivity_overrides={"AGuIX": 7.25})
    assert "AGuIX 7.25 /(mM s) per Gd (user override)" in overridden


def test_b1_method_is_named_and_cited(datasets):
    text, keys, _ = text_of(datasets["TB1AFI"])
    assert "TB1AFI" in keys and B1M.METHODS["TB1AFI"].title in text
    plain, plain_keys, _ = text_of(datasets["TB1map"])
    assert "TB1AFI" not in plain_keys and "read as a factor" in plain


def test_references_are_numbered_in_order_and_every_citation_resolves(datasets):
    text, keys, _ = text_of(datasets["TB1AFI"])
    md = C.citation_markdown(text, keys)
    body, refs = md.split("## References")
    cited = [int(n) for group in re.findall(r"\[(\d+(?:, \d+)*)\]", body)
             for n in group.split(", ")]
    first_seen = list(dict.fromkeys(cited))
    assert first_seen == list(range(1, len(keys) + 1))
    listed = re.findall(r"^(\d+)\. ", refs, flags=re.M)
    assert [int(n) for n in listed] == first_seen
    assert "[verry2020]" not in md and "10.1126/sciadv.aay5279" in refs
    bib = C.citation_bibtex(keys)
    entries = re.findall(r"@article\{(\w+),", bib)
    assert entries == [k for k in keys if k in C.REFERENCES]
    assert bib.count("{") == bib.count("}")
