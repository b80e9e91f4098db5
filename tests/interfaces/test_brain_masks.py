"""bids_agquant.qmri.masks on synthetic heads (brain ball, CSF and scalp shells, air)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bids_agquant.qmri import geometry as G
from bids_agquant.qmri import masks as M

VOXEL = 1.5
R_BRAIN, R_CSF, R_SCALP = 30.0, 34.0, 38.0


def head(shape=(64, 64, 64)):
    """(T1 map in s, T1w signal, radius map in mm, affine) of a ball-shaped head."""
    aff = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * VOXEL
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    r = np.linalg.norm(G.voxel_to_world(ijk, aff), axis=-1)
    t1 = np.full(shape, np.nan, np.float32)                  # air: no fit
    t1[r <= R_SCALP] = 0.4                                   # scalp fat
    t1[r <= R_CSF] = 4.0                                     # CSF
    t1[r <= R_BRAIN] = 1.0                                   # brain
    noise = np.abs(np.random.default_rng(0).normal(0.0, 3.0, shape))
    t1w = noise + np.where(r <= R_SCALP, 300.0, 0.0)        # a uniform head in noisy air
    return t1, t1w.astype(np.float32), r, aff


def test_brain_mask_from_t1_is_the_brain_ball():
    t1, _, r, aff = head()
    mask = M.brain_mask_from_t1(t1, aff)
    assert mask.dtype == bool and mask.shape == t1.shape
    volume = mask.sum() * G.voxel_volume_mm3(aff)
    assert volume == pytest.approx(4 / 3 * math.pi * R_BRAIN ** 3, rel=0.08)
    assert not mask[r > R_BRAIN + 2 * VOXEL].any()           # neither CSF nor scalp
    assert mask[r < R_BRAIN - 2 * VOXEL].all()


def test_brain_mask_from_t1_keeps_the_largest_component_only():
    t1, _, r, aff = head()
    t1[:6, :6, :6] = 1.0                                     # a tissue-like speck in a corner
    mask = M.brain_mask_from_t1(t1, aff)
    assert not mask[:6, :6, :6].any()


def test_brain_mask_from_t1w_is_the_head_eroded_by_the_margin():
    _, t1w, r, aff = head()
    mask = M.brain_mask_from_t1w(t1w, aff)
    # the Otsu threshold separates the head from the air; the head is eroded by 10 mm
    inner = R_SCALP - M.T1W_EROSION_MM
    assert mask[r < inner - 2 * VOXEL].all()
    assert not mask[r > inner + 2 * VOXEL].any()


def test_signal_mask_is_the_signal_above_half_the_otsu_threshold():
    rng = np.random.default_rng(0)
    img = np.abs(rng.normal(0.0, 5.0, (20, 20, 20))).astype(np.float32)   # noise
    img[5:15, 5:15, 5:15] += 200.0
    img[0, 0, 0] = np.nan
    mask = M.signal_mask(img)
    signal = np.zeros(img.shape, bool)
    signal[5:15, 5:15, 5:15] = True
    assert mask[signal].all() and not mask[0, 0, 0]
    # Otsu puts the split at the top of the noise (no values in the gap): half of it lets the
    # upper noise tail in, never its lower half
    noise = img[~signal & np.isfinite(img)]
    assert (img[mask & ~signal] > 0.5 * noise.max() - 1.0).all()
    assert (mask & ~signal).sum() < 0.1 * noise.size
    assert not M.signal_mask(np.zeros((3, 3, 3))).any()


def test_otsu_threshold_lies_between_two_modes():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(10, 1, 5000), rng.normal(50, 2, 3000)])
    assert 14 < M.otsu_threshold(values) < 45
