"""qmri.brain: intracranial mask from a registered prior and the T1/M0 maps; tissue mixture;
control spheres in parenchyma (qmri.lesions)."""
import numpy as np
import pytest

from bids_agquant.qmri import brain as B
from bids_agquant.qmri import lesions as L

N = 72
AFF = np.diag([1.5, 1.5, 1.5, 1.0])
AFF[:3, 3] = -N * 1.5 / 2


def _coords():
    c = (np.arange(N) + 0.5) * 1.5 - N * 1.5 / 2
    return np.meshgrid(c, c, c, indexing="ij")


def _radius():
    x, y, z = _coords()
    return np.sqrt(x * x + y * y + z * z), x


def _head(gap=False):
    """Shells (mm): parenchyma < 35, CSF < 38, dura < 39 (tissue-like), bone < 44, muscle
    < 50, fat < 53; ``gap``: a tissue-like bridge one voxel wide through the bone at +x."""
    x, y, z = _coords()
    r = np.sqrt(x * x + y * y + z * z)
    t1 = np.full(r.shape, np.nan)
    m0 = np.zeros(r.shape)
    for outer, (tt, mm) in ((53, (0.38, 0.9)), (50, (1.4, 0.7)), (44, (0.3, 0.04)),
                            (39, (1.0, 0.6)), (38, (4.0, 1.0)), (35, (1.0, 0.75))):
        sel = r < outer
        t1[sel], m0[sel] = tt, mm
    if gap:
        bridge = (r >= 39) & (r < 44) & (x > 0) & (np.abs(y) < 0.8) & (np.abs(z) < 0.8)
        t1[bridge], m0[bridge] = 1.4, 0.7
    return r, t1, m0


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("prior_radius", [34.0, 41.0])
def test_intracranial_mask_finds_the_inner_skull_from_a_prior_off_by_several_mm(prior_radius):
    r, t1, m0 = _head()
    truth = r < 38.0                                   # parenchyma + CSF
    mask = B.refine_intracranial((r < prior_radius).astype(float), t1, m0, AFF)
    assert _dice(mask, truth) > 0.95
    outside = mask & ~truth
    assert outside.sum() / mask.sum() < 0.02           # at most 2 % extracranial
    assert not (mask & (r >= 39.0)).any()              # never into bone or muscle


def test_intracranial_mask_keeps_to_its_band_where_the_skull_is_missing():
    """No bone contrast at all (a T1w-only head): the mask cannot grow past the prior band."""
    r, t1, m0 = _head()
    t1 = np.where(r < 53, 1.0, np.nan)
    m0 = np.where(r < 53, 0.7, 0.0)
    mask = B.refine_intracranial((r < 36.0).astype(float), t1, m0, AFF)
    assert r[mask].max() <= 36.0 + B.PRIOR_GROWTH_MM + 1.5


def test_intracranial_mask_cuts_a_thin_bridge_through_the_bone():
    r, t1, m0 = _head(gap=True)
    assert ((r >= 39) & (r < 44) & (t1 > 1)).any(), "the test head has its bridge"
    mask = B.refine_intracranial((r < 40.0).astype(float), t1, m0, AFF)
    assert not (mask & (r >= 44.0)).any()


def test_intracranial_mask_without_a_t1_map_is_the_eroded_prior():
    r, _, _ = _head()
    mask = B.refine_intracranial((r < 36.0).astype(float), None, None, AFF)
    assert r[mask].max() <= 36.0 - B.FINAL_EROSION_MM + 1.5
    assert r[~mask].min() >= 36.0 - B.FINAL_EROSION_MM - 1.5


def test_tissue_mixture_recovers_classes_from_r1_and_t1w():
    rng = np.random.default_rng(3)
    shape = (40, 40, 40)
    truth = rng.integers(0, 3, shape)                       # 0 GM, 1 WM, 2 CSF
    r1 = np.array([0.75, 1.15, 0.3])[truth] + rng.normal(0, 0.05, shape)
    t1w = np.array([0.9, 1.1, 0.4])[truth] + rng.normal(0, 0.05, shape)
    # a template that is wrong in 40 % of the voxels: the intensities decide
    wrong = np.where(rng.random(shape) < 0.4, (truth + rng.integers(1, 3, shape)) % 3, truth)
    priors = [np.where(wrong == k, 0.6, 0.2) for k in range(3)]
    res = B.tissue_probabilities(np.ones(shape, bool), priors, r1=r1, t1w=t1w)
    labels = res.labels()
    assert (labels == truth + 1).mean() > 0.98
    assert res.means["WM"]["R1_per_s"] == pytest.approx(1.15, abs=0.01)
    assert res.means["CSF"]["R1_per_s"] == pytest.approx(0.3, abs=0.01)
    s = res.gm + res.wm + res.csf
    assert np.allclose(s, 1.0, atol=1e-5)


def test_tissue_mixture_follows_the_prior_where_intensities_cannot_tell():
    shape = (20, 20, 20)
    r1 = np.full(shape, 0.9)                                  # no contrast at all
    gm = np.zeros(shape)
    gm[:10] = 0.9
    wm = 1 - gm
    res = B.tissue_probabilities(np.ones(shape, bool), (gm, wm, np.zeros(shape)), r1=r1)
    assert (res.labels()[:10] == 1).all() and (res.labels()[10:] == 2).all()
    with pytest.raises(ValueError, match="needs an R1 map or a T1w"):
        B.tissue_probabilities(np.ones(shape, bool), (gm, wm, np.zeros(shape)))


def test_control_spheres_lie_in_parenchyma_when_tissue_classes_are_given():
    r, x = _radius()
    brain = r < 45
    parenchyma = np.where(x < 0, 1.0, 0.0) * brain            # the +x half is CSF
    spacing = np.diag(AFF)[:3]
    for seed in range(4):
        placed = L.place_control_regions(brain, np.zeros(brain.shape, int), AFF, n=3,
                                         diameter_mm=15.0, margin_mm=3.0, seed=seed,
                                         parenchyma=parenchyma)
        for k in range(1, 4):
            roi = placed.labels == k
            assert roi.any()
            assert parenchyma[roi].mean() >= L.CONTROL_MIN_PARENCHYMA_FRACTION
    # the rule is what keeps them there: without it some land in the CSF half
    centres = [x[L.place_control_regions(brain, np.zeros(brain.shape, int), AFF, n=3,
                                         diameter_mm=15.0, margin_mm=3.0, seed=s).labels == k
                 ].mean() for s in range(4) for k in range(1, 4)]
    assert max(centres) > 0
    assert L.sphere_mean(parenchyma, 7.5, spacing, brain).max() == pytest.approx(1.0)


def test_control_placement_says_parenchyma_when_none_fits():
    r, _ = _radius()
    brain = r < 45
    with pytest.raises(L.ControlRegionError, match="parenchyma"):
        L.place_control_regions(brain, np.zeros(brain.shape, int), AFF, n=3, diameter_mm=15.0,
                                min_diameter_mm=10.0, parenchyma=0.5 * brain)


def test_the_documents_state_the_parenchyma_rule_the_code_applies():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    stated = f"{L.CONTROL_MIN_PARENCHYMA_FRACTION * 100:g} % parenchyma"
    for doc in ("README.md", "docs/cli.md"):
        assert stated in (root / doc).read_text(), f"{doc} does not say '{stated}'"


def test_control_spheres_must_pass_every_parenchyma_estimate():
    r, x = _radius()
    brain = r < 45
    one = np.where(x < 0, 1.0, 0.0) * brain            # says: the -x half is parenchyma
    other = np.where(x > 0, 1.0, 0.0) * brain          # says: the +x half is
    with pytest.raises(L.ControlRegionError, match="parenchyma"):
        L.place_control_regions(brain, np.zeros(brain.shape, int), AFF, n=3, diameter_mm=15.0,
                                min_diameter_mm=10.0, parenchyma=(one, other))
    placed = L.place_control_regions(brain, np.zeros(brain.shape, int), AFF, n=3,
                                     diameter_mm=15.0, margin_mm=3.0, parenchyma=(one, brain))
    assert all(one[placed.labels == k].mean() >= 0.97 for k in (1, 2, 3))
