"""Lesion and control regions in the reference space (the nipype node around the pure parts).

``PrepareRegions`` (once per participant): labels the lesion mask on its own grid
(:func:`bids_agquant.qmri.lesions.label_lesions`), measures diameters there (the grid the mask was
drawn on, so sizes do not depend on our resampling), brings the labels into the reference space
(nearest neighbour, through the transform of the T1w it was drawn on), derives a brain mask
(:mod:`bids_agquant.qmri.masks`) and places the healthy-tissue control regions
(:func:`bids_agquant.qmri.lesions.place_control_regions`, fixed seed). The region records
(:class:`bids_agquant.qmri.regions.Regions`) are written as ``regions.json``.

:func:`region_rows` (the lesion-table rows of one post-contrast state) lives in
:mod:`bids_agquant.qmri.regions`; it is re-exported here under its old name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, InputMultiObject,
                                    SimpleInterface, TraitedSpec,
                                    isdefined, traits)

from bids_agquant.qmri import geometry as pure_geometry
from bids_agquant import methods
from bids_agquant.qmri import lesions as L
from bids_agquant.qmri.lesions import CONTROL_DIAMETER_MM, N_CONTROLS, healthy_brain
from bids_agquant.qmri.brain import TISSUE_CLASSES
from bids_agquant.qmri.masks import brain_mask_from_t1, brain_mask_from_t1w
from bids_agquant.qmri.regions import (Regions, control_region_records, lesion_regions,
                                       region_rows, se_core)

from . import geometry as G
from .brain import TEMPLATE_REGISTRATION
from .notes import node_warning, warnings_output

__all__ = ["PrepareRegions", "PreparedRegions", "prepare_regions", "region_rows", "se_core",
           "N_CONTROLS"]


class PreparedRegions(NamedTuple):
    """What :func:`prepare_regions` returns."""
    lesion_labels: np.ndarray      # lesion ids of the input, reference grid (int32)
    control_labels: np.ndarray     # control regions 1..n, reference grid (int16)
    brain: np.ndarray              # brain mask, reference grid (bool)
    regions: Regions
    affine: np.ndarray             # the reference affine
    healthy: np.ndarray            # brain parenchyma (the brain mask without tissue classes)


def _lesions_in_reference(lesion_file, lesion_kind, lesion_transform, shape, ref_aff):
    """(lesion ids on the reference grid, {id: LesionRegion}) of a lesion mask or dseg file.

    A mask on the reference grid, or on its voxels stored in another axis order (flipped or
    permuted axes, as converters differ), is read in the reference's voxel order before the
    lesions are labelled, so a binary mask's lesion ids do not depend on how it was stored."""
    data, m_aff, _ = G.load(lesion_file, dtype=np.float64)
    how = None if lesion_transform is not None else pure_geometry.reindexing(
        data.shape, m_aff, shape, ref_aff, 1e-3 * float(pure_geometry.voxel_sizes(ref_aff).min()))
    if how is not None:
        data, m_aff = np.ascontiguousarray(pure_geometry.reindexed(data, how)), ref_aff
    labelled = L.label_lesions(data, lesion_kind)
    ids = np.asarray((0,) + tuple(labelled.original_ids), dtype=np.int32)
    native = ids[labelled.labels]            # original ids on the input grid
    sizes = L.lesion_diameters(labelled.labels, m_aff)
    if how is not None:
        lesions_ref = native.astype(np.int32)
    else:
        matrix = None if lesion_transform is None else G.read_transform(lesion_transform)
        lesions_ref = pure_geometry.resample(native, m_aff, shape, ref_aff, matrix,
                                             order=0).astype(np.int32)
    return lesions_ref, lesion_regions(sizes, ids, lesions_ref, ref_aff)


def _controls(brain, lesions_ref, ref_aff, *, n, seed, diameter_mm, parenchyma=None):
    """(control labels, diameter used or None, warnings) of the control placement."""
    try:
        placed = L.place_control_regions(brain, lesions_ref, ref_aff, n=n, seed=seed,
                                         diameter_mm=diameter_mm, parenchyma=parenchyma)
    except L.ControlRegionError as exc:
        return np.zeros(brain.shape, dtype=np.int16), None, (str(exc),)
    return placed.labels, placed.diameter_mm, placed.warnings


def _brain(reference_file, ref_aff, t1_file, brain_mask_file, probseg_files):
    """(brain mask, {class: fraction map} or None, method text) of the regions."""
    if brain_mask_file:
        brain = G.load(brain_mask_file)[0] > 0.5
        tissues = None
        if probseg_files:
            tissues = {cls: G.load(f)[0] for cls, f in zip(TISSUE_CLASSES, probseg_files)}
        method = methods.brain_extraction_method(TEMPLATE_REGISTRATION, from_t1=bool(t1_file))
        return brain, tissues, method
    if t1_file:
        brain = brain_mask_from_t1(G.load(t1_file)[0], ref_aff)
    else:
        brain = brain_mask_from_t1w(G.load(reference_file)[0], ref_aff)
    return brain, None, methods.brain_mask_method(from_t1=bool(t1_file))


def prepare_regions(*, reference_file, lesion_file=None, lesion_kind="mask",
                    lesion_transform=None, t1_file=None, seed=0, n_controls=N_CONTROLS,
                    control_diameter_mm=CONTROL_DIAMETER_MM, brain_mask_file=None,
                    probseg_files=None, prior_parenchyma_file=None) -> PreparedRegions:
    """Load the images, compute everything region-related (see the module docstring).

    The lesion labels hold the lesion ids of the input (dseg labels, or component numbers of a
    mask); the :class:`~bids_agquant.qmri.regions.Regions` record holds per lesion id its sizes
    (input grid) and reference-space centroid, per control its volume, centroid and tissue
    composition (and the sphere diameter used), and how the brain mask was made. With the
    brain extraction's mask and tissue probabilities (``brain_mask_file``, ``probseg_files``)
    the controls lie in parenchyma (by the classes and by the registered template's priors,
    ``prior_parenchyma_file``) and the healthy brain is parenchyma; without them the
    rough T1-window mask of :mod:`bids_agquant.qmri.masks` is used.
    """
    ref_img = G.load_header(reference_file)
    shape, ref_aff = ref_img.shape[:3], ref_img.affine.astype(np.float64)
    lesions_ref, lesions = np.zeros(shape, dtype=np.int32), {}
    if lesion_file:
        lesions_ref, lesions = _lesions_in_reference(lesion_file, lesion_kind, lesion_transform,
                                                     shape, ref_aff)
    brain, tissues, method = _brain(reference_file, ref_aff, t1_file, brain_mask_file,
                                    probseg_files)
    parenchyma = None if tissues is None else tissues["GM"] + tissues["WM"]
    estimates = None if parenchyma is None else (
        (parenchyma,) + ((G.load(prior_parenchyma_file)[0],) if prior_parenchyma_file else ()))
    controls, used, messages = _controls(brain, lesions_ref, ref_aff, n=n_controls, seed=seed,
                                         diameter_mm=control_diameter_mm, parenchyma=estimates)
    regions = Regions(lesions=lesions,
                      controls=control_region_records(controls, ref_aff, tissues),
                      brain_mask_method=method, control_warnings=tuple(messages),
                      lesion_source=str(lesion_file) if lesion_file else None,
                      control_diameter_mm=used)
    healthy = brain if parenchyma is None else brain & (parenchyma > 0.5)
    return PreparedRegions(lesions_ref, controls, brain, regions, ref_aff, healthy)


class _PrepareInputSpec(BaseInterfaceInputSpec):
    reference_file = File(exists=True, mandatory=True, desc="reference T1w (grid)")
    lesion_file = File(exists=True, desc="lesion mask or dseg (input derivatives)")
    lesion_kind = traits.Enum("mask", "dseg", usedefault=True)
    lesion_transform = File(exists=True, desc="T_ref<-drawn_on transform (.mat); absent: the mask "
                                              "is on the reference grid or world-aligned")
    t1_file = File(exists=True, desc="baseline pre-contrast T1 map in the reference space")
    brain_mask_file = File(exists=True, desc="brain mask of the brain extraction (reference)")
    probseg_files = InputMultiObject(File(exists=True), desc="GM, WM, CSF probabilities "
                                                             "(reference space, that order)")
    prior_parenchyma_file = File(exists=True, desc="registered template GM + WM prior")
    seed = traits.Int(0, usedefault=True, desc="control-region placement seed")
    control_diameter_mm = traits.Float(CONTROL_DIAMETER_MM, usedefault=True,
                                       desc="control sphere diameter wanted (mm)")


class _PrepareOutputSpec(TraitedSpec):
    lesion_labels_file = File(exists=True, desc="lesion ids, reference space (int32)")
    control_labels_file = File(exists=True, desc="control regions 1..n, reference space (int16)")
    brain_mask_file = File(exists=True, desc="brain mask, reference space (uint8)")
    healthy_mask_file = File(exists=True, desc="brain >= 10 mm from every lesion (uint8)")
    regions_file = File(exists=True, desc="JSON: sizes, centroids, methods")
    warnings = warnings_output()


class PrepareRegions(SimpleInterface):
    input_spec = _PrepareInputSpec
    output_spec = _PrepareOutputSpec

    def _run_interface(self, runtime):
        opt = lambda name: getattr(self.inputs, name) if isdefined(getattr(self.inputs, name)) \
            else None  # noqa: E731
        lesions, controls, brain, regions, aff, healthy = prepare_regions(
            reference_file=self.inputs.reference_file, lesion_file=opt("lesion_file"),
            lesion_kind=self.inputs.lesion_kind, lesion_transform=opt("lesion_transform"),
            t1_file=opt("t1_file"), seed=self.inputs.seed,
            control_diameter_mm=self.inputs.control_diameter_mm,
            brain_mask_file=opt("brain_mask_file"), probseg_files=opt("probseg_files"),
            prior_parenchyma_file=opt("prior_parenchyma_file"))
        for message in regions.control_warnings:
            node_warning(self._results, "bids_agquant.regions",
                         f"{Path(self.inputs.reference_file).name}: {message}")
        cwd = Path(runtime.cwd)
        self._results["lesion_labels_file"] = G.save_like(lesions, aff, cwd / "lesions.nii",
                                                          dtype=np.int32)
        self._results["control_labels_file"] = G.save_like(controls, aff, cwd / "controls.nii",
                                                           dtype=np.int16)
        self._results["brain_mask_file"] = G.save_like(brain, aff, cwd / "brain.nii",
                                                       dtype=np.uint8)
        self._results["healthy_mask_file"] = G.save_like(
            healthy_brain(healthy, lesions, aff), aff, cwd / "healthy.nii", dtype=np.uint8)
        out = cwd / "regions.json"
        out.write_text(json.dumps(regions.to_dict(), indent=1))
        self._results["regions_file"] = str(out)
        return runtime
