"""Records crossing the node boundary: JSON-able and picklable, and read back unchanged."""
from __future__ import annotations

import json
import pickle

import numpy as np

from bids_agquant.interfaces.derivatives import DerivativeSpec, specs_to_dicts
from bids_agquant.qmri import lesions as L
from bids_agquant.qmri.regions import StateMaps


def test_derivative_spec_round_trips_through_json_and_pickle():
    spec = DerivativeSpec("sub-01/anat/sub-01_T1map.nii.gz", {"Units": "s", "FlipAngle": [2, 15]})
    plain = specs_to_dicts({"T1map": spec, "old": {"path": "p", "sidecar": None}})
    assert plain == {"T1map": {"path": "sub-01/anat/sub-01_T1map.nii.gz",
                               "sidecar": {"Units": "s", "FlipAngle": [2, 15]}},
                     "old": {"path": "p", "sidecar": None}}
    back = json.loads(json.dumps(plain))
    assert DerivativeSpec.from_dict(back["T1map"]) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_state_maps_coerce_and_crop():
    a = np.arange(27.0).reshape(3, 3, 3)
    maps = StateMaps.coerce({"conc": a})
    assert StateMaps.coerce(maps) is maps and maps.se is None
    box = (slice(0, 2), slice(1, 3), slice(0, 1))
    np.testing.assert_array_equal(maps.cropped(box).conc, a[box])


def test_control_regions_has_one_return_type():
    brain = np.zeros((30, 30, 30), bool)
    brain[2:28, 2:28, 2:28] = True
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lesions = np.zeros(brain.shape, np.int16)
    placed = L.place_control_regions(brain, lesions, affine, n=2, diameter_mm=12.0, margin_mm=2.0)
    assert isinstance(placed, L.ControlRegions) and placed.diameter_mm == 12.0
    assert placed.labels.dtype == np.int16 and set(np.unique(placed.labels)) == {0, 1, 2}
    labels = L.control_regions(brain, lesions, affine, n=2, diameter_mm=12.0, margin_mm=2.0)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, placed.labels)
    pickle.loads(pickle.dumps(placed))
