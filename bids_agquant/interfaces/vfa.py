"""VFA T1 mapping in the VFA set's own space, and bringing the maps into the reference space.

Design choice (documented in the workflow too): fit in native VFA space, then resample R1 once.

* The SPGR signal is a nonlinear function of T1; interpolating the signals of neighbouring
  voxels and fitting the mixture is not the mixture of their T1s. R1 is linear in the
  concentration (R1 = R1_0 + r1 [Gd]), so linearly interpolating R1 maps keeps the mean
  concentration over a region; the same holds for pre and post maps, which are treated alike.
* It is cheaper (the VFA grid is coarser than the reference) and the noisy signals are never
  interpolated. T1 in the reference space is 1/R1 of the resampled R1.
* The B1+ map (its own grid) is resampled in world space onto the VFA grid (same session, same
  head position) and scaled by ``b1_scale`` (0.01 for a map stored in percent); head voxels
  outside its field of view (a slab, another angulation) are filled by a smooth polynomial
  (:mod:`bids_agquant.qmri.b1`), with a warning giving their fraction.
* Only voxels with signal are fitted (mean over flip angles above half its Otsu threshold,
  :func:`bids_agquant.qmri.masks.signal_mask`); the background is NaN.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, InputMultiObject, SimpleInterface,
                                    TraitedSpec, isdefined, traits)

from bids_agquant.errors import BadDataError
from bids_agquant.qmri import geometry as pure_geometry
from bids_agquant.qmri import qa
from bids_agquant.qmri.b1 import FILL_DEGREE, fill_uncovered_b1
from bids_agquant.qmri.masks import signal_mask
from bids_agquant.qmri.postcontrast import inverse
from bids_agquant.qmri.uncertainty import vfa_r1_variance
from bids_agquant.qmri.vfa import VFAModel

from . import geometry as G
from .notes import node_warning, warnings_output

__all__ = ["FitVFA", "MapsToReference", "compose_transforms", "b1_on_vfa_grid"]


class _FitVFAInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="one 3-D image per flip angle, one grid")
    flip_angles_deg = traits.List(traits.Float, mandatory=True, desc="nominal flip angles (deg)")
    tr_s = traits.Float(mandatory=True, desc="repetition time (s)")
    method = traits.Enum("nonlinear", "linear", usedefault=True)
    b1map = File(exists=True, desc="B1+ map (multiplicative factor after b1_scale)")
    b1_scale = traits.Float(1.0, usedefault=True, desc="multiply the stored B1 map by this")
    b1_method = traits.Str(desc="the B1 method whose images b1map was computed from (unset: a "
                                "TB1map); only the warnings' wording depends on it")
    intensity_factors = traits.List(traits.Float, desc="per flip image: multiply the values read "
                                    "by this to get precise values (Philips display values, "
                                    "bids/scaling.py); unset: as stored")


class _FitVFAOutputSpec(TraitedSpec):
    r1_file = File(exists=True, desc="R1 (1/s), native VFA grid")
    m0_file = File(exists=True, desc="M0 (signal units), native VFA grid")
    r1_var_file = File(exists=True, desc="variance of R1 (1/s^2) from the fit's own noise, "
                                         "native VFA grid (qmri/uncertainty.py)")
    n_failed = traits.Int(desc="voxels whose fit failed (NaN)")
    qa_file = File(exists=True, desc="JSON of the fit's QA metrics (qmri/qa.py): "
                                     "vfa_systematic_residual and, with a B1 map, b1_p01, "
                                     "b1_p99, b1_noise_sd, b1_anatomy_correlation")
    warnings = warnings_output()


class FitVFA(SimpleInterface):
    """Load a VFA set (and B1 map), call :class:`bids_agquant.qmri.vfa.VFAModel`, save R1 and M0."""
    input_spec = _FitVFAInputSpec
    output_spec = _FitVFAOutputSpec

    def _run_interface(self, runtime):
        files = list(self.inputs.in_files)
        if len(files) != len(self.inputs.flip_angles_deg):
            raise ValueError(f"{len(files)} VFA images but {len(self.inputs.flip_angles_deg)} "
                             f"flip angles ({files[0]} ...)")
        signal, affine = G.load_many(files)
        if isdefined(self.inputs.intensity_factors):
            factors = np.asarray(self.inputs.intensity_factors, np.float64)
            if factors.shape != (len(files),):
                raise ValueError(f"{len(files)} VFA images but {factors.size} intensity factors")
            signal = (signal * factors).astype(np.float32)
        head = signal_mask(signal.mean(axis=-1))
        b1 = self._b1_on_vfa_grid(signal.shape[:3], affine, head, Path(files[0]).name)
        fit = VFAModel(self.inputs.flip_angles_deg, self.inputs.tr_s,
                       method=self.inputs.method).fit(signal, mask=head, b1=b1)
        self._results["r1_file"] = G.save_like(fit.r1, affine, Path(runtime.cwd, "r1.nii"))
        self._results["m0_file"] = G.save_like(fit.m0, affine, Path(runtime.cwd, "m0.nii"))
        r1_var = vfa_r1_variance(fit, pure_geometry.voxel_sizes(affine),
                                 n_used=np.isfinite(signal).sum(axis=-1))
        self._results["r1_var_file"] = G.save_like(r1_var, affine,
                                                   Path(runtime.cwd, "r1_var.nii"))
        self._results["n_failed"] = int(fit.n_failed)
        metrics = {"vfa_systematic_residual": qa.vfa_systematic_residual(
            signal, fit.predict(), fit.valid & head)}
        if b1 is not None:
            metrics.update(qa.b1_statistics(b1, head, anatomy=signal))
        qa_file = Path(runtime.cwd, "vfa_qa.json")
        qa_file.write_text(json.dumps(metrics))
        self._results["qa_file"] = str(qa_file)
        if fit.n_failed:       # per-voxel failures are not fatal: NaN, counted and reported
            node_warning(self._results, "bids_agquant.vfa",
                         f"{Path(files[0]).name}: the VFA fit failed in {fit.n_failed} of "
                         f"{int(np.count_nonzero(head))} voxels with signal; they are NaN in the "
                         f"maps")
        return runtime


    def _b1_on_vfa_grid(self, shape, affine, head, vfa_name):
        """The B1+ factor on the VFA grid (None without a map); head voxels outside the map's
        field of view filled by :func:`bids_agquant.qmri.b1.fill_uncovered_b1`, with a
        warning giving the filled fraction; too little coverage is bad data (exit 65)."""
        if not isdefined(self.inputs.b1map):
            return None
        b1_data, b1_aff, _ = G.load(self.inputs.b1map)
        name = Path(self.inputs.b1map).name
        try:
            filled = b1_on_vfa_grid(b1_data, b1_aff, self.inputs.b1_scale, shape, affine, head)
        except ValueError as exc:
            raise BadDataError(f"{name}: {exc} of {vfa_name}",
                               fix="acquire a B1 map covering the head, or run with "
                                   "--b1-correction off") from exc
        if filled.filled_fraction > 0:
            where = "lie outside its field of view"
            if isdefined(self.inputs.b1_method):
                name = f"the B1+ factor computed from the {self.inputs.b1_method} images"
                where = ("lie outside its field of view or where the images give no factor (no "
                         "signal, or a signal ratio no flip angle explains)")
            node_warning(self._results, "bids_agquant.vfa",
                         f"{name}: {100 * filled.filled_fraction:.1f} % of the head voxels of "
                         f"{vfa_name} {where}; B1+ filled there by a "
                         f"degree-{FILL_DEGREE} polynomial fitted to the measured map")
        return filled.b1


def b1_on_vfa_grid(b1_data, b1_affine, b1_scale, shape, affine, head):
    """The B1+ factor map (stored values times ``b1_scale``) on the VFA grid, head voxels
    outside its field of view filled (:func:`bids_agquant.qmri.b1.fill_uncovered_b1`, whose
    result is returned; ``ValueError`` when too little of the head is covered)."""
    b1_data = np.asarray(b1_data, dtype=np.float64) * float(b1_scale)
    same = pure_geometry.reindexing(b1_data.shape, b1_affine, shape, affine,
                                    1e-3 * float(pure_geometry.voxel_sizes(affine).min()))
    if same is not None:        # the VFA grid itself (axes perhaps in another order): as is
        # (interpolating it would drop the outermost voxels: scipy puts them outside)
        b1 = np.ascontiguousarray(pure_geometry.reindexed(b1_data, same))
    else:
        b1 = pure_geometry.resample(b1_data, b1_affine, shape, affine, None, order=1,
                                    nan_aware=True, dtype=np.float64)
    return fill_uncovered_b1(b1, head, affine)


def compose_transforms(files) -> np.ndarray:
    """Product of transform files listed from the reference side outwards (LPS 4x4)."""
    return pure_geometry.compose(G.read_transform(f) for f in files)


class _MapsInputSpec(BaseInterfaceInputSpec):
    r1_file = File(exists=True, mandatory=True, desc="native R1 map (1/s)")
    m0_file = File(exists=True, mandatory=True, desc="native M0 map")
    reference_file = File(exists=True, mandatory=True, desc="reference-space image (grid)")
    t1w_transform = File(exists=True, desc="T_ref<-T1w of the T1w the VFA set was registered to "
                                           "(absent: it was registered to the reference)")
    vfa_transform = File(exists=True, mandatory=True, desc="T_T1w<-VFA (resampling convention)")


class _MapsOutputSpec(TraitedSpec):
    r1_file = File(exists=True, desc="R1 (1/s) in the reference space")
    t1_file = File(exists=True, desc="T1 = 1/R1 (s) in the reference space")
    m0_file = File(exists=True, desc="M0 in the reference space")
    transform_file = File(exists=True, desc="the composed transform T_ref<-VFA (.mat)")


class MapsToReference(SimpleInterface):
    """Resample native R1 and M0 once (linear, NaN-aware) through the composed transform."""
    input_spec = _MapsInputSpec
    output_spec = _MapsOutputSpec

    def _run_interface(self, runtime):
        chain = [self.inputs.vfa_transform]
        if isdefined(self.inputs.t1w_transform):
            chain.insert(0, self.inputs.t1w_transform)
        matrix = compose_transforms(chain)
        xfm = G.write_transform(matrix, Path(runtime.cwd, "xfm_ref_from_vfa.mat"))
        ref_img = G.load_header(self.inputs.reference_file)
        shape, ref_aff = ref_img.shape[:3], ref_img.affine
        r1, aff, _ = G.load(self.inputs.r1_file)
        m0, _, _ = G.load(self.inputs.m0_file)
        r1_ref, m0_ref = pure_geometry.resample_many([r1, m0], aff, shape, ref_aff, matrix)
        t1_ref = inverse(r1_ref)
        cwd = Path(runtime.cwd)
        self._results.update(
            r1_file=G.save_like(r1_ref, ref_aff, cwd / "r1_ref.nii"),
            t1_file=G.save_like(t1_ref, ref_aff, cwd / "t1_ref.nii"),
            m0_file=G.save_like(m0_ref, ref_aff, cwd / "m0_ref.nii"),
            transform_file=xfm)
        return runtime

