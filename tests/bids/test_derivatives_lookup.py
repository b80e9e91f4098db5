"""Finding outputs again through the registry: the names derivative_path gives, and only those."""
from __future__ import annotations

import pytest

from bids_agquant.bids import derivatives as D

SOURCES = ("sub-01_ses-D1_ce-AGuIX_flip-1_VFA.nii.gz", "sub-01_ses-D0_T1w.nii.gz",
           "sub-02_ses-3_acq-fast_run-2_T1w.nii.gz")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("key", sorted(D.OUTPUTS))
def test_every_registered_name_is_found_again_with_its_source_entities(key, source):
    rel = D.derivative_path(key, source)
    ents, _, _ = D.parse_bids_name(source)
    expected = {k: ents[k] for k in D.SOURCE_ENTITIES if k in ents}
    assert D.registered_key(rel) == (key, expected)


@pytest.mark.parametrize("rel", [
    "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_from-orig_to-T1w_mode-image_xfm.json",
    "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_T1map.json",
    "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_flip-1_space-T1w_T1map.nii.gz",   # extra entity
    "sub-01/ses-D1/sub-01_ses-D1_ce-AGuIX_space-T1w_T1map.nii.gz",              # wrong folder
    "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_T1map.nii.gz",                   # no space-
    "sub-01/ses-D1/anat/sub-01_ses-D1_space-T1w_desc-other_R1map.nii.gz",
    "sub-01/ses-D1/anat/.sub-01_ses-D1_space-T1w_R1map.nii.gz.abc.tmp",          # atomic temp
    "sub-01/log/sub-01_participant.log",
])
def test_other_files_are_not_outputs(rel):
    assert D.registered_key(rel) is None


def test_find_outputs_filters_by_key_and_entities(tmp_path):
    names = [D.derivative_path(k, s) for k in ("T1map", "xfm_t1w")
             for s in ("sub-01_ses-D1_ce-AGuIX_T1w.nii.gz", "sub-01_ses-D0_T1w.nii.gz")]
    for rel in names + [D.participant_path("lesion_table", "01")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / names[2]).with_suffix(".json").write_text("{}")       # a transform's sidecar
    assert len(D.list_outputs(tmp_path, "01")) == 5
    assert [f.path for f in D.find_outputs(tmp_path, "01", "xfm_t1w")] == \
        sorted(tmp_path / n for n in names[2:])
    (pre,) = D.find_outputs(tmp_path, "01", "T1map", ce=None)
    assert pre.path == tmp_path / names[1] and pre.entities == {"sub": "01", "ses": "D0"}
    assert D.find_outputs(tmp_path, "02") == []
    with pytest.raises(KeyError):
        D.find_outputs(tmp_path, "01", "T1w")
