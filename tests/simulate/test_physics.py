"""Images and truth agree: VFA fits return the true T1, concentrations follow r1, the B1 maps and
motion are what the truth says, noise is Rician at the requested SNR."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_agquant.qmri.relaxivity import get_relaxivity
from bids_agquant.qmri.vfa import VFAModel


def _img(truth, rel):
    img = nib.load(truth.bids_dir / rel)
    return img.get_fdata(dtype=np.float64), img.affine


def _voxel_of(affine, world_xyz):
    return tuple(np.rint(np.linalg.solve(affine, np.append(world_xyz, 1.0))[:3]).astype(int))


def _lesion_world(truth, sub, session, row):
    c = np.array([row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm, 1.0])
    return (truth.pose(sub, session) @ c)[:3]


def _fit_t1_at_lesion(truth, sub, session, agent, row):
    """Noiseless VFA fit (qmri.vfa, B1-corrected with the session TB1map) at the lesion centre."""
    meta = truth.participant(sub)["sessions"][session]
    key = f"{session}_{agent or 'pre'}"
    flips = truth.protocol["vfa"]["flip_angles_deg"]
    signals, affine = [], None
    for i in range(1, len(flips) + 1):
        data, affine = _img(truth, meta["files"][f"vfa:{key}:{i}"])
        signals.append(data)
    ijk = _voxel_of(affine, _lesion_world(truth, sub, session, row))
    b1, b1_aff = _img(truth, meta["files"]["b1"])
    assert np.allclose(b1_aff, affine)
    s = np.array([d[ijk] for d in signals])[None, :]
    fit = VFAModel(flips, truth.protocol["vfa"]["tr_s"]).fit(s, b1=np.array([b1[ijk]]))
    return float(fit.t1[0])


def test_noiseless_vfa_fit_returns_the_true_t1_pre_and_post(noiseless_phantom):
    t = noiseless_phantom
    big = t.lesion_geometry("01").sort_values("longest_diameter_mm").iloc[-1]
    assert big.longest_diameter_mm == 24.0
    t1_pre = _fit_t1_at_lesion(t, "01", "D0", None, big)
    assert t1_pre == pytest.approx(big.t1_pre_s, rel=0.005)
    for session, agent in (("D0", "Dotarem"), ("D1", "AGuIX"), ("D28", "Dotarem")):
        row = t.lesion_table("01", session, agent).set_index("lesion_id").loc[big.lesion_id]
        t1_post = _fit_t1_at_lesion(t, "01", session, agent, big)
        assert t1_post == pytest.approx(row.t1_post_s, rel=0.005), session
        # the concentration behind it: [Gd] = delta R1 / r1 with the registry's relaxivity
        r1 = get_relaxivity(agent, t.protocol["field_strength_t"]).r1_per_mM_s
        assert row.r1_per_mM_s == r1
        conc = (1 / t1_post - 1 / t1_pre) / r1
        assert conc == pytest.approx(row.conc_mM, rel=0.03), session
        assert row.delta_r1_per_s == pytest.approx(r1 * row.conc_mM)


def test_concentrations_follow_the_protocol(small_phantom):
    t = small_phantom
    df = t.lesions
    dose = t.participant("01")["covariates"]["dose_mg_per_kg"]
    agu = df[(df.session_id == "ses-D1")]
    assert (agu.contrast_agent == "AGuIX").all()
    assert agu.conc_mM.between(0.02 * dose / 100 - 1e-9, 0.1 * dose / 100 + 1e-9).all()
    resid = df[df.session_id == "ses-D8"].set_index("lesion_id").conc_mM
    assert (resid < agu.set_index("lesion_id").conc_mM * 0.25).all() and (resid > 0).all()
    dot = df[df.session_id == "ses-D0"]
    assert dot.conc_mM.between(0.2, 0.5).all() and (dot.contrast_agent == "Dotarem").all()
    assert (df.pre_session_id == df.session_id.where(df.session_id.isin(["ses-D0", "ses-D28"]),
                                                     "ses-D0")).all()
    # partial-volume versions never exceed the uniform lesion value
    assert (df.conc_vfa_mM <= df.conc_mM + 1e-9).all() and (df.conc_pv_mM <= df.conc_mM + 1e-9).all()
    assert (df.measurable == (df.axial_diameter_mm >= 10)).all()


def test_truth_concentration_maps_are_zero_in_healthy_tissue(small_phantom):
    t = small_phantom
    labels, _ = t.load_map("01", "lesions")
    # a VFA voxel (4x4x5 mm) plus trilinear resampling reaches < 12 mm beyond the lesion mask
    grown = ndimage.binary_dilation(labels > 0, structure=np.ones((3, 3, 3)), iterations=4)
    for name in ("conc:D1_AGuIX", "conc_vfa:D1_AGuIX", "conc:D0_Dotarem"):
        conc, _ = t.load_map("01", name)
        assert np.abs(conc[~grown]).max() == 0.0, name
        assert conc[labels > 0].mean() > 0.0


def test_lesion_ids_are_the_mask_components(small_phantom):
    t = small_phantom
    root = t.bids_dir
    mask = nib.load(root / "derivatives/lesions/sub-01/ses-D0/anat/"
                         "sub-01_ses-D0_label-metastasis_mask.nii.gz")
    comp, n = ndimage.label(mask.get_fdata() > 0, structure=np.ones((3, 3, 3)))
    geo = t.lesion_geometry("01")
    assert n == len(geo) == len(t.meta["config"]["lesion_diameters_mm"])
    voxel_volume = float(np.prod(np.sqrt((mask.affine[:3, :3] ** 2).sum(0))))
    for _, row in geo.iterrows():
        ijk = _voxel_of(mask.affine, [row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm])
        assert comp[ijk] == row.lesion_id
        assert (comp == row.lesion_id).sum() == row.n_voxels
        centroid = np.argwhere(comp == row.lesion_id).mean(0)
        assert np.allclose(centroid, [row.centroid_i, row.centroid_j, row.centroid_k])
        if row.longest_diameter_mm >= 20:
            assert row.n_voxels * voxel_volume == pytest.approx(row.volume_mm3, rel=0.2)


def test_b1_maps_are_the_truth_moved_with_the_head(noiseless_phantom):
    t = noiseless_phantom
    lo, hi = t.protocol["b1"]["range"]
    t1map, ref_aff = t.load_map("01", "T1")
    rng = np.random.default_rng(0)
    inside = np.argwhere(t1map > 0.6)
    pick = inside[rng.choice(len(inside), 400, replace=False)]
    for session in t.sessions("01"):
        truth_b1, _ = t.load_map("01", f"B1:{session}")
        assert truth_b1[t1map > 0].min() >= lo - 2e-3 and truth_b1[t1map > 0].max() <= hi + 2e-3
        assert truth_b1[t1map > 0].max() - truth_b1[t1map > 0].min() > 0.8 * (hi - lo)
        b1, b1_aff = _img(t, t.participant("01")["sessions"][session]["files"]["b1"])
        world = t.pose("01", session) @ ref_aff @ np.c_[pick, np.ones(len(pick))].T
        idx = np.linalg.solve(b1_aff, world)[:3]
        sampled = ndimage.map_coordinates(b1, idx, order=1)
        assert np.abs(sampled - truth_b1[tuple(pick.T)]).max() < 0.01, session


def test_motion_is_what_the_truth_says(noiseless_phantom):
    t = noiseless_phantom
    cfg = t.meta["config"]
    assert np.array_equal(t.pose("01", "D0"), np.eye(4))
    for _, row in t.motion.iterrows():
        assert row.rotation_deg <= cfg["motion_deg"] + 1e-9
        assert row.translation_mm <= cfg["motion_mm"] + 1e-9
    moved = t.motion[t.motion.session_id != "ses-D0"]
    assert (moved.rotation_deg > 0.3 * cfg["motion_deg"] - 1e-9).all()
    big = t.lesion_geometry("01").sort_values("longest_diameter_mm").iloc[-1]
    # D28 has pre and post in the same pose: the enhancing blob sits at pose @ centre
    meta = t.participant("01")["sessions"]["D28"]
    pre, aff = _img(t, meta["files"]["t1w:D28_pre"])
    post, _ = _img(t, meta["files"]["t1w:D28_Dotarem"])
    diff = post - pre
    lab, _ = ndimage.label(diff > 0.2 * diff.max())
    ijk = _voxel_of(aff, _lesion_world(t, "01", "D28", big))
    blob = np.argwhere(lab == lab[ijk])
    w = np.average(np.c_[blob, np.ones(len(blob))], axis=0, weights=diff[tuple(blob.T)])
    centroid_world = (aff @ w)[:3]
    assert np.linalg.norm(centroid_world - _lesion_world(t, "01", "D28", big)) < 1.0
    unmoved = np.array([big.centroid_x_mm, big.centroid_y_mm, big.centroid_z_mm])
    assert np.linalg.norm(centroid_world - unmoved) > 1.5   # the motion is real


def test_session_images_align_with_baseline_through_the_true_pose(noiseless_phantom):
    t = noiseless_phantom
    base, ref_aff = _img(t, t.participant("01")["sessions"]["D0"]["files"]["t1w:D0_pre"])
    d1, d1_aff = _img(t, t.participant("01")["sessions"]["D1"]["files"]["t1w:D1_AGuIX"])
    labels, _ = t.load_map("01", "lesions")
    keep = (base > 0.2 * base.max()) & ~ndimage.binary_dilation(labels > 0, iterations=4)
    pts = np.c_[np.argwhere(keep), np.ones(int(keep.sum()))].T

    def corr(world_from_ref):
        idx = np.linalg.solve(d1_aff, world_from_ref @ pts)[:3]
        return np.corrcoef(base[keep], ndimage.map_coordinates(d1, idx, order=1))[0, 1]

    pose = t.pose("01", "D1")
    good = corr(pose @ ref_aff)
    assert good > 0.97
    assert good > corr(ref_aff) + 0.05
    assert good > corr(np.linalg.inv(pose) @ ref_aff) + 0.05


def test_noiseless_signal_enhancement_matches_truth(noiseless_phantom):
    t = noiseless_phantom
    meta = t.participant("01")["sessions"]["D28"]
    pre, aff = _img(t, meta["files"]["t1w:D28_pre"])
    post, _ = _img(t, meta["files"]["t1w:D28_Dotarem"])
    for _, row in t.lesion_table("01", "D28", "Dotarem").iterrows():
        if row.longest_diameter_mm < 20:
            continue
        ijk = _voxel_of(aff, _lesion_world(t, "01", "D28", row))
        se = 100 * (post[ijk] / pre[ijk] - 1)
        assert se == pytest.approx(row.se_percent, rel=0.02)


def test_rician_background_noise_at_the_requested_snr(small_phantom):
    t = small_phantom
    data, _ = _img(t, t.participant("01")["sessions"]["D0"]["files"]["t1w:D0_pre"])
    corners = [data[sl] for sl in np.ndindex(2, 2, 2) for sl in
               [tuple(slice(0, 4) if c == 0 else slice(-4, None) for c in sl)]]
    background = np.concatenate([c.ravel() for c in corners])
    sigma = t.protocol["signal_wm_counts"] / t.protocol["snr"]
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.08)
    assert (background >= 0).all()


def test_perfectly_registered_oracle_recovers_conc_at_vfa_resolution(noiseless_phantom):
    """VFA fits of every state, resampled to the reference grid through the true poses, give the
    truth's ``conc_vfa_mM`` (the quantity the app is held to) inside the lesion masks."""
    t = noiseless_phantom
    sub = "01"
    part = t.participant(sub)
    ref_aff = np.array(part["reference"]["affine"])
    ref_shape = tuple(part["reference"]["shape"])
    labels, _ = t.load_map(sub, "lesions")
    flips = t.protocol["vfa"]["flip_angles_deg"]
    model = VFAModel(flips, t.protocol["vfa"]["tr_s"])
    near = np.argwhere(ndimage.binary_dilation(labels > 0, iterations=3))
    pts = np.c_[near, np.ones(len(near))].T
    r1_ref = {}
    for ses, meta in part["sessions"].items():
        b1, _ = _img(t, meta["files"]["b1"])
        for key in meta["states"]:
            sig, aff = zip(*(_img(t, meta["files"][f"vfa:{key}:{i}"]) for i in range(1, len(flips) + 1)))
            sig = np.stack(sig, -1)
            fit = model.fit(sig, mask=sig[..., 0] > 0.2 * sig[..., 0].max(), b1=b1)
            idx = np.linalg.solve(aff[0], np.array(meta["pose"]) @ ref_aff @ pts)[:3]
            vals = np.full(ref_shape, np.nan)
            vals[tuple(near.T)] = ndimage.map_coordinates(fit.r1, idx, order=1)
            r1_ref[key] = vals
    rows = t.lesion_table(sub)
    assert len(rows) > 0
    for _, row in rows.iterrows():
        key = f"{row.session_id[4:]}_{row.contrast_agent}"
        pre = f"{row.pre_session_id[4:]}_pre"
        conc = (r1_ref[key] - r1_ref[pre]) / row.r1_per_mM_s
        est = np.nanmean(conc[labels == row.lesion_id])
        tol = 0.03 if row.longest_diameter_mm >= 20 else 0.15
        assert est == pytest.approx(row.conc_vfa_mM, rel=tol), (key, row.lesion_id)


def test_ants_rigid_registration_recovers_the_true_pose(small_phantom, tmp_path):
    """The anatomy has enough texture for a rigid registration to lock on, and the truth's pose
    convention is ANTs': fixed (baseline) points map to moving (session) points by ``pose``."""
    import ants
    import pandas as pd
    t = small_phantom
    files = t.participant("01")["sessions"]
    fixed = ants.image_read(str(t.bids_dir / files["D0"]["files"]["t1w:D0_pre"]))
    moving = ants.image_read(str(t.bids_dir / files["D1"]["files"]["t1w:D1_AGuIX"]))
    reg = ants.registration(fixed, moving, type_of_transform="Rigid", random_seed=1,
                            outprefix=str(tmp_path / "reg_"))     # not ANTsPy's /tmp default
    geo = t.lesion_geometry("01")
    ras = geo[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    lps = pd.DataFrame(ras * [-1, -1, 1], columns=["x", "y", "z"])
    mapped = ants.apply_transforms_to_points(3, lps, reg["fwdtransforms"])[["x", "y", "z"]].to_numpy()
    expected = (t.pose("01", "D1") @ np.c_[ras, np.ones(len(ras))].T).T[:, :3]
    assert np.linalg.norm(expected - ras, axis=1).max() > 1.0          # there is motion to find
    assert np.linalg.norm(mapped * [-1, -1, 1] - expected, axis=1).max() < 0.5
