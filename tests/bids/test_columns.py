"""The column registry (data/columns.tsv, bids_agquant.bids.columns) and the participant table."""
from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np

from bids_agquant.bids import columns as C
from bids_agquant.bids.plan import ContrastState, ParticipantPlan
from bids_agquant.qmri import lesions as L
from bids_agquant.qmri import regions as R
from bids_agquant.qmri import uncertainty as U
from bids_agquant.qmri.relaxivity import get_relaxivity
from bids_agquant.workflows.participant import lesion_row_base

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (20, 20, 20)


def _raw_registry() -> list[dict]:
    path = resources.files("bids_agquant") / "data" / C.REGISTRY
    with resources.as_file(path) as p, open(p, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_registry_rows_are_unique_and_complete():
    rows = _raw_registry()
    keys = [(r["table"], r["column"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(r["description"] not in ("", "n/a") for r in rows)
    assert all(r[k] for r in rows for k in ("units", "levels", "header"))  # n/a, never empty


def test_the_json_dictionary_is_the_registry_text():
    for r in _raw_registry():
        entry = C.dictionary(r["table"], [r["column"]])[r["column"]]
        expected = {"Description": r["description"]}
        if r["units"] != "n/a":
            expected["Units"] = r["units"]
        if r["levels"] != "n/a":
            expected["Levels"] = json.loads(r["levels"])
        assert entry == expected
        assert C.header(r["table"], r["column"]) == (r["column"] if r["header"] == "n/a"
                                                     else r["header"])


def test_every_column_the_participant_table_writes_is_registered():
    """The rows of qmri.regions.region_rows (with every map and the workflow's row base)."""
    lesions = np.zeros(SHAPE, np.int32)
    lesions[2:8, 2:8, 2:8] = 1
    controls = np.zeros(SHAPE, np.int16)
    controls[12:18, 12:18, 12:18] = 1
    sizes = L.lesion_diameters(L.label_lesions(lesions, "dseg").labels, AFF)
    ones = np.ones(SHAPE)
    tissues = {"GM": 0.3 * ones, "WM": 0.6 * ones, "CSF": 0.1 * ones}
    reg = R.Regions(lesions=R.lesion_regions(sizes, np.array([0, 1]), lesions, AFF),
                    controls=R.control_region_records(controls, AFF, tissues),
                    brain_mask_method="test", control_diameter_mm=10.0)
    maps = R.StateMaps(t1_pre=ones, t1_post=0.5 * ones, delta_r1=ones, conc=0.2 * ones,
                       se=10.0 * ones, t1w_pre=100.0 * ones, t1w_post=110.0 * ones)
    # workflows.participant's row base, plus the SE scale of interfaces.quantify
    pre = ContrastState("D0", None, None, Path("pre_T1w.nii.gz"), None)
    post = ContrastState("D1", "AGuIX", "AGuIX", Path("post_T1w.nii.gz"), None, pre_session="D0")
    plan = ParticipantPlan("01", "D0", pre.t1w, (pre, post), None,
                           session_order="acq_time in sessions.tsv", sessions_in_time=("D0", "D1"))
    base = {**lesion_row_base(plan, post, pre), "se_intensity_scale": 1.0}
    assert base["session_order"] == 2
    var = U.ResampledNoise.identity(1e-4 * ones)
    t1w_var = 4.0 * ones
    noise = U.StateNoise(r1_post=var, r1_pre=var,
                         t1w_post=U.ResampledNoise(t1w_var, np.eye(4), values=maps.t1w_post),
                         t1w_pre=U.ResampledNoise(t1w_var, np.eye(4), values=maps.t1w_pre))
    rows = R.region_rows(regions=reg, lesion_labels=lesions, control_labels=controls,
                         maps=maps, base=base, relaxivity=get_relaxivity("AGuIX", 3.0, {}),
                         noise=noise)
    written = set().union(*(r.keys() for r in rows))
    assert written <= set(C.columns(C.LESION_TABLE))
    assert set(C.columns(C.LESION_TABLE)) - written == set(), "registered but never written"
