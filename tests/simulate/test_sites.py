"""The multi-site cohort simulator: one valid BIDS dataset with each site's scanner and site
effects, a truth per site; the VFA T1 bias of a protocol is the one the physics predicts."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bidsschematools import validator as bst_validator

from bids_agquant.qmri.spgr import spgr_signal
from bids_agquant.qmri.vfa import VFAModel
from bids_agquant.simulate import load_truth, make_config, simulate_dataset
from bids_agquant.simulate.sites import SITES, SiteSpec, simulate_cohort, site_of


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    record = simulate_cohort(root / "bids", truth_dir=root / "truth", preset="small",
                             sessions=("D0",), seed=3)
    return root, record


def test_cohort_is_one_valid_dataset_with_every_site(cohort):
    root, record = cohort
    bids = root / "bids"
    assert [s["label"] for s in record["sites"]] == [s.label for s in SITES]
    parts = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    assert list(parts.participant_id) == ["sub-A01", "sub-B01", "sub-C01"]
    assert list(parts.site) == ["A", "B", "C"]
    assert "site" in json.loads((bids / "participants.json").read_text())
    # doses rotate by site, so one participant per site covers the doses
    assert parts.dose_mg_per_kg.nunique() == 3
    for spec in SITES:
        (sub,) = site_of(record, f"{spec.label}01")["participants"]
        side = json.loads((bids / f"sub-{sub}" / "ses-D0" / "anat" /
                           f"sub-{sub}_ses-D0_flip-1_VFA.json").read_text())
        assert side["Manufacturer"] == spec.settings["manufacturer"]
        assert side["ManufacturersModelName"] == spec.settings["manufacturers_model_name"]
        assert side["MagneticFieldStrength"] == spec.settings["field_strength_t"]
        n_flips = len(spec.settings.get("vfa_flip_angles_deg", (2, 5, 10, 15)))
        assert len(list((bids / f"sub-{sub}" / "ses-D0" / "anat").glob(
            f"sub-{sub}_ses-D0_flip-*_VFA.nii.gz"))) == n_flips
        assert (bids / "derivatives" / "lesions" / f"sub-{sub}").is_dir()
        # the site's truth loads and points at the merged dataset
        truth = load_truth(root / "truth" / f"site-{spec.label}")
        assert truth.bids_dir.resolve() == bids.resolve()
        assert truth.participants == [sub]
        assert truth.meta["config"]["site"] == spec.label
    result = bst_validator.validate_bids([str(bids)])
    assert result["path_tracking"] == [], result["path_tracking"]
    assert not list(bids.parent.glob("cohort_*")), "the per-site scratch folder is left behind"


def test_site_gain_and_b1_range_are_the_sites(cohort):
    root, _ = cohort
    for spec in SITES:
        truth = load_truth(root / "truth" / f"site-{spec.label}")
        gains = truth.motion.gain
        low, high = spec.settings["gain_range"]
        assert ((gains >= low) & (gains <= high)).all(), spec.label
        ses = truth.bids_dir / f"sub-{spec.label}01" / "ses-D0"
        b1 = nib.load(ses / "fmap" / f"sub-{spec.label}01_ses-D0_TB1map.nii.gz").get_fdata()
        vfa = nib.load(ses / "anat" / f"sub-{spec.label}01_ses-D0_flip-1_VFA.nii.gz").get_fdata()
        inside = b1[vfa > 0.2 * vfa.max()]            # the head (the map covers the box)
        lo, hi = spec.settings["b1_range"]
        assert np.percentile(inside, 1) >= lo - 0.05 and np.percentile(inside, 99) <= hi + 0.05
        assert np.percentile(inside, 99) - np.percentile(inside, 1) > 0.5 * (hi - lo)


def test_refuses_a_used_directory_and_duplicate_sites(cohort, tmp_path):
    root, _ = cohort
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_cohort(root / "bids", truth_dir=tmp_path / "t", preset="small")
    with pytest.raises(ValueError, match="distinct labels"):
        simulate_cohort(tmp_path / "b", sites=(SITES[0], SITES[0]), preset="small")
    with pytest.raises(ValueError, match="alphanumeric"):
        SiteSpec("site-A")


def test_site_settings_are_recorded_only_when_set_and_checked():
    plain = make_config("small").to_dict()
    for key in ("site", "manufacturer", "manufacturers_model_name", "vfa_flip_scale"):
        assert key not in plain        # datasets made before keep their truth as it was
    biased = make_config("small", site="B", vfa_flip_scale=0.95).to_dict()
    assert biased["site"] == "B" and biased["vfa_flip_scale"] == 0.95
    with pytest.raises(ValueError, match="vfa_flip_scale"):
        make_config("small", vfa_flip_scale=2.0)


def _noiseless_t1(root, **settings):
    truth = simulate_dataset(root / "bids", truth_dir=root / "truth", preset="small",
                             n_participants=1, sessions=("D0",), snr=None, seed=4, **settings)
    flips, tr = truth.protocol["vfa"]["flip_angles_deg"], truth.protocol["vfa"]["tr_s"]
    files = truth.participant("01")["sessions"]["D0"]["files"]
    signal = np.stack([nib.load(truth.bids_dir / files[f"vfa:D0_pre:{i}"]).get_fdata()
                       for i in range(1, len(flips) + 1)], axis=-1)
    b1 = nib.load(truth.bids_dir / files["b1"]).get_fdata()
    fit = VFAModel(flips, tr).fit(signal, mask=signal[..., -1] > 0.2 * signal[..., -1].max(),
                                  b1=b1)
    return fit.t1, b1, flips, tr


def test_vfa_flip_scale_biases_t1_as_the_spgr_equation_predicts(tmp_path):
    """Noiseless: a protocol whose actual angles are k x the nominal ones (beyond the B1 map)
    gives, fitted with the nominal angles and the B1 map, the T1 the SPGR equation predicts
    at each voxel's own B1 (about k^2 x the truth); the same phantom with k = 1 is the truth."""
    k = 1.06
    t1_true, b1, flips, tr = _noiseless_t1(tmp_path / "ideal")
    t1_biased, b1_biased, _, _ = _noiseless_t1(tmp_path / "biased", vfa_flip_scale=k)
    assert np.array_equal(b1, b1_biased)              # same phantom, same field
    wm = np.isfinite(t1_true) & np.isfinite(t1_biased) & (np.abs(t1_true - 0.85) < 0.05)
    assert wm.sum() > 500
    flips = np.asarray(flips, np.float64)
    sig = spgr_signal(np.ones(wm.sum()), t1_true[wm], flips * k, tr, b1[wm])
    predicted = VFAModel(flips, tr).fit(sig, b1=b1[wm]).t1
    assert np.median(np.abs(t1_biased[wm] / predicted - 1)) < 0.005
    assert np.median(t1_biased[wm] / t1_true[wm]) == pytest.approx(k ** 2, rel=0.01)


def test_command_line_writes_a_cohort(tmp_path, capsys):
    from bids_agquant.simulate.cli import main
    assert main([str(tmp_path / "b"), "--small", "--multisite", "--sessions", "D0",
                 "--seed", "2"]) == 0
    parts = pd.read_csv(tmp_path / "b" / "participants.tsv", sep="\t", dtype=str)
    assert list(parts.site) == ["A", "B", "C"]
    assert json.loads((tmp_path / "b_truth" / "cohort.json").read_text())["seed"] == 2
    assert main([str(tmp_path / "c"), "--small", "--multisite", "--participants", "2"]) == 64
    assert "--participants-per-site" in capsys.readouterr().err
