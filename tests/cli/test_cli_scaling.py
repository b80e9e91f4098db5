"""Philips intensity scaling (issue 13, item 1): display values converted, or refused, or warned.

Tiny datasets (tinybids) whose VFA and T1w images are stored as dcm2niix stores Philips DICOM:
int16 stored values with ``scl_slope``/``scl_inter`` in the NIfTI header and the four sidecar
fields, each file with its own rescale and scale slopes (as the flip angles of one Philips VFA
set have). The signal is the SPGR signal of known T1 and M0. The plan (real pybids, real
nibabel) decides the factor per file; the real nodes (``FitVFA``, ``QuantifyPostContrast``) read
the files with it; the CLI (``--print-plan``, in-process) shows it or refuses with exit 65.
"""
from __future__ import annotations

import dataclasses
import shutil
import gzip
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import tinybids as tb
from testkit import tree_state

from bids_agquant.bids import scaling as S
from bids_agquant.qmri.spgr import spgr_signal

#: (PhilipsRescaleSlope, PhilipsScaleSlope, PhilipsRescaleIntercept) per flip angle: display
#: scales RS x SS of 60, 240 and 340 (5.7x apart, as in the tester's Philips data).
PHILIPS = ((1.5, 40.0, 0.0), (4.0, 60.0, 12.0), (2.0, 170.0, -8.0))
T1_TRUTH = (0.8, 1.4)      # s: one half of the box each
TR = tb.TR_S


def truth(shape=tb.VFA_SHAPE, seed=3):
    """(M0, T1) maps: textured M0 around 1000, T1 0.8 s in one half, 1.4 s in the other."""
    m0 = tb.textured(shape, seed, scale=1000.0).astype(np.float64)
    t1 = np.full(shape, T1_TRUTH[0])
    t1[shape[0] // 2:] = T1_TRUTH[1]
    return m0, t1


def store_philips(path: Path, precise: np.ndarray, rs: float, ss: float, ri: float, *,
                  mode: int | None, manufacturer="Philips", fields=True) -> None:
    """Write ``precise`` values as dcm2niix writes a Philips series (Philips/README.md).

    SV (int16) = FP * SS - RI / RS, so that DV = SV * RS + RI and FP = DV / (RS * SS).
    ``mode`` 0 (``-p n``): scl_slope = RS, scl_inter = RI (nibabel reads DV); 1 (``-p y``):
    scl_slope = 1/SS, scl_inter = RI/(RS*SS) (nibabel reads FP).
    """
    sv = np.round(precise * ss - ri / rs).astype(np.int16)
    aff = nib.load(str(path)).affine
    tb.write_nifti(path, sv, aff)                        # int16 stored values, no scaling yet
    slope, inter = (rs, ri) if mode == 0 else (1.0 / ss, ri / (rs * ss))
    set_scl(path, slope, inter)
    meta = json.loads(tb.sidecar(path).read_text())
    meta["Manufacturer"] = manufacturer
    if fields:
        meta.update({"PhilipsRescaleSlope": rs, "PhilipsRescaleIntercept": ri,
                     "PhilipsScaleSlope": ss, "UsePhilipsFloatNotDisplayScaling": mode})
    tb.write_json(tb.sidecar(path), meta)


def set_scl(path: Path, slope: float, inter: float) -> None:
    """Write scl_slope/scl_inter into the header bytes (nibabel recomputes them when it saves an
    array, so it cannot write a given pair over given stored values)."""
    raw = bytearray(gzip.decompress(Path(path).read_bytes()))
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    raw[112:120] = struct.pack(endian + "ff", slope, inter)
    Path(path).write_bytes(gzip.compress(bytes(raw)))
    proxy = nib.load(str(path)).dataobj          # nibabel keeps the file's scaling here
    assert np.allclose((proxy.slope, proxy.inter), (slope, inter), rtol=1e-6)


def philips_dataset(root: Path, *, mode: int | None = 0, fields=True, manufacturer="Philips"):
    """ses-D0 with a pre-contrast T1w + VFA and a Dotarem T1w + VFA, all stored Philips-like."""
    ds = tb.make_dataset(root, sessions={"D0": (True, ["Dotarem"], "2020-01-06T09:00:00")},
                         b1=False, distractors=False)
    m0, t1 = truth()
    anat = ds / "sub-01" / "ses-D0" / "anat"
    for ce, t1_map in (("", t1), ("_ce-Dotarem", t1 * 0.5)):
        for i, (fa, (rs, ss, ri)) in enumerate(zip(tb.FLIP_ANGLES, PHILIPS), start=1):
            fp = spgr_signal(m0, t1_map, [fa], TR)[..., 0]
            store_philips(anat / f"sub-01_ses-D0{ce}_flip-{i}_VFA.nii.gz", fp, rs, ss, ri,
                          mode=mode, manufacturer=manufacturer, fields=fields)
    return ds


def t1w_pair(ds: Path, *, mode: int | None = 0):
    """Store the pre/post T1w pair Philips-like with different scales; (pre FP, post FP)."""
    anat = ds / "sub-01" / "ses-D0" / "anat"
    pre = tb.textured(tb.T1W_SHAPE, 11, scale=200.0).astype(np.float64)
    post = pre * 1.5                                          # SE = 50 % everywhere
    store_philips(anat / "sub-01_ses-D0_T1w.nii.gz", pre, 1.2, 30.0, 0.0, mode=mode)
    store_philips(anat / "sub-01_ses-D0_ce-Dotarem_T1w.nii.gz", post, 3.1, 55.0, 6.0, mode=mode)
    return pre, post


def plan_of(ds: Path, tmp_path: Path):
    from bids_agquant.bids.layout import build_plans
    from bids_agquant.config import Config
    config = Config(bids_dir=ds, output_dir=tmp_path / "out", analysis_level="participant")
    return build_plans(config)[0]


def fit_t1(plan, vfa, tmp_path: Path, *, convert=True) -> np.ndarray:
    """T1 (s) of a VFA set by the real FitVFA node, reading the files with the plan's factors."""
    from bids_agquant.interfaces.vfa import FitVFA
    node = FitVFA(in_files=[str(f) for f in vfa.files], flip_angles_deg=list(vfa.flip_angles_deg),
                  tr_s=vfa.tr_s)
    if convert:
        node.inputs.intensity_factors = [plan.intensity_factor(f) for f in vfa.files]
    cwd = tmp_path / f"fit_{vfa.files[0].name[:20]}_{convert}"
    cwd.mkdir()
    res = node.run(cwd=str(cwd))
    r1 = nib.load(res.outputs.r1_file).get_fdata()
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / r1


def test_display_values_are_converted_and_t1_is_right(tmp_path):
    ds = philips_dataset(tmp_path / "bids", mode=0)
    plan = plan_of(ds, tmp_path)
    _, t1 = truth()
    for st, t1_true in ((plan.state("D0", None), t1), (plan.state("D0", "Dotarem"), t1 * 0.5)):
        factors = [plan.intensity_factor(f) for f in st.vfa.files]
        assert factors == pytest.approx([1 / (rs * ss) for rs, ss, _ in PHILIPS])
        fitted = fit_t1(plan, st.vfa, tmp_path)
        ok = np.isfinite(fitted)
        assert ok.mean() > 0.95
        assert np.max(np.abs(fitted[ok] / t1_true[ok] - 1)) < 0.01
        wrong = fit_t1(plan, st.vfa, tmp_path, convert=False)      # display values as read
        assert np.nanmedian(np.abs(wrong / t1_true - 1)) > 0.3      # the trap is real
    assert not any(S.UNVERIFIED in w for w in plan.warnings)


def test_float_values_are_used_as_stored(tmp_path):
    ds = philips_dataset(tmp_path / "bids", mode=1)
    plan = plan_of(ds, tmp_path)
    st = plan.state("D0", None)
    assert [plan.intensity_factor(f) for f in st.vfa.files] == [1.0, 1.0, 1.0]
    fitted = fit_t1(plan, st.vfa, tmp_path)
    _, t1 = truth()
    ok = np.isfinite(fitted)
    assert ok.mean() > 0.95 and np.max(np.abs(fitted[ok] / t1[ok] - 1)) < 0.01


def test_t1w_pair_display_values_give_the_right_se(tmp_path):
    from bids_agquant.interfaces.quantify import QuantifyPostContrast
    ds = philips_dataset(tmp_path / "bids", mode=0)
    t1w_pair(ds, mode=0)
    plan = plan_of(ds, tmp_path)
    post = plan.state("D0", "Dotarem")
    pre = plan.pre_state_for(post)
    from bids_agquant.workflows.participant import _t1w_factors
    factors = _t1w_factors(plan, post, pre)
    assert factors == pytest.approx((1 / (3.1 * 55.0), 1 / (1.2 * 30.0)))
    ses = {}
    for convert in (True, False):
        node = QuantifyPostContrast(agent="Dotarem", t1w_post=str(post.t1w), t1w_pre=str(pre.t1w))
        if convert:
            node.inputs.t1w_post_factor, node.inputs.t1w_pre_factor = factors
        cwd = tmp_path / f"quant_{convert}"
        cwd.mkdir()
        ses[convert] = nib.load(node.run(cwd=str(cwd)).outputs.se_file).get_fdata()
    se = ses[True][np.isfinite(ses[True])]
    assert se.size > 0.9 * np.prod(tb.T1W_SHAPE)
    assert np.max(np.abs(se - 50.0)) < 0.5                    # SE 50 %, within 0.5 points
    assert abs(np.nanmedian(ses[False]) - 50.0) > 10          # display values: wrong


def test_workflow_sets_the_factors_only_for_converted_files(tmp_path):
    from bids_agquant.config import Config
    from bids_agquant.workflows.participant import init_participant_wf
    ds = philips_dataset(tmp_path / "bids", mode=0)
    t1w_pair(ds, mode=0)
    plan = plan_of(ds, tmp_path)
    config = Config(bids_dir=ds, output_dir=tmp_path / "out", analysis_level="participant",
                    work_dir=tmp_path / "work")
    wf = init_participant_wf(plan, config)
    fit = wf.get_node("vfa_D0_pre_wf").get_node("fit_vfa")
    assert fit.inputs.intensity_factors == pytest.approx([1 / (rs * ss) for rs, ss, _ in PHILIPS])
    quant = wf.get_node("post_D0_Dotarem_wf").get_node("quantify")
    assert quant.inputs.t1w_pre_factor == pytest.approx(1 / 36.0)
    # the same dataset as stored (no Philips fields): nodes without the inputs (same cache)
    plain = tb.make_dataset(tmp_path / "plain", sessions={"D0": (True, ["Dotarem"], "2020-01-06")},
                            b1=False, distractors=False)
    plan = plan_of(plain, tmp_path)
    assert plan.intensity and set(plan.intensity.values()) == {S.AS_STORED}
    wf = init_participant_wf(plan, dataclasses.replace(config, bids_dir=plain))
    from nipype.interfaces.base import isdefined
    assert not isdefined(wf.get_node("vfa_D0_pre_wf").get_node("fit_vfa").inputs.intensity_factors)
    quant = wf.get_node("post_D0_Dotarem_wf").get_node("quantify")
    assert not isdefined(quant.inputs.t1w_pre_factor)


def _plan_text(run_cli, ds, expect=0):
    before = tree_state(ds)
    res = run_cli(ds, ds.parent / "out", "participant", "--print-plan")
    assert res.code == expect, (res.code, res.err, res.out[-2000:])
    assert "Traceback" not in res.err + res.out
    assert tree_state(ds) == before
    return res


def test_print_plan_shows_the_conversion(run_cli, tmp_path):
    ds = philips_dataset(tmp_path / "bids", mode=0)
    res = _plan_text(run_cli, ds)
    line = next(x for x in res.out.splitlines() if "sub-01_ses-D0_flip-2_VFA.nii.gz" in x)
    assert ("(scaling: Philips display values / (PhilipsRescaleSlope 4 x PhilipsScaleSlope 60); "
            "x0.00416667)") in line
    assert S.UNVERIFIED not in res.out


def err_line(run_cli, ds):
    res = _plan_text(run_cli, ds, expect=65)
    line = res.first_err_line
    assert line.startswith("bids-agquant: error: ") and "dcm2niix -p y" in line
    return line


FLIP2 = Path("sub-01/ses-D0/anat/sub-01_ses-D0_flip-2_VFA.nii.gz")


@pytest.mark.parametrize("change, words", [
    ({"PhilipsScaleSlope": None}, ["UsePhilipsFloatNotDisplayScaling = 0 in "
                                   "sub-01/ses-D0/anat/sub-01_ses-D0_flip-2_VFA.json",
                                   "PhilipsScaleSlope is missing"]),
    ({"PhilipsRescaleSlope": 0}, ["PhilipsRescaleSlope = 0 in sub-01/ses-D0/anat/"
                                  "sub-01_ses-D0_flip-2_VFA.json is not a positive number"]),
    ({"PhilipsScaleSlope": "big"}, ["PhilipsScaleSlope = 'big'"]),
    ({"UsePhilipsFloatNotDisplayScaling": None}, [
        "sub-01/ses-D0/anat/sub-01_ses-D0_flip-2_VFA.json has Philips scaling fields",
        "UsePhilipsFloatNotDisplayScaling is missing", "display or precise"]),
    ({"UsePhilipsFloatNotDisplayScaling": "yes"}, ["UsePhilipsFloatNotDisplayScaling = 'yes' is "
                                                   "neither 0 nor 1"]),
])
def test_display_values_that_cannot_be_converted_exit_65(run_cli, tmp_path, change, words):
    ds = philips_dataset(tmp_path / "bids", mode=0)
    tb.edit_json(tb.sidecar(ds / FLIP2), **change)
    line = err_line(run_cli, ds)
    assert f"error: {FLIP2}: " in line
    for w in words:
        assert w in line, line


def test_the_message_names_the_inherited_sidecar(run_cli, tmp_path):
    """The flag comes from an inherited JSON (anat/sub-01_ses-D0_VFA.json): it is named."""
    ds = philips_dataset(tmp_path / "bids", mode=None, fields=False)
    tb.write_json(ds / "sub-01/ses-D0/anat/sub-01_ses-D0_VFA.json",
                  {"UsePhilipsFloatNotDisplayScaling": 0})
    line = err_line(run_cli, ds)
    assert ("UsePhilipsFloatNotDisplayScaling = 0 in sub-01/ses-D0/anat/sub-01_ses-D0_VFA.json"
            in line), line
    assert "PhilipsRescaleSlope is missing" in line


def test_philips_without_fields_warns_in_the_plan(run_cli, tmp_path):
    ds = philips_dataset(tmp_path / "bids", mode=None, fields=False)
    t1w_pair(ds, mode=None)
    for f in (ds / "sub-01/ses-D0/anat").glob("*_T1w.json"):
        tb.edit_json(f, **{k: None for k in S.PHILIPS_FIELDS})
    res = _plan_text(run_cli, ds)
    warnings = [x for x in res.out.splitlines() if "warning:" in x and S.UNVERIFIED in x]
    assert len(warnings) == 3, res.out          # two VFA sets and the pre/post T1w pair
    assert any("sub-01/ses-D0 pre-contrast VFA: Philips images without scaling fields" in w
               and "T1 and concentration are wrong; reconvert the DICOM with dcm2niix -p y" in w
               for w in warnings)
    assert any("sub-01/ses-D0 Dotarem T1w: Philips images without scaling fields" in w
               and "signal enhancement is wrong" in w for w in warnings)
    plan = plan_of(ds, tmp_path)
    assert sum(S.UNVERIFIED in w for w in plan.warnings) == 3    # the report lists plan warnings


def test_other_vendors_are_used_as_stored_without_warning(run_cli, tmp_path):
    ds = philips_dataset(tmp_path / "bids", mode=None, fields=False, manufacturer="Siemens")
    res = _plan_text(run_cli, ds)
    assert S.UNVERIFIED not in res.out and "scaling:" not in res.out


@pytest.mark.parametrize("stored, said", [(0, 1), (1, 0)])
def test_a_sidecar_contradicting_the_header_exits_65(run_cli, tmp_path, stored, said):
    """NIfTI written with one mode, sidecar claiming the other (a sidecar of another conversion)."""
    ds = philips_dataset(tmp_path / "bids", mode=stored)
    tb.edit_json(tb.sidecar(ds / FLIP2), UsePhilipsFloatNotDisplayScaling=said)
    line = err_line(run_cli, ds)
    held = "precise" if said == 0 else "display"
    assert (f"error: {FLIP2}: sub-01/ses-D0/anat/sub-01_ses-D0_flip-2_VFA.json says "
            f"{'display' if said == 0 else 'precise'} values (UsePhilipsFloatNotDisplayScaling = "
            f"{said}) but the NIfTI header's scl_slope/scl_inter") in line, line
    assert f"are dcm2niix's {held} scaling, so the sidecar belongs to another conversion" in line


def test_scaling_rules_without_files():
    """scaling_of on sidecar contents alone (no header read when no Philips field is present)."""
    root = Path("/nonexistent")
    assert S.scaling_of({"Manufacturer": "Philips"}, root / "x_T1w.nii.gz", root) is None
    assert S.scaling_of({"Manufacturer": "Siemens"}, root / "x_T1w.nii.gz", root) is None
    assert S.scaling_of({S.FLOAT_FLAG: 1}, root / "x_T1w.nii.gz", root) == S.FLOAT


def philipsify(ds: Path, *, mode: int = 0) -> int:
    """Store every VFA and T1w image of a phantom as dcm2niix stores Philips series: int16 with
    its own RS, SS and RI per file (display scales RS x SS 3-11x apart); returns the count."""
    files = sorted(ds.glob("sub-*/ses-*/anat/*_VFA.nii.gz"))
    files += sorted(ds.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))
    for n, f in enumerate(files):
        fp = nib.load(str(f)).get_fdata()
        rs, k, ri = ((1.3, 1.0, 0.0), (3.6, 0.45, 5.0), (0.9, 0.8, -3.0), (2.7, 0.3, 2.0))[n % 4]
        store_philips(f, fp, rs, k * 30000.0 / np.nanmax(fp), ri, mode=mode)
    return len(files)


@pytest.mark.slow
def test_phantom_as_philips_display_values_gives_the_phantom_numbers(run_cli, tmp_path):
    """The whole participant level on a phantom, as stored and as Philips display values."""
    from bids_agquant import simulate
    from testkit import read_tsv
    ds = tmp_path / "bids"
    simulate.simulate_dataset(ds, preset="small", n_participants=1, sessions=["pre", "inj"],
                              seed=21)
    shown = Path(shutil.copytree(ds, tmp_path / "philips"))
    assert philipsify(shown) >= 6
    tables = {}
    for name, root in (("stored", ds), ("philips", shown)):
        res = run_cli(root, tmp_path / f"out_{name}", "participant", "--nprocs", "2")
        assert res.code == 0, res.err + res.out[-3000:]
        assert S.UNVERIFIED not in res.out
        tables[name] = read_tsv(tmp_path / f"out_{name}" / "sub-01"
                                / "sub-01_desc-lesions_stats.tsv")
    assert len(tables["stored"]) == len(tables["philips"]) >= 6
    for a, b in zip(tables["stored"], tables["philips"]):
        assert (a["lesion_id"], a["region_type"]) == (b["lesion_id"], b["region_type"])
        if a["region_type"] != "lesion":
            # the control spheres are placed anew: any tiny change of the input (int16 rounding
            # alone does it) moves them among equally good places; healthy tissue stays ~0
            assert abs(float(b["conc_mean_mM"])) < 0.005, b
            continue
        # conc within 1 %, or 0.0005 mM for the 10-voxel lesion (int16 rounding of the stored
        # values alone moves its mean by ~1.5 %: the -p y copy of the same data does the same)
        for key, rel, absolute in (("t1_pre_mean_s", 0.005, 0.0), ("conc_mean_mM", 0.01, 5e-4),
                                   ("se_mean_percent", 0.0, 0.5)):
            x, y = float(a[key]), float(b[key])
            assert abs(x - y) <= max(rel * abs(x), absolute), (key, a["lesion_id"], x, y)
