"""bids_agquant.qmri.regions and qmri.postcontrast: region records and statistics on known arrays."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bids_agquant.qmri import lesions as L
from bids_agquant.qmri import postcontrast as P
from bids_agquant.qmri import regions as R
from bids_agquant.qmri.relaxivity import Relaxivity

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
REL = Relaxivity("TestAgent", 3.0, r1_per_mM_s=4.0, gd_per_particle=10.0,
                 molar_mass_g_per_mol=10000.0, source="test")
SHAPE = (20, 20, 20)


def labels():
    lesions = np.zeros(SHAPE, np.int32)
    lesions[2:6, 2:6, 2:6] = 7                  # 4^3 cube, input id 7
    lesions[10:13, 10:13, 10:13] = 9            # 3^3 cube: its core is 1 voxel (< 8)
    controls = np.zeros(SHAPE, np.int16)
    controls[14:19, 2:7, 2:7] = 1               # 5^3 cube
    return lesions, controls


def regions(lesions, controls):
    sizes = L.lesion_diameters(L.label_lesions(lesions, "dseg").labels, AFF)
    ids = np.array([0, 7, 9])
    return R.Regions(lesions=R.lesion_regions(sizes, ids, lesions, AFF),
                     controls=R.control_region_records(controls, AFF),
                     brain_mask_method="test", control_diameter_mm=10.0)


def test_lesion_and_control_records_hold_volumes_counts_and_centroids():
    lesions, controls = labels()
    reg = regions(lesions, controls)
    assert list(reg.lesions) == ["7", "9"] and list(reg.controls) == ["1"]
    les = reg.lesions["7"]
    assert les.n_voxels == 64 and les.n_voxels_input_grid == 64
    assert les.volume_mm3 == pytest.approx(64 * 8.0)
    # the face-centre convention of qmri.lesions: an axial 8 x 8 mm square (4 voxels of 2 mm)
    # measures 10 mm across (its corners are cut), the measurable threshold exactly
    assert les.longest_diameter_mm == pytest.approx(10.0) and les.measurable is True
    assert reg.lesions["9"].measurable is False
    np.testing.assert_allclose(les.centroid_mm, [7.0, 7.0, 7.0])          # voxel 3.5 * 2 mm
    ctl = reg.controls["1"]
    assert ctl.n_voxels == 125 and ctl.volume_mm3 == pytest.approx(125 * 8.0)
    np.testing.assert_allclose(ctl.centroid_mm, [32.0, 8.0, 8.0])


def test_regions_json_keeps_its_layout_and_round_trips():
    lesions, controls = labels()
    reg = regions(lesions, controls)
    d = reg.to_dict()
    assert list(d) == ["lesions", "controls", "brain_mask_method", "control_diameter_mm",
                       "control_warnings"]
    assert list(d["lesions"]["7"]) == ["longest_diameter_mm", "longest_3d_diameter_mm",
                                       "measurable", "volume_mm3", "n_voxels_input_grid",
                                       "n_voxels", "centroid_mm"]
    assert list(d["controls"]["1"]) == ["volume_mm3", "n_voxels", "centroid_mm"]
    again = R.Regions.from_dict(json.loads(json.dumps(d, indent=1)))
    assert again == reg
    assert json.dumps(again.to_dict(), indent=1) == json.dumps(d, indent=1)
    failed = R.Regions(brain_mask_method="m", control_warnings=("no room",), lesion_source="x")
    assert list(failed.to_dict()) == ["lesions", "controls", "lesion_source", "brain_mask_method",
                                      "control_warnings"]


def test_label_boxes_are_padded_by_one_voxel_and_clipped():
    lesions, controls = labels()
    boxes = R.label_boxes(lesions)
    assert set(boxes) == {7, 9}
    assert boxes[7] == (slice(1, 7),) * 3
    assert R.label_boxes(controls)[1] == (slice(13, 20), slice(1, 8), slice(1, 8))
    assert R.label_boxes(np.zeros((3, 3, 3), np.int16)) == {}


def test_se_core_is_the_eroded_roi_unless_too_small():
    lesions, _ = labels()
    assert R.se_core(lesions == 7).sum() == 8                       # 4^3 -> 2^3 core
    small = lesions == 9
    np.testing.assert_array_equal(R.se_core(small), small)           # 3^3 -> 1 voxel: the ROI


def test_region_rows_on_known_maps():
    lesions, controls = labels()
    reg = regions(lesions, controls)
    rng = np.random.default_rng(0)
    conc = rng.normal(0.2, 0.05, SHAPE)
    conc[3, 3, 3] = np.nan                                           # a failed fit: ignored
    pre = np.full(SHAPE, 100.0)
    post = pre * 1.5
    post[3:5, 3:5, 3:5] = 200.0                                      # the core of lesion 7
    maps = R.StateMaps(conc=conc, delta_r1=conc * REL.r1_per_mM_s, t1w_pre=pre, t1w_post=post,
                       se=100.0 * (post - pre) / pre)
    rows = R.region_rows(regions=reg, lesion_labels=lesions, control_labels=controls, maps=maps,
                         base={"participant_id": "sub-x"}, relaxivity=REL)
    assert [r["lesion_id"] for r in rows] == ["7", "9", "control-1"]
    assert [r["region_type"] for r in rows] == ["lesion", "lesion", "control"]
    r7 = rows[0]
    v = conc[lesions == 7]
    v = v[np.isfinite(v)]
    assert r7["participant_id"] == "sub-x" and r7["n_voxels"] == 64 and r7["n_voxels_conc"] == 63
    assert r7["conc_mean_mM"] == pytest.approx(v.mean(), rel=1e-12)
    assert r7["conc_sd_mM"] == pytest.approx(v.std(ddof=1), rel=1e-12)
    assert r7["conc_median_mM"] == pytest.approx(np.median(v), rel=1e-12)
    assert r7["delta_r1_mean_per_s"] == pytest.approx(4.0 * v.mean(), rel=1e-12)
    assert r7["conc_mean_mg_per_L"] == pytest.approx(1000.0 * v.mean(), rel=1e-12)
    assert r7["se_mean_percent"] == pytest.approx(100.0) and r7["n_voxels_se"] == 8   # core
    assert rows[1]["se_mean_percent"] == pytest.approx(50.0) and rows[1]["n_voxels_se"] == 27
    assert rows[2]["se_sd_percent"] == pytest.approx(0.0)
    assert rows[2]["mg_per_L_per_mM"] == 1000.0 and "longest_diameter_mm" not in rows[2]
    assert "t1_pre_mean_s" not in r7                                  # no T1 maps given
    as_dict = R.region_rows(regions=reg.to_dict(), lesion_labels=lesions,
                            control_labels=controls, maps={"conc": conc, "se": maps.se},
                            base={}, relaxivity=None)
    assert as_dict[0]["conc_mean_mM"] == r7["conc_mean_mM"] and "se_mean_percent" not in as_dict[0]


def test_a_region_missing_from_the_reference_grid_gets_no_statistics():
    lesions, controls = labels()
    reg = regions(lesions, controls)
    lesions[lesions == 9] = 0
    rows = R.region_rows(regions=reg, lesion_labels=lesions, control_labels=controls,
                         maps=R.StateMaps(conc=np.ones(SHAPE)), base={})
    assert rows[1]["n_voxels"] == 0 and "conc_mean_mM" not in rows[1]
    assert rows[0]["conc_mean_mM"] == 1.0


def test_state_maps_invert_the_relaxivity_model():
    r1_pre = np.full((4, 4, 4), 1.0, np.float32)
    conc = np.linspace(0.0, 0.5, 64).reshape(4, 4, 4)
    r1_post = (r1_pre + REL.r1_per_mM_s * conc).astype(np.float32)
    r1_pre[0, 0, 0] = 0.0                                            # no real R1
    pre = np.full((4, 4, 4), 100.0)
    pre[0] = 0.0                                                     # background, no signal
    maps = P.state_maps(relaxivity=REL, r1_post=r1_post, r1_pre=r1_pre, t1w_post=pre * 1.2,
                        t1w_pre=pre)
    np.testing.assert_allclose(maps.conc.ravel()[1:], conc.ravel()[1:], atol=1e-6)
    assert np.isnan(maps.conc[0, 0, 0]) and np.isnan(maps.t1_pre[0, 0, 0])
    np.testing.assert_allclose(maps.t1_post, 1.0 / r1_post, rtol=1e-6)
    assert np.isnan(maps.se[0]).all()
    np.testing.assert_allclose(maps.se[1:], 20.0)
    only_t1w = P.state_maps(relaxivity=REL, t1w_post=pre, t1w_pre=pre)
    assert only_t1w.conc is None and only_t1w.t1_pre is None and only_t1w.se is not None


def test_scale_to_pre_removes_a_receiver_gain():
    rng = np.random.default_rng(3)
    pre = rng.uniform(50, 150, (10, 10, 10))
    healthy = np.ones(pre.shape, bool)
    scaled, scale = P.scale_to_pre(pre * 1.25, pre, healthy)
    assert scale == pytest.approx(1.25) and np.allclose(scaled, pre)
    same, nan = P.scale_to_pre(pre * 1.25, pre, np.zeros(pre.shape, bool))
    assert math.isnan(nan) and np.array_equal(same, pre * 1.25)


def test_region_rows_with_noise_give_standard_errors_intervals_and_detection_limits():
    from bids_agquant.qmri import uncertainty as U
    lesions, controls = labels()
    reg = regions(lesions, controls)
    conc = np.full(SHAPE, 0.2)
    conc[3, 3, 3] = np.nan                                           # left out of the mean
    conc[controls == 1] = 0.01
    pre = np.full(SHAPE, 100.0)
    post = pre * 1.5
    post[3:5, 3:5, 3:5] = 200.0                                      # the core of lesion 7
    maps = R.StateMaps(conc=conc, delta_r1=conc * REL.r1_per_mM_s, t1w_pre=pre, t1w_post=post,
                       se=100.0 * (post - pre) / pre)
    # position-dependent variances: a wrong box origin would pick other voxels' variances
    x = np.indices(SHAPE)[0].astype(float)
    var_post, var_pre = 1e-3 * (x + 1.0), 2e-3 * np.ones(SHAPE)
    sd_t1w = 4.0
    noise = U.StateNoise(
        r1_post=U.ResampledNoise.identity(var_post), r1_pre=U.ResampledNoise.identity(var_pre),
        t1w_post=U.ResampledNoise(np.full(SHAPE, sd_t1w ** 2), np.eye(4), values=post),
        t1w_pre=U.ResampledNoise(np.full(SHAPE, sd_t1w ** 2), np.eye(4), values=pre))
    rows = R.region_rows(regions=reg, lesion_labels=lesions, control_labels=controls, maps=maps,
                         base={}, relaxivity=REL, noise=noise)
    r7, ctl = rows[0], rows[2]
    sel = (lesions == 7) & np.isfinite(conc)
    k = sel.sum()
    d_se = math.sqrt((var_post[sel].sum() + var_pre[sel].sum()) / k ** 2)
    assert r7["delta_r1_stderr_per_s"] == pytest.approx(d_se, rel=1e-12)
    assert r7["conc_stderr_mM"] == pytest.approx(d_se / REL.r1_per_mM_s, rel=1e-12)
    assert r7["conc_ci_low_mM"] == pytest.approx(0.2 - U.Z_95 * r7["conc_stderr_mM"], rel=1e-12)
    assert r7["conc_ci_high_mM"] == pytest.approx(0.2 + U.Z_95 * r7["conc_stderr_mM"], rel=1e-12)
    assert r7["conc_stderr_mg_per_L"] == pytest.approx(1000.0 * r7["conc_stderr_mM"], rel=1e-12)
    # SE = 100 (P/Q - 1) over the 8-voxel core, P = 200 and Q = 100, each mean with sd/sqrt(8)
    rel = sd_t1w / math.sqrt(8)
    se_se = 100.0 * 2.0 * math.hypot(rel / 200.0, rel / 100.0)
    assert r7["se_stderr_percent"] == pytest.approx(se_se, rel=1e-12)
    assert r7["se_ci_low_percent"] == pytest.approx(100.0 - U.Z_95 * se_se, rel=1e-12)
    # one control: its mean (0.01 mM) beyond its own noise is the between-session term
    c_se = ctl["conc_stderr_mM"]
    tau2 = max(0.0, 0.01 ** 2 - c_se ** 2)
    assert ctl["conc_between_session_sd_mM"] == pytest.approx(math.sqrt(tau2), rel=1e-9)
    sigma0 = math.sqrt(r7["conc_stderr_mM"] ** 2 + tau2)
    assert r7["conc_lod_mM"] == pytest.approx(U.LOD_FACTOR * sigma0, rel=1e-9)
    assert r7["conc_loq_mM"] == pytest.approx(U.LOQ_FACTOR * sigma0, rel=1e-9)
    assert r7["conc_detected"] is True and r7["conc_quantifiable"] is (0.2 >= r7["conc_loq_mM"])
    assert r7["conc_lod_mg_per_L"] == pytest.approx(1000.0 * r7["conc_lod_mM"], rel=1e-9)
    assert ctl["conc_detected"] is (0.01 > U.CRITICAL_Z * math.sqrt(c_se ** 2 + tau2))
    without = R.region_rows(regions=reg, lesion_labels=lesions, control_labels=controls,
                            maps=maps, base={}, relaxivity=REL)
    assert "conc_stderr_mM" not in without[0] and "conc_lod_mM" not in without[0]
