"""The ``mni`` anatomy: each participant's own warp of the MNI152 brain, extracranial tissues that
take up Dotarem, and the fraction maps of the truth."""
from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_agquant.simulate import make_config, simulate_dataset
from bids_agquant.simulate.acquire import average_on_grid, sample_properties
from bids_agquant.simulate.anatomy import TISSUES, HeadModel
from bids_agquant.simulate.truth import TRUTH_PRECISION
from bids_agquant.simulate.cli import build_parser
from bids_agquant.simulate.geometry import Grid
from bids_agquant.simulate.mni import (TEMPLATE_ANCHOR, TRUTH_FRACTIONS, MNIHead, draw_enhancement,
                                       load_template)

STATES = [("D0_Dotarem", "dotarem_baseline"), ("D1_AGuIX", "aguix_peak"),
          ("D8_AGuIX", "aguix_residual")]


def _head(seed: int) -> MNIHead:
    uptake = draw_enhancement(np.random.default_rng(seed + 100), STATES, 100.0, (0.02, 0.1),
                              (0.85, 1.15))
    return MNIHead.random(np.random.default_rng(seed), enhancement=uptake, lattice_mm=2.0)


@pytest.fixture(scope="module")
def heads():
    return _head(1), _head(2)


def _box(step: float = 3.0) -> np.ndarray:
    """Head-space points (3, N) relative to a head centre, covering head and upper neck."""
    axes = [np.arange(-90, 90.1, step), np.arange(-110, 110.1, step), np.arange(-90, 90.1, step)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)


def _template_at(head: MNIHead, pts: np.ndarray) -> dict:
    gm, wm, csf = load_template().sample(head.warp(pts))
    return {"gm": gm, "wm": wm, "csf": csf}


def test_tissue_follows_the_warped_template(heads):
    head = heads[0]
    pts = _box() + head.centre[:, None]
    t1 = 1.0 / head.tissue(pts, 1.0)[1]
    tmpl = _template_at(head, pts)
    for name in ("wm", "gm"):
        pure = tmpl[name] > 0.97
        assert pure.sum() > 200
        ratio = t1[pure] / TISSUES[name][0]
        assert abs(np.median(ratio) - 1.0) < 0.02 and np.all(np.abs(ratio - 1.0) < 0.15), name
    # CSF in the ventricles: pure CSF within 20 mm of the template's ventricle centre
    t = head.warp(pts)
    vent = (tmpl["csf"] > 0.97) & (np.linalg.norm(t - load_template().ventricle_centre[:, None],
                                                  axis=0) < 20.0)
    assert vent.sum() > 20
    assert np.all(np.abs(t1[vent] / TISSUES["csf"][0] - 1.0) < 0.15)


def test_temporal_muscle_lies_lateral_to_the_skull_with_muscle_t1(heads):
    head = heads[0]
    pts = _box(2.0) + head.centre[:, None]
    fr = head.fractions(pts, 1.0)
    q = head.warp.to_affine(pts)
    temporal = (fr["muscle"] > 0.95) & (np.abs(q[0]) > 55) & (q[2] > -20) & (q[2] < 40)
    assert temporal.sum() > 200
    assert np.all(head._distance(q[:, temporal]) > 3.0)        # outside skull and dura
    ratio = 1.0 / head.tissue(pts[:, temporal], 1.0)[1] / TISSUES["muscle"][0]
    assert abs(np.median(ratio) - 1.0) < 0.03 and np.all(np.abs(ratio - 1.0) < 0.25)
    # between brain and muscle: bone, marrow and dura along a lateral ray through the temples
    ray = np.stack([np.arange(0, 95, 0.25), np.full(380, 0.0), np.full(380, 10.0)])
    along = head.fractions(head.centre[:, None] + ray, 0.25)
    first = {name: int(np.argmax(along[name] > 0.5)) for name in ("wm", "dura", "bone", "marrow",
                                                                   "muscle", "skin")}
    assert first["dura"] < first["bone"] < first["marrow"] < first["muscle"] < first["skin"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_participants_have_their_own_brains(heads):
    rel = _box(2.0)
    masks = [h.fractions(rel + h.centre[:, None], 1.0) for h in heads]
    masks = [(m["gm"] + m["wm"] + m["csf"]) > 0.5 for m in masks]
    template = load_template()
    ic_template = template.sample(rel + np.asarray(TEMPLATE_ANCHOR)[:, None], ("ic",))[0] > 0.5
    assert 0.7 < _dice(masks[0], masks[1]) < 0.97
    for m in masks:
        assert 0.7 < _dice(m, ic_template) < 0.97
        assert 1.2e6 < m.sum() * 8.0 < 2.4e6         # intracranial volume (mm3), adult range


def test_same_seed_same_head_and_ventricles_follow_their_factor(heads):
    pts = _box(4.0) + heads[0].centre[:, None]
    again = _head(1)
    assert np.array_equal(heads[0].tissue(pts, 1.0)[1], again.tissue(pts, 1.0)[1])
    # ventricular CSF (pure CSF within 30 mm of the ventricles' centroid) scales with the factor
    head = heads[0]
    centre_t = load_template().ventricle_centre
    around = _box(1.5)[:, np.linalg.norm(_box(1.5), axis=0) < 45.0]
    around = around + head.warp.from_affine(centre_t[:, None])    # about the ventricles
    assert np.allclose(head.warp.from_affine(head.warp.to_affine(around)), around)
    volumes = []
    for factor in (0.8, 1.4):
        warp = replace(head.warp, ventricle_amount=1.0 - 1.0 / factor)
        t = warp(around)
        csf = load_template().sample(t, ("csf",))[0]
        volumes.append(((csf > 0.5) & (np.linalg.norm(t - centre_t[:, None], axis=0) < 30)).sum())
    assert volumes[1] > 2.0 * volumes[0] > 0, volumes


def test_warp_is_invertible_with_displacements_of_several_mm(heads):
    for head in heads:
        pts = _box(4.0) + head.centre[:, None]
        det = head.warp.jacobian_det(pts)
        assert np.all(det > 0.0)
        info = head.describe()
        assert 1.5 < info["displacement_rms_mm"] < 4.5
        assert 3.0 < info["displacement_max_mm"] < 10.0
        assert 0.8 <= info["ventricle_factor"] <= 1.4


def test_dotarem_raises_r1_in_dura_and_marrow_not_in_parenchyma(heads):
    head = heads[0]
    pts = _box(1.5) + head.centre[:, None]
    fr = head.fractions(pts, 1.0)
    r1 = 4.0                                            # 1/(mM s), any positive relaxivity
    for tissue in ("dura", "marrow"):
        at = pts[:, fr[tissue] > 0.6]
        assert at.shape[1] > 50, tissue
        dot = head.delta_r1(at, 1.0, "D0_Dotarem", r1)
        agu = head.delta_r1(at, 1.0, "D1_AGuIX", r1)
        assert np.all(dot > 0.6 * r1 * head.enhancement["D0_Dotarem"][tissue]), tissue
        assert np.all(agu < 0.2 * dot) and np.all(agu > 0)
        assert np.all(head.delta_r1(at, 1.0, "D8_AGuIX", r1) == 0)
    brain = pts[:, fr["gm"] + fr["wm"] > 0.999]
    assert np.all(head.delta_r1(brain, 1.0, "D0_Dotarem", r1) == 0)
    geometric = HeadModel.random(np.random.default_rng(0))
    anywhere = _box(6.0) + geometric.centre[:, None]
    assert np.all(geometric.delta_r1(anywhere, 1.0, "D0_Dotarem", r1) == 0)
    assert geometric.tissue_and_uptake(anywhere, 1.0, ["D0_Dotarem"])[2] == {}


def test_lesions_are_allowed_only_deep_in_parenchyma(heads):
    head = heads[1]
    rng = np.random.default_rng(5)
    allowed = []
    for _ in range(400):
        c = head.centre + rng.uniform(-1, 1, 3) * head.radii * 0.75
        if head.lesion_allowed(c, 6.0):
            allowed.append(c)
    assert len(allowed) > 10
    at = np.array(allowed).T
    fr = head.fractions(at, 1.0)
    assert np.all(fr["gm"] + fr["wm"] > 0.9)
    assert np.all(head._distance(head.warp.to_affine(at)) < -10.0)


def test_cli_takes_the_anatomy():
    assert build_parser().parse_args(["out", "--small", "--anatomy", "mni"]).anatomy == "mni"
    assert build_parser().parse_args(["out"]).anatomy is None          # config default: geometric
    assert make_config("clinical").anatomy == "geometric"
    with pytest.raises(ValueError, match="anatomy"):
        make_config("small", anatomy="atlas")


def test_truth_maps_at_voxel_centres_equal_one_point_voxel_means(heads):
    head = heads[0]
    grid = Grid.oblique((180, 220, 180), (6.0, 6.0, 6.0), np.eye(3), head.centre)
    keys = ["D0_Dotarem", "D8_AGuIX"]
    sampled = sample_properties(head, [], np.eye(4), grid, soft_mm=6.0, chunk_points=50_000,
                                state_keys=keys)["anatomy"]
    means = average_on_grid(lambda p: head.truth_properties(p, 6.0, keys)[2], grid, (1, 1, 1),
                            50_000)
    assert sampled.keys() == means.keys() == set(TRUTH_FRACTIONS) | {f"conc_anatomy:{k}" for k in keys}
    for name in sampled:
        assert np.array_equal(sampled[name], means[name]), name
    assert np.abs(sampled["gm"] + sampled["wm"] + sampled["csf"] - sampled["intracranial"]).max() < 1e-9
    assert sampled["conc_anatomy:D8_AGuIX"].max() == 0 < sampled["conc_anatomy:D0_Dotarem"].max()


@pytest.fixture(scope="module")
def mni_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mni")
    return simulate_dataset(root / "bids", truth_dir=root / "truth", preset="small",
                            n_participants=1, sessions=("D0", "D1"), anatomy="mni", snr=None,
                            lesion_diameters_mm=(10.0, 16.0), seed=4)


def test_truth_fraction_maps_add_up(mni_dataset):
    truth = mni_dataset
    assert truth.meta["config"]["anatomy"] == "mni"
    assert truth.participant("01")["anatomy"]["model"] == "mni"
    maps = {k: truth.load_map("01", k)[0] for k in
            ("intracranial", "parenchyma", "gm", "wm", "csf", "extracranial_enhancing")}
    step = TRUTH_PRECISION["fraction"]          # each map rounded to this: half a step off
    for k, v in maps.items():
        assert v.min() >= -1e-7 and v.max() <= 1.0 + 1e-6, k
    assert np.abs(maps["gm"] + maps["wm"] + maps["csf"] - maps["intracranial"]).max() <= 2 * step
    assert np.abs(maps["gm"] + maps["wm"] - maps["parenchyma"]).max() <= 1.5 * step
    assert np.all(maps["extracranial_enhancing"] <= 1.0 - maps["intracranial"] + step)
    assert (maps["extracranial_enhancing"] > 0.5).sum() > 100
    affine = np.asarray(truth.participant("01")["reference"]["affine"])
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    assert 1200 < maps["intracranial"].sum() * voxel_ml < 2400
    conc = truth.load_map("01", "conc_anatomy:D0_Dotarem")[0]
    assert conc[maps["extracranial_enhancing"] > 0.5].min() > 0.0
    assert conc[maps["parenchyma"] > 0.999].max() == 0.0
    lesions = truth.load_map("01", "lesions")[0] > 0
    assert maps["parenchyma"][lesions].min() > 0.8


def test_dotarem_brightens_enhancing_tissue_only(mni_dataset):
    truth = mni_dataset
    pre = truth.bids_dir / "sub-01/ses-D0/anat/sub-01_ses-D0_T1w.nii.gz"
    post = truth.bids_dir / "sub-01/ses-D0/anat/sub-01_ses-D0_ce-Dotarem_T1w.nii.gz"
    a, b = (np.asarray(nib.load(p).dataobj, dtype=float) for p in (pre, post))
    enh = truth.load_map("01", "extracranial_enhancing")[0]
    lesions = truth.load_map("01", "lesions")[0] > 0
    assert np.all(b[enh > 0.5] > a[enh > 0.5])
    # the truth is stored at TRUTH_PRECISION: a voxel with a trace of enhancing tissue below
    # half a step reads 0, so stay a voxel away from any stored enhancement
    calm = ~ndimage.binary_dilation(enh > 0, iterations=1) & ~lesions
    calm &= ~ndimage.binary_dilation(lesions, iterations=2)
    assert np.array_equal(a[calm], b[calm])
