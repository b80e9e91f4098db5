"""FitVFA with a TB1map slab that misses part of the head (a real phantom, the real interface):
the head voxels outside are filled, warned about, and their T1 stays close to that fitted with
the whole map."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_agquant.interfaces.vfa import FitVFA

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_bids"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from bids_agquant import simulate

    root = tmp_path_factory.mktemp("partial_b1")
    simulate.simulate_dataset(root / "bids", preset="small", n_participants=1, sessions=["D0"],
                              seed=12, b1_range=(0.8, 1.2))
    anat = root / "bids" / "sub-01" / "ses-D0" / "anat"
    flips = sorted(anat.glob("sub-01_ses-D0_flip-*_VFA.nii.gz"))
    meta = [json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text()) for f in flips]
    b1 = root / "bids" / "sub-01" / "ses-D0" / "fmap" / "sub-01_ses-D0_TB1map.nii.gz"
    return root, flips, [m["FlipAngle"] for m in meta], meta[0]["RepetitionTimeExcitation"], b1


def _fit(flips, fas, tr, b1, cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    res = FitVFA(in_files=[str(f) for f in flips], flip_angles_deg=fas, tr_s=tr,
                 b1map=str(b1)).run(cwd=str(cwd))
    return np.asanyarray(nib.load(res.outputs.r1_file).dataobj), res.outputs.warnings


def test_slab_b1_fills_the_rim_and_keeps_t1(phantom, tmp_path):
    root, flips, fas, tr, b1 = phantom
    r1_full, warnings_full = _fit(flips, fas, tr, b1, tmp_path / "full")
    img = nib.load(str(b1))
    data = np.asanyarray(img.dataobj)
    slab = data[:, :, : int(0.8 * data.shape[2])]            # the top fifth of the map cut off
    cut = tmp_path / "slab_TB1map.nii.gz"
    nib.save(nib.Nifti1Image(slab, img.affine, img.header), str(cut))
    r1_slab, warnings_slab = _fit(flips, fas, tr, cut, tmp_path / "slab")
    assert not warnings_full
    (line,) = [w for w in warnings_slab if "outside its field of view" in w]
    share = float(line.split(" % of the head voxels")[0].split(": ")[-1])
    assert 1.0 < share < 40.0
    both = np.isfinite(r1_full) & np.isfinite(r1_slab)
    assert both.sum() >= 0.99 * np.isfinite(r1_full).sum()   # no voxel lost to the slab
    rel = np.abs(r1_slab[both] / r1_full[both] - 1)
    changed = rel > 1e-9
    assert changed.any()                                      # the filled rim differs a little
    assert np.median(rel[changed]) < 0.03 and np.quantile(rel[changed], 0.95) < 0.10


def test_b1_on_the_vfa_grid_is_used_as_is_to_the_last_voxel(tmp_path):
    """The sample data's TB1map is on its VFA grid, whose outermost slices hold head: B1 is
    read as is, no voxel is filled, and B1 correction removes no fitted voxel (interpolating the
    map onto its own grid used to drop the outermost voxels and fill 0.4 % of the head)."""
    anat = SAMPLE / "sub-01" / "ses-D0" / "anat"
    flips = sorted(anat.glob("sub-01_ses-D0_flip-*_VFA.nii.gz"))
    meta = [json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text()) for f in flips]
    fas, tr = [m["FlipAngle"] for m in meta], meta[0]["RepetitionTimeExcitation"]
    b1 = SAMPLE / "sub-01" / "ses-D0" / "fmap" / "sub-01_ses-D0_TB1map.nii.gz"
    r1, warnings = _fit(flips, fas, tr, b1, tmp_path / "with_b1")
    assert not warnings
    r1_off = np.asanyarray(nib.load(FitVFA(
        in_files=[str(f) for f in flips], flip_angles_deg=fas, tr_s=tr).run(
        cwd=str(tmp_path)).outputs.r1_file).dataobj)
    edge = np.ones(r1.shape, bool)
    edge[1:-1, 1:-1, 1:-1] = False
    assert np.isfinite(r1_off[edge]).any()                    # head reaches the outer slices
    assert np.array_equal(np.isfinite(r1), np.isfinite(r1_off))
