"""A participant run end to end with TB1AFI images instead of a TB1map (issue 13 item 4): the
T1 maps match those of the twin dataset (same seed) whose B1 is the true field as a TB1map, to
within the AFI formula's T1 bias (TR1 = 20 ms is not << T1); the T1map sidecar names the method
and every file used."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from testkit import run_checked

pytestmark = pytest.mark.slow

#: Measured on this phantom (seed 7): median 0.6 %, 99th percentile 1.4 % (AFI bias, 20/100 ms
#: at 60 degrees against T1 of 0.4-4 s; the T1 error is about twice the B1 error).
MEDIAN_TOL, P99_TOL = 0.01, 0.025


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("b1e2e")
    for method in ("TB1map", "TB1AFI"):
        simulate.simulate_dataset(root / method, preset="small", n_participants=1,
                                  sessions=["D0"], snr=None, seed=7, b1_method=method)
    return root


def test_afi_run_matches_the_tb1map_run(twins, run_cli):
    outs = {}
    for method in ("TB1map", "TB1AFI"):
        outs[method] = twins / f"out_{method}"
        run_checked(run_cli, twins / method, "-w", twins / f"work_{method}", "--nprocs", "2",
                    out=outs[method])
    maps = sorted(outs["TB1AFI"].rglob("*_T1map.nii.gz"))
    assert len(maps) == 2                                   # pre-contrast and Dotarem
    for f in maps:
        afi = np.asanyarray(nib.load(str(f)).dataobj)
        ref = np.asanyarray(nib.load(str(outs["TB1map"] / f.relative_to(outs["TB1AFI"]))).dataobj)
        both = np.isfinite(afi) & np.isfinite(ref) & (ref > 0.2) & (ref < 5.0)
        assert both.sum() > 0.98 * np.isfinite(ref).sum()
        rel = np.abs(afi[both] / ref[both] - 1)
        print(f"{f.name}: T1 relative difference median {np.median(rel):.4f}, p99 "
              f"{np.quantile(rel, 0.99):.4f}, max {rel.max():.4f}")
        assert np.median(rel) < MEDIAN_TOL and np.quantile(rel, 0.99) < P99_TOL
        meta = json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text())
        assert meta["B1Correction"] is True and meta["B1Method"].startswith("TB1AFI (")
        assert [m.rsplit("/", 1)[-1] for m in meta["B1Map"]] == [
            "sub-01_ses-D0_acq-tr1_TB1AFI.nii.gz", "sub-01_ses-D0_acq-tr2_TB1AFI.nii.gz"]
        assert set(meta["B1Map"]) <= set(meta["Sources"])
        ref_meta = json.loads((outs["TB1map"] / f.relative_to(outs["TB1AFI"])).with_name(
            f.name.replace(".nii.gz", ".json")).read_text())
        assert ref_meta["B1Map"].endswith("_TB1map.nii.gz") and ref_meta["B1Method"] == \
            "TB1map read as a B1+ factor"
    # the computed factor maps are derivatives (one per VFA set), on the TB1AFI grid
    fmap = outs["TB1AFI"] / "sub-01" / "ses-D0" / "fmap"
    written = sorted(f.name for f in fmap.glob("*.nii.gz"))
    assert written == ["sub-01_ses-D0_ce-Dotarem_desc-computed_TB1map.nii.gz",
                       "sub-01_ses-D0_desc-computed_TB1map.nii.gz"]
    true_map = nib.load(str(twins / "TB1map" / "sub-01" / "ses-D0" / "fmap" /
                            "sub-01_ses-D0_TB1map.nii.gz"))
    for name in written:
        img = nib.load(str(fmap / name))
        assert np.allclose(img.affine, true_map.affine, atol=1e-4)
        factor, truth = np.asanyarray(img.dataobj), np.asanyarray(true_map.dataobj)
        ok = np.isfinite(factor)
        assert ok.sum() > 1000 and np.abs(factor[ok] / truth[ok] - 1).max() < 0.02
        side = json.loads((fmap / name.replace(".nii.gz", ".json")).read_text())
        assert side["Units"] == "1" and side["B1Method"].startswith("TB1AFI (")
        assert [u.rsplit("/", 1)[-1] for u in side["Sources"]] == [
            "sub-01_ses-D0_acq-tr1_TB1AFI.nii.gz", "sub-01_ses-D0_acq-tr2_TB1AFI.nii.gz"]
    assert not (outs["TB1map"] / "sub-01" / "ses-D0" / "fmap").exists()
