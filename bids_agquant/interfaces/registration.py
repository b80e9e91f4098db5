"""Rigid registration with antspyx (ANTs), deterministic, and the nipype interface around it.

How (documented choice):

* Metric Mattes mutual information (32 bins) on about 10000 fixed-image points drawn at random
  with a fixed seed, intensities winsorised to the 0.5-99.5 percentiles, so different contrasts
  (pre/post-contrast T1w, VFA flip images) register. (Random rather than regular sampling: with
  a regular lattice of so few points the result depended erratically on the lattice, up to 2 mm
  off on the clinical phantom; random points were stable.)
* Initialised by aligning the centres of mass; rigid (Euler) transform, gradient step 0.25.
* Images finer than 2 mm are block-averaged to about 2 mm first, then two rigid stages: a coarse
  one (shrink 4, 2; smoothing 2, 1 voxels; at most 500, 250 iterations) and a fine one at the
  (2 mm) full resolution (at most 100 iterations), convergence 1e-6 over 10 iterations. Each
  stage samples about 10000 points at its finest level (the cost of the ITK metric grows with
  the number of samples, about 5 us per sample and iteration on one thread, not with the image
  size). Rigid accuracy is well below a millimetre (tested against the phantom's known motion)
  and it is several times faster than antspyx's "Rigid" default.
* Deterministic: one ITK thread and ``--random-seed`` (``config.ants_seed``), see
  :func:`bids_agquant.interfaces.geometry.import_ants`; the same inputs give the same numbers.
* For a coarse image against a fine one (a VFA set against its T1w) the coarse image is taken as
  the fixed image (the metric is sampled on its few voxels) and the result is inverted, which is
  exact for a rigid transform.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, InputMultiObject, SimpleInterface,
                                    TraitedSpec, traits)

from bids_agquant.qmri import geometry as pure_geometry
from bids_agquant.qmri.qa import registration_ncc

from . import geometry as G

__all__ = ["register_rigid", "registration_quality", "register_rigid_checked",
           "RigidRegistration", "REGISTRATION_SETTINGS", "ants_registration"]

#: Every setting of the rigid registration; the transforms' ``Software`` sidecar text is made
#: from it (:func:`bids_agquant.methods.registration_software`).
REGISTRATION_SETTINGS = dict(target_spacing_mm=2.0, coarse_shrink_factors=(4, 2),
                             coarse_smoothing_sigmas_vox=(2, 1), coarse_iterations=(500, 250),
                             fine_iterations=100, convergence=1e-6, convergence_window=10,
                             samples=10000, sampling_strategy="Random", histogram_bins=32,
                             gradient_step=0.25, winsorize=(0.005, 0.995))


def ants_registration(fixed_img, moving_img, arguments) -> None:
    """Run antsRegistration of antspyx's compiled library on a full command line.

    ``arguments(fixed, moving)`` returns the command line (a list of strings) given the
    references by which the two ANTs images are named in it.

    Why the private ``ants.internal`` module: the public ``ants.registration`` (antspyx 0.6)
    writes its own command line from type presets. It hard-codes *regular* metric sampling
    (random sampling is what keeps our rigid results stable, see the module docstring), uses one
    sampling rate for every stage, has no winsorisation option and no working random seed. The
    only way to run antsRegistration in-process with our own command line is
    ``get_lib_fn("antsRegistration")`` on ``process_arguments``, with the images passed as
    ``get_pointer_string`` references. All of it stays in this one function, so that an antspyx
    release that moves these names breaks (and is fixed in) one place.
    """
    from ants.internal import (get_lib_fn, get_pointer_string,  # antspyx: heavy, loaded after
                               process_arguments)                # import_ants set one thread

    args = arguments(get_pointer_string(fixed_img), get_pointer_string(moving_img))
    code = get_lib_fn("antsRegistration")(process_arguments(args))
    if code != 0:
        raise RuntimeError(f"antsRegistration failed with exit code {code}")


def _prepared(image, affine, name, target_spacing_mm):
    """The image at ~``target_spacing_mm`` (block average, NaN/inf as 0), checked: (data, aff)."""
    # NaN/Inf voxels (counted and warned about by the input validation; NaN in the maps) carry
    # no signal for the metric: zero them here instead of failing the registration
    image = np.where(np.isfinite(image), image, 0.0)
    data, aff = pure_geometry.block_average(
        image, affine, pure_geometry.downsample_factor(affine, target_spacing_mm))
    if not np.isfinite(data).all():
        raise ValueError(f"registration: the {name} image holds NaN or inf values")
    if min(data.shape) < 4:
        raise ValueError(f"registration: the {name} image ({data.shape}) is too small "
                         f"(fewer than 4 voxels along an axis)")
    return data, aff


def _command_line(s, fixed_shape, prefix, seed, verbose):
    """``arguments(fixed, moving)`` of :func:`ants_registration` for settings ``s``."""
    # coarse levels only where the shrunk fixed image keeps >= 8 voxels per axis (small images)
    coarse = [(f, sg, it) for f, sg, it in zip(s["coarse_shrink_factors"],
                                               s["coarse_smoothing_sigmas_vox"],
                                               s["coarse_iterations"])
              if min(fixed_shape) // f >= 8]
    n_fixed = float(np.prod(fixed_shape))
    coarse_n = n_fixed / float(coarse[-1][0] ** 3) if coarse else n_fixed
    coarse_fraction = min(1.0, s["samples"] / coarse_n)
    fine_fraction = min(1.0, s["samples"] / n_fixed)
    conv = f"{s['convergence']},{s['convergence_window']}"

    def arguments(fs, ms):
        def stage(fraction, iterations, shrink, sigmas):
            return ["--transform", f"Rigid[{s['gradient_step']}]",
                    "--metric", f"Mattes[{fs},{ms},1,{s['histogram_bins']},"
                                f"{s['sampling_strategy']},{fraction:.6f}]",
                    "--convergence", f"[{'x'.join(str(i) for i in iterations)},{conv}]",
                    "--shrink-factors", "x".join(str(i) for i in shrink),
                    "--smoothing-sigmas", "x".join(str(i) for i in sigmas) + "vox"]

        return (["--dimensionality", "3", "--float", "1",
                 "--initial-moving-transform", f"[{fs},{ms},1]"]
                + (stage(coarse_fraction, [c[2] for c in coarse], [c[0] for c in coarse],
                         [c[1] for c in coarse]) if coarse else [])
                + stage(fine_fraction, (s["fine_iterations"],), (1,), (0,))
                + ["--use-histogram-matching", "0",
                   "--winsorize-image-intensities", f"[{s['winsorize'][0]},{s['winsorize'][1]}]",
                   "--collapse-output-transforms", "1",
                   "--random-seed", str(int(seed)),
                   "--output", prefix,
                   "--verbose", "1" if verbose else "0"])

    return arguments


def _register_prepared(fixed, moving, s, seed, verbose):
    """:func:`register_rigid` on images already :func:`_prepared`: ((data, affine) pairs)."""
    ants = G.import_ants(seed)
    f_img = G.to_ants(*fixed, ants)
    m_img = G.to_ants(*moving, ants)
    with tempfile.TemporaryDirectory(prefix="bids_agquant_reg_") as tmp:
        prefix = os.path.join(tmp, "reg_")
        ants_registration(f_img, m_img, _command_line(s, fixed[0].shape, prefix, seed, verbose))
        return G.read_transform(prefix + "0GenericAffine.mat")


def _quality_prepared(fixed, moving, matrix) -> float:
    """:func:`registration_quality` on images already :func:`_prepared`."""
    moved = pure_geometry.resample(moving[0], moving[1], fixed[0].shape, fixed[1], matrix,
                                   order=1, fill=np.nan)
    return registration_ncc(fixed[0], moved)


def _both_prepared(fixed, fixed_affine, moving, moving_affine, s):
    return (_prepared(fixed, fixed_affine, "fixed", s["target_spacing_mm"]),
            _prepared(moving, moving_affine, "moving", s["target_spacing_mm"]))


def register_rigid(fixed, fixed_affine, moving, moving_affine, *, seed: int = 42,
                   settings: dict | None = None, verbose: bool = False) -> np.ndarray:
    """Rigid registration of ``moving`` onto ``fixed``: 4x4 LPS matrix ``T_fixed<-moving``.

    ``fixed``/``moving`` are 3-D arrays on the grids of the RAS+ affines. The result maps fixed
    points to moving points (resampling convention), as antsRegistration's output.
    """
    s = {**REGISTRATION_SETTINGS, **(settings or {})}
    f, m = _both_prepared(fixed, fixed_affine, moving, moving_affine, s)
    return _register_prepared(f, m, s, seed, verbose)


def registration_quality(fixed, fixed_affine, moving, moving_affine, matrix, *,
                         settings: dict | None = None) -> float:
    """:func:`bids_agquant.qmri.qa.registration_ncc` of a registration's result: both images at
    the registration's own ~2 mm (:func:`_prepared`), the moving one resampled onto the fixed
    grid (linear) through ``matrix`` (T_fixed<-moving, resampling convention)."""
    s = {**REGISTRATION_SETTINGS, **(settings or {})}
    return _quality_prepared(*_both_prepared(fixed, fixed_affine, moving, moving_affine, s),
                             matrix)


def register_rigid_checked(fixed, fixed_affine, moving, moving_affine, *, seed: int = 42):
    """(:func:`register_rigid`, :func:`registration_quality` of its result), the images
    prepared once for both."""
    s = REGISTRATION_SETTINGS
    f, m = _both_prepared(fixed, fixed_affine, moving, moving_affine, s)
    matrix = _register_prepared(f, m, s, seed, False)
    return matrix, _quality_prepared(f, m, matrix)


# ----------------------------------------------------------------------------------- nipype

class _RigidInputSpec(BaseInterfaceInputSpec):
    target_file = File(exists=True, mandatory=True, desc="image defining the target space")
    source_files = InputMultiObject(File(exists=True), mandatory=True,
                                    desc="image(s) to register; several (e.g. the flip angles of "
                                         "a VFA set, one grid) are averaged first")
    source_as_fixed = traits.Bool(False, usedefault=True,
                                  desc="sample the metric on the source grid (coarse source) and "
                                       "invert the result")
    seed = traits.Int(42, usedefault=True, desc="ANTs random seed (deterministic runs)")
    resample_source = traits.Bool(False, usedefault=True,
                                  desc="also write the (averaged) source resampled onto the "
                                       "target grid (linear)")


class _RigidOutputSpec(TraitedSpec):
    transform_file = File(exists=True, desc="ITK transform target <- source (.mat)")
    resampled_file = File(desc="source resampled onto the target grid (if asked)")
    qa_file = File(exists=True, desc="JSON {registration_ncc: value} (qmri/qa.py)")


class RigidRegistration(SimpleInterface):
    """Rigid antsRegistration of a source image onto a target image."""
    input_spec = _RigidInputSpec
    output_spec = _RigidOutputSpec

    def _run_interface(self, runtime):
        target, t_aff, _ = G.load(self.inputs.target_file)
        stack, s_aff = G.load_many(list(self.inputs.source_files))
        source = stack.mean(axis=-1)
        if self.inputs.source_as_fixed:
            m, ncc = register_rigid_checked(source, s_aff, target, t_aff, seed=self.inputs.seed)
            matrix = np.linalg.inv(m)
        else:
            matrix, ncc = register_rigid_checked(target, t_aff, source, s_aff,
                                                 seed=self.inputs.seed)
        qa = Path(runtime.cwd, "registration_qa.json")
        qa.write_text(json.dumps({"registration_ncc": ncc}))
        self._results["qa_file"] = str(qa)
        out = Path(runtime.cwd, "xfm_target_from_source.mat")
        G.write_transform(matrix, out)
        self._results["transform_file"] = str(out)
        if self.inputs.resample_source:
            res = pure_geometry.resample(source, s_aff, target.shape, t_aff, matrix, order=1, fill=0.0)
            self._results["resampled_file"] = G.save_like(res, t_aff,
                                                          Path(runtime.cwd, "resampled.nii"))
        return runtime
