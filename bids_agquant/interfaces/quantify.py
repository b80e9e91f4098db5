"""Post-contrast quantification in the reference space: delta R1, [Gd], SE, and region rows.

Load -> call -> save: loads reference-space maps, calls
:func:`bids_agquant.qmri.postcontrast.state_maps` and
:func:`bids_agquant.qmri.regions.region_rows`, saves the maps and the rows (JSON) for the
lesion table.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec,
                                    isdefined, traits)

from bids_agquant.bids.tables import json_safe
from bids_agquant.qmri.enhancement import MIN_SCALE_VOXELS
from bids_agquant.qmri import geometry as pure_geometry
from bids_agquant.qmri import uncertainty as U
from bids_agquant.qmri.masks import signal_mask
from bids_agquant.qmri.postcontrast import scale_to_pre, state_maps
from bids_agquant.qmri.regions import Regions, region_rows
from bids_agquant.qmri.relaxivity import get_relaxivity

from . import geometry as G
from .notes import node_warning, warnings_output

__all__ = ["QuantifyPostContrast"]


class _QuantInputSpec(BaseInterfaceInputSpec):
    r1_post = File(exists=True, desc="post-contrast R1 (1/s), reference space")
    r1_pre = File(exists=True, desc="pre-contrast R1 (1/s), reference space")
    t1w_post = File(exists=True, desc="post-contrast T1w, reference space")
    t1w_pre = File(exists=True, desc="pre-contrast T1w, reference space")
    t1w_post_factor = traits.Float(desc="multiply the post-contrast T1w by this to get precise "
                                        "values (Philips display values, bids/scaling.py)")
    t1w_pre_factor = traits.Float(desc="the same for the pre-contrast T1w")
    agent = traits.Str(mandatory=True, desc="contrast agent (registry name or label)")
    field_strength_t = traits.Either(None, traits.Float, usedefault=True)
    relaxivity_overrides = traits.Dict(usedefault=True, desc="agent label -> r1 1/(mM s)")
    lesion_labels_file = File(exists=True)
    control_labels_file = File(exists=True)
    regions_file = File(exists=True)
    row_base = traits.Dict(usedefault=True, desc="identifying columns of this state's rows")
    se_normalization = traits.Enum("off", "brain", usedefault=True,
                                   desc="'brain': divide the post-contrast T1w by its scale over "
                                        "the pre-contrast one in healthy brain before SE")
    healthy_mask_file = File(exists=True, desc="healthy brain, reference space (for 'brain'; "
                                               ":func:`bids_agquant.qmri.lesions.healthy_brain`)")
    r1_post_var = File(exists=True, desc="variance of the post-contrast R1, native VFA grid")
    r1_post_transform = File(exists=True, desc="T_ref<-VFA of the post-contrast VFA set")
    r1_pre_var = File(exists=True, desc="variance of the pre-contrast R1, native VFA grid")
    r1_pre_transform = File(exists=True, desc="T_ref<-VFA of the pre-contrast VFA set")
    t1w_post_native = File(exists=True, desc="the post-contrast T1w as acquired (its noise)")
    t1w_post_transform = File(exists=True, desc="T_ref<-T1w (unset: the reference T1w itself)")
    t1w_pre_native = File(exists=True, desc="the pre-contrast T1w as acquired (its noise)")
    t1w_pre_transform = File(exists=True, desc="T_ref<-T1w (unset: the reference T1w itself)")


class _QuantOutputSpec(TraitedSpec):
    delta_r1_file = File(desc="delta R1 (1/s)")
    conc_file = File(desc="[Gd] (mM)")
    se_file = File(desc="signal enhancement (%)")
    rows_file = File(exists=True, desc="JSON list of lesion-table rows")
    relaxivity = traits.Dict(desc="relaxivity used (for the sidecars)")
    warnings = warnings_output()


class QuantifyPostContrast(SimpleInterface):
    input_spec = _QuantInputSpec
    output_spec = _QuantOutputSpec

    def _load(self, name):
        """(data, affine) of an optional input image, (None, None) when unset."""
        value = getattr(self.inputs, name)
        if not isdefined(value):
            return None, None
        data, aff, _ = G.load(value)
        factor = getattr(self.inputs, f"{name}_factor", None)
        if factor is not None and isdefined(factor):
            data = (data * np.float64(factor)).astype(np.float32)
        return data, aff

    def _scaled_post(self, t1w_post, t1w_pre):
        """The post-contrast T1w scaled to the pre-contrast one ('brain'), and the scale."""
        if t1w_post is None or t1w_pre is None or self.inputs.se_normalization != "brain":
            return t1w_post, 1.0
        if not isdefined(self.inputs.healthy_mask_file):
            raise ValueError("SE normalisation 'brain' needs the healthy-brain mask")
        healthy, _, _ = G.load(self.inputs.healthy_mask_file)
        t1w_post, scale = scale_to_pre(t1w_post, t1w_pre, healthy > 0.5)
        if not np.isfinite(scale):
            node_warning(
                self._results, "bids_agquant.quantify",
                f"{Path(self.inputs.t1w_post).name}: too little healthy brain (< "
                f"{MIN_SCALE_VOXELS} voxels) to scale the post-contrast T1w to the "
                f"pre-contrast one; SE is not normalised (se_intensity_scale n/a)")
        return t1w_post, scale

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        rel = get_relaxivity(self.inputs.agent, self.inputs.field_strength_t,
                             self.inputs.relaxivity_overrides)
        self._results["relaxivity"] = _relaxivity_sidecar(rel)
        loaded = {name: self._load(name) for name in ("r1_post", "r1_pre", "t1w_post",
                                                      "t1w_pre")}
        affine = next((aff for _, aff in loaded.values() if aff is not None), None)
        images = {name: data for name, (data, _) in loaded.items()}
        images["t1w_post"], scale = self._scaled_post(images["t1w_post"], images["t1w_pre"])
        maps = state_maps(relaxivity=rel, **images)
        for arr, key, name in ((maps.delta_r1, "delta_r1_file", "delta_r1.nii"),
                               (maps.conc, "conc_file", "conc.nii"),
                               (maps.se, "se_file", "se.nii")):
            if arr is not None:
                self._results[key] = G.save_like(arr, affine, cwd / name)

        rows = []
        if isdefined(self.inputs.regions_file):
            regions = Regions.from_dict(json.loads(Path(self.inputs.regions_file).read_text()))
            lesions, _, _ = G.load(self.inputs.lesion_labels_file, dtype=np.int32)
            controls, _, _ = G.load(self.inputs.control_labels_file, dtype=np.int16)
            base = dict(self.inputs.row_base)
            if maps.t1w_post is not None:
                base["se_intensity_scale"] = scale
            rows = region_rows(regions=regions, lesion_labels=lesions, control_labels=controls,
                               maps=maps, base=base, relaxivity=rel,
                               noise=self._noise(lesions.shape, affine))
        out = cwd / "rows.json"
        out.write_text(json.dumps(json_safe(rows), indent=1))
        self._results["rows_file"] = str(out)
        return runtime

    def _transform(self, name):
        value = getattr(self.inputs, name)
        return G.read_transform(value) if isdefined(value) else None

    def _r1_noise(self, end, ref_affine):
        """The native R1 variance of one end (post/pre) and its map from the reference grid."""
        var_file = getattr(self.inputs, f"r1_{end}_var")
        matrix = self._transform(f"r1_{end}_transform")
        if not isdefined(var_file) or matrix is None:
            return None
        var, aff, _ = G.load(var_file)
        return U.ResampledNoise(var.astype(np.float64),
                                pure_geometry.voxel_map(ref_affine, aff, matrix))

    def _t1w_noise(self, end, ref_affine):
        """The native T1w of one end, its noise variance (:func:`~.uncertainty.image_noise_sd`)
        and its map from the reference grid (identity for the reference T1w itself)."""
        native = getattr(self.inputs, f"t1w_{end}_native")
        if not isdefined(native):
            return None
        data, aff, _ = G.load(native)
        data = data.astype(np.float64)
        sd = U.image_noise_sd(data, signal_mask(data), pure_geometry.voxel_sizes(aff))
        variance = np.where(np.isfinite(data), sd * sd, np.nan)
        return U.ResampledNoise(variance, pure_geometry.voxel_map(
            ref_affine, aff, self._transform(f"t1w_{end}_transform")), values=data)

    def _noise(self, shape, ref_affine):
        """The :class:`~.uncertainty.StateNoise` of this state (its parts None when unset)."""
        if ref_affine is None:
            return None
        return U.StateNoise(r1_post=self._r1_noise("post", ref_affine),
                            r1_pre=self._r1_noise("pre", ref_affine),
                            t1w_post=self._t1w_noise("post", ref_affine),
                            t1w_pre=self._t1w_noise("pre", ref_affine))


def _relaxivity_sidecar(rel) -> dict:
    """The ``Relaxivity`` object of the concentration sidecar."""
    return {"Agent": rel.agent, "r1": rel.r1_per_mM_s, "Units": "1/(mM s)",
            "PerGdIon": True, "FieldStrength": rel.field_strength_t, "Source": rel.source,
            "MassConcentrationFactor": _finite_or_none(rel.mg_per_L_per_mM_gd),
            "MassConcentrationFactorUnits": "mg/L per mM of Gd"}


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None


