"""VFA T1 against the 171 OSIPI DCE-DSC-MRI CodeCollection cases (``../shared/eval/osipi_t1``).

OSIPI's criterion: ``assert_allclose(r1, r1_ref, rtol=0.05, atol=0.05)`` per case; the nonlinear
fit passes all 171, DESPOT1 all but ``Pat5_voxel5_prostaat`` (OSIPI's expected failure for
linear methods, a low-SNR voxel). Beyond OSIPI, the references that are themselves plain
least-squares fits (brain R1, prostate ``T1 nonlinear``, prostate ``T1 nonlinear B1cor`` with the
B1 column) and the OLS DESPOT1 prostate ``T1 linear`` are reproduced to within a few 1e-5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaldata import eval_dir, require_eval
from eval_loaders import OSIPI_T1_FILES, load_osipi_t1

from bids_agquant.qmri.vfa import VFAModel

OSIPI_XFAIL_LINEAR = {"Pat5_voxel5_prostaat"}


def _cases():
    folder = eval_dir() / "osipi_t1"
    if not all((folder / f).exists() for f in OSIPI_T1_FILES):
        return [pytest.param(None, id="osipi_t1-data-missing")]
    return [pytest.param(c, id=c.label) for c in load_osipi_t1(folder)]


CASES = _cases()


def _data_or_skip(case):
    if case is None:
        for f in OSIPI_T1_FILES:
            require_eval("osipi_t1", f)
    return case


def test_all_171_cases_loaded():
    folder = require_eval("osipi_t1")
    cases = load_osipi_t1(Path(folder))
    assert len(cases) == 171
    assert len({c.label for c in cases}) == 171
    assert sum(c.source == "t1_prostate_data.csv" for c in cases) == 50
    assert OSIPI_XFAIL_LINEAR <= {c.label for c in cases}


@pytest.mark.parametrize("case", CASES)
def test_osipi_nonlinear(case):
    case = _data_or_skip(case)
    fit = VFAModel(case.flip_angles_deg, case.tr_s, method="nonlinear").fit(case.signal)
    assert fit.t1.shape == () and bool(fit.valid)
    np.testing.assert_allclose([fit.r1], [case.r1_ref_per_s], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("case", [
    pytest.param(*p.values, id=p.id, marks=[pytest.mark.xfail(
        strict=True, reason="OSIPI expected failure for linear VFA (low SNR)")])
    if p.values[0] is not None and p.values[0].label in OSIPI_XFAIL_LINEAR else p
    for p in CASES])
def test_osipi_linear(case):
    case = _data_or_skip(case)
    fit = VFAModel(case.flip_angles_deg, case.tr_s, method="linear").fit(case.signal)
    np.testing.assert_allclose([fit.r1], [case.r1_ref_per_s], rtol=0.05, atol=0.05)


def _subset(source):
    folder = require_eval("osipi_t1")
    return [c for c in load_osipi_t1(Path(folder)) if c.source == source]


def _fit_all(cases, method, with_b1=False):
    return np.array([float(VFAModel(c.flip_angles_deg, c.tr_s, method).fit(
        c.signal, b1=c.b1 if with_b1 else None).t1) for c in cases])


def test_brain_reference_is_reproduced_by_nonlinear_fit():
    """The Edinburgh brain R1 are NLLS fits: we agree to 3e-5 (tested at 1e-4)."""
    cases = _subset("t1_brain_data.csv")
    r1 = 1.0 / _fit_all(cases, "nonlinear")
    ref = np.array([c.r1_ref_per_s for c in cases])
    np.testing.assert_allclose(r1, ref, rtol=1e-4)


def test_prostate_nonlinear_reference_reproduced():
    """``T1 nonlinear`` (no B1): achieved 2.6e-6 relative, tested at 1e-5."""
    cases = _subset("t1_prostate_data.csv")
    ref = np.array([c.t1_refs_s["T1 nonlinear"] for c in cases])
    np.testing.assert_allclose(_fit_all(cases, "nonlinear"), ref, rtol=1e-5)


def test_prostate_b1_corrected_nonlinear_reference_reproduced_with_b1_column():
    """``T1 nonlinear B1cor`` with FA_eff = (B1/100) FA: achieved 3.2e-6 relative, tested 1e-5."""
    cases = _subset("t1_prostate_data.csv")
    ref = np.array([c.t1_refs_s["T1 nonlinear B1cor"] for c in cases])
    t1 = _fit_all(cases, "nonlinear", with_b1=True)
    np.testing.assert_allclose(t1, ref, rtol=1e-5)
    # and the B1 column matters: without it the fit misses the B1-corrected values by far more
    t1_nob1 = _fit_all(cases, "nonlinear")
    assert np.max(np.abs(t1_nob1 / ref - 1)) > 0.1


def test_prostate_linear_reference_reproduced_by_despot1():
    """``T1 linear`` is OLS DESPOT1: achieved 6.1e-5 relative, tested at 2e-4."""
    cases = _subset("t1_prostate_data.csv")
    ref = np.array([c.t1_refs_s["T1 linear"] for c in cases])
    np.testing.assert_allclose(_fit_all(cases, "linear"), ref, rtol=2e-4)


def test_vectorised_fit_equals_case_by_case():
    """All 45 QIBA voxels share a protocol: one vectorised call gives the per-case results."""
    cases = _subset("t1_quiba_data.csv")
    fa, tr = cases[0].flip_angles_deg, cases[0].tr_s
    assert all(np.array_equal(c.flip_angles_deg, fa) and c.tr_s == tr for c in cases)
    stack = np.stack([c.signal for c in cases])
    t1_vec = VFAModel(fa, tr).fit(stack).t1
    np.testing.assert_allclose(t1_vec, _fit_all(cases, "nonlinear"), rtol=1e-9)
    r1_ref = np.array([c.r1_ref_per_s for c in cases])
    np.testing.assert_allclose(1.0 / t1_vec, r1_ref, rtol=0.05, atol=0.05)
