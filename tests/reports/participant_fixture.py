"""Small participant derivatives for the report tests (a synthetic head, two lesions, controls).

These files stand in for the pipeline's, named as it names them (every path comes from the
output registry, ``bids/derivatives.py``): maps in ``space-T1w`` per session and contrast state
(``T1map``, ``SEmap``, ``Conc``, ``desc-delta_R1map``), ``from-orig_to-T1w`` transforms with
their JSON sidecars, lesion and control label images, the lesion table, JSON sidecars beside the
maps and a log folder; the native T1w images live in a raw BIDS folder
beside the outputs (``<out>_bids``), moved by known shifts that the transforms undo (except at
D8, whose transform is deliberately wrong). Values are analytic (SE 100 % and 0.04 mM in
lesion 1, ...), so a test can check what the report says.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_agquant.bids import derivatives as D

SHAPE = (40, 48, 36)
VOXEL_MM = (2.0, 2.0, 2.5)
LESIONS = {1: ((14, 28, 18), 4.0), 2: ((27, 20, 12), 2.5)}      # label: (centre voxel, radius)
CONTROLS = {1: (24, 34, 22), 2: (12, 16, 14), 3: (30, 30, 24)}
SE_IN_LESION = {1: 100.0, 2: 60.0}                               # % at the AGuIX state
CONC_IN_LESION_MM = {1: 0.04, 2: 0.02}
SHIFT_VOXELS = {"D1": 2, "D8": 3}        # motion of the native session images (voxels along x)
WRONG_TRANSFORM = {"D8"}                 # the D8 transform is identity: a misregistration to see
VFA_FLIP_DEG = (3.0, 10.0, 20.0)         # the D1 VFA set (written with its SPGR signals)
VFA_TR_S = 0.006
VFA_M0 = 5000.0


def _affine() -> np.ndarray:
    aff = np.diag([*VOXEL_MM, 1.0])
    aff[:3, 3] = -np.array(SHAPE) * np.array(VOXEL_MM) / 2
    return aff


def _ball(centre, radius) -> np.ndarray:
    z = np.indices(SHAPE).astype(float)
    d2 = sum(((z[i] - centre[i]) * VOXEL_MM[i] / VOXEL_MM[0]) ** 2 for i in range(3))
    return d2 <= radius ** 2


def _save(data, path: Path, dtype=np.float32):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), _affine()), str(path))
    return path


def b1_factor_true(shape=SHAPE) -> np.ndarray:
    """The B1+ factor of the D1 session: 0.85 to 1.15 along x (voxel axis 0)."""
    return np.broadcast_to(np.linspace(0.85, 1.15, shape[0])[:, None, None], shape).copy()


def _vfa_set(out: Path, ses_dir: Path, p: str, head, t1) -> dict:
    """The D1 VFA set: native VFA images (moved like the D1 T1w) with the SPGR signals of M0
    and ``t1`` under the B1+ factor of :func:`b1_factor_true`, the TB1map (in percent), the
    M0 map and the ``from-VFA_to-T1w`` transform that undoes the motion."""
    from bids_agquant.interfaces import geometry as G
    from bids_agquant.qmri.spgr import spgr_signal
    shift = SHIFT_VOXELS["D1"]
    m0 = VFA_M0 * head
    signal = spgr_signal(m0, np.where(head, t1, 1.0), VFA_FLIP_DEG, VFA_TR_S, b1_factor_true())
    files = []
    for k, _ in enumerate(VFA_FLIP_DEG):
        files.append(_save(np.roll(signal[..., k], shift, axis=0),
                           ses_dir / "anat" / f"{p}_ses-D1_ce-AGuIX_flip-{k + 1}_VFA.nii.gz"))
    b1map = _save(100.0 * np.roll(b1_factor_true(), shift, axis=0),
                  ses_dir / "fmap" / f"{p}_ses-D1_TB1map.nii.gz")
    _save(m0, out / D.derivative_path("M0map", files[0]))
    t_ras = np.eye(4)
    t_ras[0, 3] = shift * VOXEL_MM[0]
    xfm = out / D.derivative_path("xfm_vfa", files[0])
    G.write_transform(G.ras_to_lps_matrix(t_ras), xfm)
    xfm.with_suffix(".json").write_text(json.dumps({"Description": "VFA to reference"}))
    return {"files": tuple(files), "flip_angles_deg": VFA_FLIP_DEG, "tr_s": VFA_TR_S,
            "b1map": b1map, "b1_scale": 0.01}


def make_participant_outputs(out: Path, participant: str = "01") -> dict:
    """Write the derivatives of one participant under ``out``; returns a few facts."""
    rng = np.random.default_rng(1)
    idx = np.indices(SHAPE).astype(float)
    c = (np.array(SHAPE) - 1) / 2
    r = np.sqrt(sum(((idx[i] - c[i]) / (0.45 * SHAPE[i])) ** 2 for i in range(3)))
    head = r < 1.0
    brain = r < 0.85
    wm = r < 0.55
    t1w = np.where(head, 300.0, 0.0) + np.where(brain, 400.0, 0.0) + np.where(wm, 300.0, 0.0)
    t1w += 40.0 * np.sin(idx[0] / 2.0) * np.cos(idx[1] / 3.0) * brain      # texture
    t1map_pre = np.where(wm, 0.9, np.where(brain, 1.4, np.where(head, 0.4, 0.0)))
    lesions = np.zeros(SHAPE, np.int16)
    for lab, (centre, radius) in LESIONS.items():
        lesions[_ball(centre, radius)] = lab
    controls = np.zeros(SHAPE, np.int16)
    for lab, centre in CONTROLS.items():
        controls[_ball(centre, 2.0) & (lesions == 0)] = lab
    se = np.zeros(SHAPE)
    conc = np.zeros(SHAPE)
    for lab in LESIONS:
        se[lesions == lab] = SE_IN_LESION[lab]
        conc[lesions == lab] = CONC_IN_LESION_MM[lab]
    se += rng.normal(0, 1.0, SHAPE) * brain
    conc += rng.normal(0, 0.001, SHAPE) * brain
    p = f"sub-{participant}"
    root = out / p
    written = {}

    bids = out.parent / f"{out.name}_bids"
    raw = bids / p

    def raw_anat(ses):
        return raw / f"ses-{ses}" / "anat"

    ref_rel = f"{p}/ses-D0/anat/{p}_ses-D0_T1w.nii.gz"
    written["reference"] = _save(t1w, bids / ref_rel)
    sidecar = {"SpatialReference": f"bids:raw:{ref_rel}"}
    from bids_agquant.interfaces import geometry as G
    for ses, agent, fac in (("D0", "Dotarem", 1.8), ("D1", "AGuIX", 1.0 + SE_IN_LESION[1] / 100),
                            ("D8", "AGuIX", 1.2)):
        post = t1w * np.where(lesions > 0, fac, 1.0)
        shift = SHIFT_VOXELS.get(ses, 0)
        # the native image: the head moved by +shift voxels along x (= +2*shift mm, RAS)
        source = raw_anat(ses) / f"{p}_ses-{ses}_ce-{agent}_T1w.nii.gz"
        _save(np.roll(post, shift, axis=0), source)
        t_ras = np.eye(4)
        t_ras[0, 3] = shift * VOXEL_MM[0] * (0 if ses in WRONG_TRANSFORM else 1)
        xfm = out / D.derivative_path("xfm_t1w", source)
        xfm.parent.mkdir(parents=True, exist_ok=True)
        G.write_transform(G.ras_to_lps_matrix(t_ras), xfm)
        # the pipeline's sidecar beside the transform (what the report must never read as one)
        xfm.with_suffix(".json").write_text(json.dumps({
            "Description": D.OUTPUTS["xfm_t1w"].description, **sidecar}))
        t1map = _save(1.0 / (1.0 / np.maximum(t1map_pre, 1e-3) + 8.9 * conc) * head,
                      out / D.derivative_path("T1map", source))
        Path(str(t1map).replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
        _save(se * (fac - 1.0) / (SE_IN_LESION[1] / 100),
              out / D.derivative_path("enhancement", source))
        _save(conc, out / D.derivative_path("concentration", source))
        _save(8.9 * conc, out / D.derivative_path("delta_r1", source))
    written["bids"] = bids
    written["vfa"] = _vfa_set(out, raw_anat("D1").parent, p, head,
                              1.0 / (1.0 / np.maximum(t1map_pre, 1e-3) + 8.9 * conc) * head)
    _save(t1map_pre, out / D.derivative_path("T1map", bids / ref_rel))
    _save(lesions, out / D.participant_path("lesion_dseg", participant), np.int16)
    _save(controls, out / D.participant_path("control_dseg", participant), np.int16)
    cols = ["participant_id", "session_id", "contrast_agent", "lesion_id", "longest_diameter_mm",
            "measurable", "volume_mm3", "se_mean_percent", "se_sd_percent", "t1_pre_mean_s",
            "t1_post_mean_s", "delta_r1_mean_per_s", "conc_mean_mM", "conc_sd_mM",
            "conc_mean_mg_per_L", "n_voxels"]
    lines = ["\t".join(cols)]
    for lab, (_, radius) in LESIONS.items():
        d = 2 * radius * VOXEL_MM[0]
        lines.append("\t".join(map(str, [p, "ses-D1", "AGuIX", lab, d, str(d >= 10).lower(),
                                         int((lesions == lab).sum() * np.prod(VOXEL_MM)),
                                         SE_IN_LESION[lab], 1.0, 1.4, 1.0, 0.35,
                                         CONC_IN_LESION_MM[lab], 0.001,
                                         CONC_IN_LESION_MM[lab] * 1000,
                                         int((lesions == lab).sum())])))
    for k in CONTROLS:
        lines.append("\t".join(map(str, [p, "ses-D1", "AGuIX", f"control-{k}", 8.0, "false",
                                         200, 0.3, 1.0, 1.2, 1.2, 0.0, 0.0001, 0.001, 0.1,
                                         20])))
    (out / D.participant_path("lesion_table", participant)).write_text("\n".join(lines) + "\n")
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "bids_agquant outputs", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_agquant", "Version": "0.1.0"}]}))
    log = root / "log"
    log.mkdir(exist_ok=True)
    (log / f"{p}_participant.log").write_text(
        "2024-01-01 10:00:00 INFO started\n"
        "2024-01-01 10:00:01 WARNING ses-D8: no pre-contrast T1w, baseline used\n")
    runs = out / "logs"                       # the CLI's run logs: only the newest counts
    runs.mkdir(exist_ok=True)
    (runs / f"{p}_20240101T090000.log").write_text(
        "2024-01-01 09:00:00,001 WARNING bids_agquant.layout: a stale warning of an old run\n")
    (runs / f"{p}_20240102T090000.log").write_text(
        "2024-01-02 09:00:00,001 INFO bids_agquant.cli: started\n"
        "2024-01-02 09:00:01,002 WARNING bids_agquant.layout: ses-D1: no B1 map, nominal flip "
        "angles used\n")
    written["lesions"] = lesions
    return written
