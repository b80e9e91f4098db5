"""Lesion and control regions in the reference space, and per-region statistics rows.

``PrepareRegions`` (once per participant): labels the lesion mask on its own grid
(:func:`bids_agquant.qmri.lesions.label_lesions`), measures diameters there (the grid the mask was
drawn on, so sizes do not depend on our resampling), brings the labels into the reference space
(nearest neighbour, through the transform of the T1w it was drawn on), derives a brain mask
(:mod:`bids_agquant.interfaces.masks`) and places the healthy-tissue control regions
(:func:`bids_agquant.qmri.lesions.control_regions`, fixed seed).

:func:`region_rows` computes the lesion-table rows of one post-contrast state from maps already
in the reference space (used by :class:`bids_agquant.interfaces.quantify.QuantifyPostContrast`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec,
                                    isdefined, traits)

from . import geometry as G
from bids_agquant.qmri.lesions import CONTROL_DIAMETER_MM, healthy_brain

from .masks import brain_mask_from_t1, brain_mask_from_t1w
from .notes import node_warning, warnings_output

__all__ = ["PrepareRegions", "prepare_regions", "region_rows", "N_CONTROLS"]

N_CONTROLS = 3


def _centroid_world(mask, affine):
    idx = np.argwhere(mask)
    if idx.size == 0:
        return [float("nan")] * 3
    c = idx.mean(axis=0)
    return [float(v) for v in affine[:3, :3] @ c + affine[:3, 3]]


def prepare_regions(*, reference_file, lesion_file=None, lesion_kind="mask",
                    lesion_transform=None, t1_file=None, seed=0, n_controls=N_CONTROLS,
                    control_diameter_mm=CONTROL_DIAMETER_MM):
    """Compute everything region-related. Returns (lesions_ref, controls_ref, brain, info, aff).

    ``lesions_ref`` holds the lesion ids of the input (dseg labels, or component numbers of a
    mask); ``info`` is a JSON-able dict: per lesion id its sizes (input grid) and reference-space
    centroid, per control its volume and centroid (and ``control_diameter_mm``, the sphere size
    used), and how the brain mask was made.
    """
    from bids_agquant.qmri import lesions as L

    ref_img = _nib_load(reference_file)
    shape, ref_aff = ref_img.shape[:3], ref_img.affine.astype(np.float64)
    info = {"lesions": {}, "controls": {}}

    lesions_ref = np.zeros(shape, dtype=np.int32)
    if lesion_file:
        data, m_aff, _ = G.load(lesion_file, dtype=np.float64)
        labelled = L.label_lesions(data, lesion_kind)
        ids = np.asarray((0,) + tuple(labelled.original_ids), dtype=np.int32)
        native = ids[labelled.labels]            # original ids on the input grid
        sizes = L.lesion_diameters(labelled.labels, m_aff)
        same_grid = (tuple(data.shape) == tuple(shape) and np.allclose(m_aff, ref_aff, atol=1e-3)
                     and lesion_transform is None)
        if same_grid:
            lesions_ref = native.astype(np.int32)
        else:
            matrix = None if lesion_transform is None else G.read_transform(lesion_transform)
            lesions_ref = G.resample(native, m_aff, shape, ref_aff, matrix, order=0).astype(np.int32)
        for k, size in sizes.items():
            lid = int(ids[k])
            roi = lesions_ref == lid
            info["lesions"][str(lid)] = {
                "longest_diameter_mm": size.longest_axial_mm,
                "longest_3d_diameter_mm": size.longest_3d_mm,
                "measurable": bool(size.measurable),
                "volume_mm3": size.volume_mm3,
                "n_voxels_input_grid": size.n_voxels,
                "n_voxels": int(roi.sum()),
                "centroid_mm": _centroid_world(roi, ref_aff),
            }
        info["lesion_source"] = str(lesion_file)

    if t1_file:
        t1, _, _ = G.load(t1_file)
        brain = brain_mask_from_t1(t1, ref_aff)
        info["brain_mask_method"] = ("baseline pre-contrast T1 within 0.5-2.2 s, opened and "
                                     "closed with a 3 mm ball, largest component")
    else:
        t1w, _, _ = G.load(reference_file)
        brain = brain_mask_from_t1w(t1w, ref_aff)
        info["brain_mask_method"] = ("reference T1w above its Otsu threshold, largest component, "
                                     "eroded by 10 mm (no baseline T1 map)")

    controls = np.zeros(shape, dtype=np.int16)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            controls, used = L.control_regions(brain, lesions_ref, ref_aff, n=n_controls,
                                               seed=seed, diameter_mm=control_diameter_mm,
                                               return_diameter=True)
        info["control_diameter_mm"] = used
        info["control_warnings"] = [str(w.message) for w in caught]
    except L.ControlRegionError as exc:
        info["control_warnings"] = [str(exc)]
    vox = float(abs(np.linalg.det(ref_aff[:3, :3])))
    for k in range(1, int(controls.max()) + 1):
        roi = controls == k
        info["controls"][str(k)] = {"volume_mm3": float(roi.sum()) * vox, "n_voxels": int(roi.sum()),
                                    "centroid_mm": _centroid_world(roi, ref_aff)}
    return lesions_ref, controls, brain, info, ref_aff


class _PrepareInputSpec(BaseInterfaceInputSpec):
    reference_file = File(exists=True, mandatory=True, desc="reference T1w (grid)")
    lesion_file = File(exists=True, desc="lesion mask or dseg (input derivatives)")
    lesion_kind = traits.Enum("mask", "dseg", usedefault=True)
    lesion_transform = File(exists=True, desc="T_ref<-drawn_on transform (.mat); absent: the mask "
                                              "is on the reference grid or world-aligned")
    t1_file = File(exists=True, desc="baseline pre-contrast T1 map in the reference space")
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
        lesions, controls, brain, info, aff = prepare_regions(
            reference_file=self.inputs.reference_file, lesion_file=opt("lesion_file"),
            lesion_kind=self.inputs.lesion_kind, lesion_transform=opt("lesion_transform"),
            t1_file=opt("t1_file"), seed=self.inputs.seed,
            control_diameter_mm=self.inputs.control_diameter_mm)
        for message in info.get("control_warnings", ()):
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
            healthy_brain(brain, lesions, aff), aff, cwd / "healthy.nii", dtype=np.uint8)
        out = cwd / "regions.json"
        out.write_text(json.dumps(info, indent=1))
        self._results["regions_file"] = str(out)
        return runtime


def _nib_load(path):
    import nibabel as nib

    return nib.load(str(path))


#: SE statistics use the region eroded by this many voxels (its core) when the core keeps at
#: least ``SE_CORE_MIN_VOXELS`` voxels; otherwise the whole region.
SE_CORE_EROSION_VOXELS = 1
SE_CORE_MIN_VOXELS = 8


def _boxes(labels) -> dict:
    """{label: slices of its bounding box padded by one voxel} for every non-zero label."""
    from scipy import ndimage

    out = {}
    labels = np.asarray(labels)
    if labels.max(initial=0) <= 0:
        return out
    for k, slc in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
        if slc is not None:
            out[k] = tuple(slice(max(sl.start - 1, 0), min(sl.stop + 1, n))
                           for sl, n in zip(slc, labels.shape))
    return out


def se_core(roi):
    """The ROI eroded by one voxel (6-connectivity) if that leaves enough voxels, else the ROI.

    Why: the T1w resolution is fine enough that the rim voxels of a lesion mask mix lesion and
    non-enhancing tissue (partial volume); their SE dilutes the lesion mean by 5-20 % for
    10-20 mm lesions at 1 mm (phantom). The core gives the SE of the lesion tissue, as an ROI
    drawn inside the lesion does.
    """
    from scipy import ndimage

    core = ndimage.binary_erosion(roi, iterations=SE_CORE_EROSION_VOXELS)
    return core if int(core.sum()) >= SE_CORE_MIN_VOXELS else roi


def region_rows(*, regions: dict, lesion_labels, control_labels, maps: dict, base: dict,
                relaxivity=None) -> list[dict]:
    """Lesion-table rows (one per lesion, then one per control) of one post-contrast state.

    ``maps`` may hold (reference-space arrays, any may be missing -> n/a): ``t1_pre``,
    ``t1_post`` (s), ``delta_r1`` (1/s), ``conc`` (mM), ``se`` (voxel SE %), ``t1w_pre``,
    ``t1w_post`` (signals). ``base`` holds the identifying columns (participant_id, ...).
    ``relaxivity`` is the :class:`~bids_agquant.qmri.relaxivity.Relaxivity` used (or None).
    Concentration, delta R1 and T1 statistics use the whole region; SE statistics its core
    (:func:`se_core`).
    """
    from bids_agquant.qmri.concentration import mg_per_L_from_mM
    from bids_agquant.qmri.enhancement import roi_signal_enhancement_percent
    from bids_agquant.qmri.lesions import roi_stats

    nan = float("nan")
    regions_list = []
    lesion_boxes = _boxes(lesion_labels)
    for lid, meta in sorted(regions.get("lesions", {}).items(), key=lambda kv: int(kv[0])):
        box = lesion_boxes.get(int(lid))
        regions_list.append(("lesion", str(lid), lesion_labels, int(lid), box, meta))
    control_boxes = _boxes(control_labels)
    for k, meta in sorted(regions.get("controls", {}).items(), key=lambda kv: int(kv[0])):
        regions_list.append(("control", f"control-{k}", control_labels, int(k),
                             control_boxes.get(int(k)), meta))

    factor = relaxivity.mg_per_L_per_mM_gd if relaxivity is not None else nan
    rows = []
    for kind, lid, labels, value, box, meta in regions_list:
        row = dict(base)
        row.update(lesion_id=lid, region_type=kind, volume_mm3=meta.get("volume_mm3"))
        if kind == "lesion":
            row["longest_diameter_mm"] = meta.get("longest_diameter_mm")
            row["longest_3d_diameter_mm"] = meta.get("longest_3d_diameter_mm")
            row["measurable"] = meta.get("measurable")
        c = meta.get("centroid_mm") or [nan] * 3
        row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"] = c
        if relaxivity is not None:
            row["r1_per_mM_s"] = relaxivity.r1_per_mM_s
            row["field_strength_t"] = relaxivity.field_strength_t
            row["mg_per_L_per_mM"] = factor
        row["n_voxels"] = 0
        if box is None:             # the region vanished in the reference space
            rows.append(row)
            continue
        roi = labels[box] == value
        row["n_voxels"] = int(roi.sum())

        def crop(name):
            arr = maps.get(name)
            return None if arr is None else arr[box]

        core = se_core(roi)
        if crop("se") is not None:
            se = roi_stats(crop("se"), core)
            row.update(se_sd_percent=se.sd, se_median_percent=se.median,
                       se_voxel_mean_percent=se.mean, n_voxels_se=int(core.sum()))
        if crop("t1w_pre") is not None and crop("t1w_post") is not None:
            row["se_mean_percent"] = roi_signal_enhancement_percent(crop("t1w_post"),
                                                                   crop("t1w_pre"), core)
        for name, col in (("t1_pre", "t1_pre_mean_s"), ("t1_post", "t1_post_mean_s")):
            if crop(name) is not None:
                row[col] = roi_stats(crop(name), roi).mean
        if crop("delta_r1") is not None:
            d = roi_stats(crop("delta_r1"), roi)
            row["delta_r1_mean_per_s"], row["delta_r1_sd_per_s"] = d.mean, d.sd
        if crop("conc") is not None:
            cs = roi_stats(crop("conc"), roi)
            row.update(conc_mean_mM=cs.mean, conc_sd_mM=cs.sd, conc_median_mM=cs.median,
                       n_voxels_conc=cs.n)
            if relaxivity is not None:
                row["conc_mean_mg_per_L"] = mg_per_L_from_mM(cs.mean, relaxivity)
                row["conc_sd_mg_per_L"] = mg_per_L_from_mM(cs.sd, relaxivity)
        rows.append(row)
    return rows
