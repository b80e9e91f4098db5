"""Regions of a participant (lesions, controls) and the lesion-table statistics of one state.

Pure numpy/scipy, no I/O.  The records here are what crosses from the region node to the
quantification and table nodes (``regions.json`` on disk is :meth:`Regions.to_dict`, key for
key, so the file reads as before):

* :class:`LesionRegion`, :class:`ControlRegion`, :class:`Regions` -- sizes and centroids;
* :class:`StateMaps` -- the reference-space maps of one post-contrast state;
* :func:`region_rows` -- one lesion-table row per lesion and control of that state.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import numpy as np
from scipy import ndimage

from bids_agquant.qmri import geometry as G
from bids_agquant.qmri.concentration import concentration_mM, mg_per_L_from_mM
from bids_agquant.qmri.enhancement import roi_signal_enhancement_percent
from bids_agquant.qmri.lesions import roi_stats
from bids_agquant.qmri import uncertainty as U

__all__ = ["LesionRegion", "ControlRegion", "Regions", "StateMaps", "lesion_regions",
           "TISSUE_FRACTION_COLUMNS",
           "control_region_records", "region_rows", "se_core", "label_boxes",
           "SE_CORE_EROSION_VOXELS", "SE_CORE_MIN_VOXELS"]

#: SE statistics use the region eroded by this many voxels (its core) when the core keeps at
#: least ``SE_CORE_MIN_VOXELS`` voxels; otherwise the whole region.
SE_CORE_EROSION_VOXELS = 1
SE_CORE_MIN_VOXELS = 8

_NAN3 = (float("nan"),) * 3


# --------------------------------------------------------------------------- records

@dataclass(frozen=True)
class LesionRegion:
    """One lesion: sizes on its input grid, voxel count and centroid in the reference space."""
    longest_diameter_mm: float | None
    longest_3d_diameter_mm: float | None
    measurable: bool | None
    volume_mm3: float | None
    n_voxels_input_grid: int | None
    n_voxels: int
    centroid_mm: tuple = _NAN3

    def to_dict(self) -> dict:
        return {f.name: (list(self.centroid_mm) if f.name == "centroid_mm"
                         else getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LesionRegion":
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name != "centroid_mm"},
                   centroid_mm=tuple(d.get("centroid_mm") or _NAN3))


@dataclass(frozen=True)
class ControlRegion:
    """One healthy-tissue control region: volume, voxel count, centroid (reference space)."""
    volume_mm3: float | None
    n_voxels: int
    centroid_mm: tuple = _NAN3
    tissue_fractions: Mapping | None = None      # {"GM": .., "WM": .., "CSF": ..} mean probability

    def to_dict(self) -> dict:
        out = {"volume_mm3": self.volume_mm3, "n_voxels": self.n_voxels,
               "centroid_mm": list(self.centroid_mm)}
        if self.tissue_fractions is not None:
            out["tissue_fractions"] = dict(self.tissue_fractions)
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "ControlRegion":
        return cls(d.get("volume_mm3"), d.get("n_voxels"),
                   tuple(d.get("centroid_mm") or _NAN3), d.get("tissue_fractions"))


@dataclass(frozen=True)
class Regions:
    """Every region of a participant (``regions.json``).

    ``lesions`` maps the lesion id (the input's label, as a string) and ``controls`` the control
    number (``"1"``...) to their records, in id order. ``control_diameter_mm`` is None when no
    control region fitted (``control_warnings`` then says why).
    """
    lesions: dict = field(default_factory=dict)
    controls: dict = field(default_factory=dict)
    brain_mask_method: str | None = None
    control_warnings: tuple = ()
    lesion_source: str | None = None
    control_diameter_mm: float | None = None

    def to_dict(self) -> dict:
        """The JSON-able dict of ``regions.json`` (keys in their historical order)."""
        out = {"lesions": {k: v.to_dict() for k, v in self.lesions.items()},
               "controls": {k: v.to_dict() for k, v in self.controls.items()}}
        if self.lesion_source is not None:
            out["lesion_source"] = self.lesion_source
        if self.brain_mask_method is not None:
            out["brain_mask_method"] = self.brain_mask_method
        if self.control_diameter_mm is not None:
            out["control_diameter_mm"] = self.control_diameter_mm
        out["control_warnings"] = list(self.control_warnings)
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "Regions":
        return cls(
            lesions={str(k): LesionRegion.from_dict(v) for k, v in d.get("lesions", {}).items()},
            controls={str(k): ControlRegion.from_dict(v)
                      for k, v in d.get("controls", {}).items()},
            brain_mask_method=d.get("brain_mask_method"),
            control_warnings=tuple(d.get("control_warnings", ())),
            lesion_source=d.get("lesion_source"),
            control_diameter_mm=d.get("control_diameter_mm"))

    @classmethod
    def coerce(cls, value) -> "Regions":
        """``value`` itself if a :class:`Regions`, else :meth:`from_dict` of the mapping."""
        return value if isinstance(value, cls) else cls.from_dict(value)


@dataclass(frozen=True, eq=False)
class StateMaps:
    """Reference-space maps of one post-contrast state (each may be None: its columns n/a).

    ``t1_pre``, ``t1_post`` (s), ``delta_r1`` (1/s), ``conc`` (mM of Gd), ``se`` (voxel SE %),
    ``t1w_pre``, ``t1w_post`` (signals; the post-contrast one already intensity-scaled).
    """
    t1_pre: np.ndarray | None = None
    t1_post: np.ndarray | None = None
    delta_r1: np.ndarray | None = None
    conc: np.ndarray | None = None
    se: np.ndarray | None = None
    t1w_pre: np.ndarray | None = None
    t1w_post: np.ndarray | None = None

    @classmethod
    def coerce(cls, value) -> "StateMaps":
        """``value`` itself if a :class:`StateMaps`, else one built from a name -> array map."""
        return value if isinstance(value, cls) else cls(**dict(value))

    def cropped(self, box) -> "StateMaps":
        """The maps restricted to a bounding box (tuple of slices)."""
        return StateMaps(**{f.name: (None if getattr(self, f.name) is None
                                     else getattr(self, f.name)[box]) for f in fields(self)})


# --------------------------------------------------------------------------- region records

def lesion_regions(sizes: Mapping, ids, lesions_ref, ref_affine) -> dict:
    """{lesion id (str): :class:`LesionRegion`} of labelled lesions.

    ``sizes``: ``{label k: LesionSize}`` measured on the input grid
    (:func:`bids_agquant.qmri.lesions.lesion_diameters`); ``ids[k]`` the input's id of label
    ``k`` (``ids[0] = 0``); ``lesions_ref``: the input ids on the reference grid.
    """
    out = {}
    for k, size in sizes.items():
        lid = int(ids[k])
        roi = lesions_ref == lid
        out[str(lid)] = LesionRegion(
            longest_diameter_mm=size.longest_axial_mm, longest_3d_diameter_mm=size.longest_3d_mm,
            measurable=bool(size.measurable), volume_mm3=size.volume_mm3,
            n_voxels_input_grid=size.n_voxels, n_voxels=int(roi.sum()),
            centroid_mm=tuple(G.centroid_world(roi, ref_affine)))
    return out


#: Tissue-fraction columns of the lesion table: (column, tissue class of the probability maps).
TISSUE_FRACTION_COLUMNS = (("gm_fraction", "GM"), ("wm_fraction", "WM"),
                           ("csf_fraction", "CSF"))


def control_region_records(controls, ref_affine, tissues: Mapping | None = None) -> dict:
    """{control number (str): :class:`ControlRegion`} of a control label image 1..n;
    ``tissues`` ({class: probability map}) gives each region's mean tissue composition."""
    vox = G.voxel_volume_mm3(ref_affine)
    out = {}
    for k in range(1, int(controls.max()) + 1):
        roi = controls == k
        fractions = None
        if tissues is not None and roi.any():
            fractions = {cls: float(np.mean(np.asarray(p)[roi])) for cls, p in tissues.items()}
        out[str(k)] = ControlRegion(volume_mm3=float(roi.sum()) * vox, n_voxels=int(roi.sum()),
                                    centroid_mm=tuple(G.centroid_world(roi, ref_affine)),
                                    tissue_fractions=fractions)
    return out


# --------------------------------------------------------------------------- statistics

def label_boxes(labels) -> dict:
    """{label: slices of its bounding box padded by one voxel} for every non-zero label."""
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
    core = ndimage.binary_erosion(roi, iterations=SE_CORE_EROSION_VOXELS)
    return core if int(core.sum()) >= SE_CORE_MIN_VOXELS else roi


def _region_list(regions: Regions, lesion_labels, control_labels):
    """(kind, lesion_id, label image, label value, box or None, record) of every region."""
    out = []
    lesion_boxes = label_boxes(lesion_labels)
    for lid, meta in sorted(regions.lesions.items(), key=lambda kv: int(kv[0])):
        out.append(("lesion", str(lid), lesion_labels, int(lid), lesion_boxes.get(int(lid)), meta))
    control_boxes = label_boxes(control_labels)
    for k, meta in sorted(regions.controls.items(), key=lambda kv: int(kv[0])):
        out.append(("control", f"control-{k}", control_labels, int(k),
                    control_boxes.get(int(k)), meta))
    return out


def _identity_columns(row: dict, kind: str, lid: str, meta, relaxivity) -> None:
    row.update(lesion_id=lid, region_type=kind, volume_mm3=meta.volume_mm3)
    if kind == "lesion":
        row["longest_diameter_mm"] = meta.longest_diameter_mm
        row["longest_3d_diameter_mm"] = meta.longest_3d_diameter_mm
        row["measurable"] = meta.measurable
    row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"] = meta.centroid_mm
    fractions = getattr(meta, "tissue_fractions", None)
    if fractions:
        for column, cls in TISSUE_FRACTION_COLUMNS:
            row[column] = fractions.get(cls)
    if relaxivity is not None:
        row["r1_per_mM_s"] = relaxivity.r1_per_mM_s
        row["field_strength_t"] = relaxivity.field_strength_t
        row["mg_per_L_per_mM"] = relaxivity.mg_per_L_per_mM_gd
    row["n_voxels"] = 0


def _interval(row: dict, prefix: str, unit: str, mean, se) -> None:
    """``<prefix>_stderr_<unit>`` and the 95 % interval ``<prefix>_ci_low/high_<unit>``."""
    row[f"{prefix}_stderr_{unit}"] = se
    row[f"{prefix}_ci_low_{unit}"] = mean - U.Z_95 * se
    row[f"{prefix}_ci_high_{unit}"] = mean + U.Z_95 * se


def _voxels(mask, origin) -> np.ndarray:
    """(k, 3) reference-grid indices of a cropped mask whose box starts at ``origin``."""
    return np.argwhere(mask) + np.asarray(origin)


def _uncertainty_columns(row: dict, roi, core, maps: StateMaps, noise, origin,
                         relaxivity) -> None:
    """Standard errors and 95 % intervals of the region's means (:mod:`.uncertainty`)."""
    if maps.t1w_pre is not None and maps.t1w_post is not None and "se_mean_percent" in row:
        sel = core & np.isfinite(maps.t1w_post) & np.isfinite(maps.t1w_pre)
        se_se = noise.se_percent_se(row["se_mean_percent"], _voxels(sel, origin))
        _interval(row, "se", "percent", row["se_mean_percent"], se_se)
    if maps.delta_r1 is not None:
        d_se = noise.delta_r1_se(_voxels(roi & np.isfinite(maps.delta_r1), origin))
        _interval(row, "delta_r1", "per_s", row["delta_r1_mean_per_s"], d_se)
        if maps.conc is not None and relaxivity is not None:
            c_se = float(concentration_mM(d_se, relaxivity))
            _interval(row, "conc", "mM", row["conc_mean_mM"], c_se)
            row["conc_stderr_mg_per_L"] = mg_per_L_from_mM(c_se, relaxivity)


def _statistics_columns(row: dict, roi, maps: StateMaps, relaxivity, noise=None,
                        origin=(0, 0, 0)) -> None:
    """Columns of the map statistics of one region (``maps`` cropped to the region's box, which
    starts at voxel ``origin`` of the reference grid)."""
    row["n_voxels"] = int(roi.sum())
    core = se_core(roi)
    if maps.se is not None:
        se = roi_stats(maps.se, core)
        row.update(se_sd_percent=se.sd, se_median_percent=se.median,
                   se_voxel_mean_percent=se.mean, n_voxels_se=int(core.sum()))
    if maps.t1w_pre is not None and maps.t1w_post is not None:
        row["se_mean_percent"] = roi_signal_enhancement_percent(maps.t1w_post, maps.t1w_pre, core)
    for arr, col in ((maps.t1_pre, "t1_pre_mean_s"), (maps.t1_post, "t1_post_mean_s")):
        if arr is not None:
            row[col] = roi_stats(arr, roi).mean
    if maps.delta_r1 is not None:
        d = roi_stats(maps.delta_r1, roi)
        row["delta_r1_mean_per_s"], row["delta_r1_sd_per_s"] = d.mean, d.sd
    if maps.conc is not None:
        cs = roi_stats(maps.conc, roi)
        row.update(conc_mean_mM=cs.mean, conc_sd_mM=cs.sd, conc_median_mM=cs.median,
                   n_voxels_conc=cs.n)
        if relaxivity is not None:
            row["conc_mean_mg_per_L"] = mg_per_L_from_mM(cs.mean, relaxivity)
            row["conc_sd_mg_per_L"] = mg_per_L_from_mM(cs.sd, relaxivity)
    if noise is not None:
        _uncertainty_columns(row, roi, core, maps, noise, origin, relaxivity)


def _detection_columns(rows: list[dict], relaxivity) -> None:
    """Limits of detection and quantification of every row's mean concentration, with the
    between-session term of this state's control regions (:func:`.uncertainty.detection_limits`)."""
    controls = [r for r in rows if r.get("region_type") == "control"]
    tau2 = U.between_session_variance([r.get("conc_mean_mM", np.nan) for r in controls],
                                      [r.get("conc_stderr_mM", np.nan) for r in controls])
    for row in rows:
        if "conc_stderr_mM" not in row:
            continue
        lim = U.detection_limits(row.get("conc_mean_mM", np.nan), row["conc_stderr_mM"], tau2)
        row.update(conc_between_session_sd_mM=float(np.sqrt(tau2)), conc_lod_mM=lim.lod,
                   conc_loq_mM=lim.loq, conc_detected=lim.detected,
                   conc_quantifiable=lim.quantifiable)
        if relaxivity is not None:
            row["conc_lod_mg_per_L"] = mg_per_L_from_mM(lim.lod, relaxivity)


def region_rows(*, regions, lesion_labels, control_labels, maps, base: dict,
                relaxivity=None, noise=None) -> list[dict]:
    """Lesion-table rows (one per lesion, then one per control) of one post-contrast state.

    ``regions``: :class:`Regions` (or its dict); ``maps``: :class:`StateMaps` (or a name ->
    array mapping; a missing map leaves its columns n/a); ``base`` holds the identifying columns
    (participant_id, ...). ``relaxivity`` is the
    :class:`~bids_agquant.qmri.relaxivity.Relaxivity` used (or None). Concentration, delta R1
    and T1 statistics use the whole region; SE statistics its core (:func:`se_core`).
    ``noise``: the :class:`~bids_agquant.qmri.uncertainty.StateNoise` of the state (None: no
    standard errors, intervals or detection limits).
    """
    regions = Regions.coerce(regions)
    maps = StateMaps.coerce(maps)
    rows = []
    for kind, lid, labels, value, box, meta in _region_list(regions, lesion_labels,
                                                             control_labels):
        row = dict(base)
        _identity_columns(row, kind, lid, meta, relaxivity)
        if box is not None:             # else the region vanished in the reference space
            _statistics_columns(row, labels[box] == value, maps.cropped(box), relaxivity,
                                noise, [sl.start for sl in box])
        rows.append(row)
    if noise is not None:
        _detection_columns(rows, relaxivity)
    return rows
