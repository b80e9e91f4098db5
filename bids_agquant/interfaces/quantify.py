"""Post-contrast quantification in the reference space: delta R1, [Gd], SE, and region rows.

Thin wrapper: loads reference-space maps, calls :mod:`bids_agquant.qmri.concentration`,
:mod:`bids_agquant.qmri.enhancement` and :func:`bids_agquant.interfaces.lesions.region_rows`,
saves maps and the rows (JSON) for the lesion table.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec,
                                    isdefined, traits)

from . import geometry as G
from .lesions import region_rows
from .masks import signal_mask
from .notes import node_warning, warnings_output

__all__ = ["QuantifyPostContrast"]


class _QuantInputSpec(BaseInterfaceInputSpec):
    r1_post = File(exists=True, desc="post-contrast R1 (1/s), reference space")
    r1_pre = File(exists=True, desc="pre-contrast R1 (1/s), reference space")
    t1w_post = File(exists=True, desc="post-contrast T1w, reference space")
    t1w_pre = File(exists=True, desc="pre-contrast T1w, reference space")
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

    def _run_interface(self, runtime):
        from bids_agquant.qmri.concentration import concentration_mM, delta_r1
        from bids_agquant.qmri.enhancement import signal_enhancement_percent
        from bids_agquant.qmri.relaxivity import get_relaxivity

        cwd = Path(runtime.cwd)
        maps, affine = {}, None

        def get(name):
            nonlocal affine
            value = getattr(self.inputs, name)
            if not isdefined(value):
                return None
            data, aff, _ = G.load(value)
            affine = aff if affine is None else affine
            return data

        rel = get_relaxivity(self.inputs.agent, self.inputs.field_strength_t,
                             self.inputs.relaxivity_overrides)
        self._results["relaxivity"] = {
            "Agent": rel.agent, "r1": rel.r1_per_mM_s, "Units": "1/(mM s)",
            "PerGdIon": True, "FieldStrength": rel.field_strength_t, "Source": rel.source,
            "MassConcentrationFactor": _finite_or_none(rel.mg_per_L_per_mM_gd),
            "MassConcentrationFactorUnits": "mg/L per mM of Gd"}
        r1_post, r1_pre = get("r1_post"), get("r1_pre")
        if r1_post is not None and r1_pre is not None:
            maps["t1_post"] = _inverse(r1_post)
            maps["t1_pre"] = _inverse(r1_pre)
            maps["delta_r1"] = delta_r1(r1_post, r1_pre)
            maps["conc"] = concentration_mM(maps["delta_r1"], rel)
            self._results["delta_r1_file"] = G.save_like(maps["delta_r1"], affine,
                                                         cwd / "delta_r1.nii")
            self._results["conc_file"] = G.save_like(maps["conc"], affine, cwd / "conc.nii")
        t1w_post, t1w_pre = get("t1w_post"), get("t1w_pre")
        scale = 1.0
        if t1w_post is not None and t1w_pre is not None and self.inputs.se_normalization == "brain":
            from bids_agquant.qmri.enhancement import MIN_SCALE_VOXELS, intensity_scale

            if not isdefined(self.inputs.healthy_mask_file):
                raise ValueError("SE normalisation 'brain' needs the healthy-brain mask")
            healthy, _, _ = G.load(self.inputs.healthy_mask_file)
            scale = intensity_scale(t1w_post, t1w_pre, healthy > 0.5)
            if np.isfinite(scale):
                t1w_post = t1w_post / scale
            else:
                node_warning(
                    self._results, "bids_agquant.quantify",
                    f"{Path(self.inputs.t1w_post).name}: too little healthy brain (< "
                    f"{MIN_SCALE_VOXELS} voxels) to scale the post-contrast T1w to the "
                    f"pre-contrast one; SE is not normalised (se_intensity_scale n/a)")
        if t1w_post is not None and t1w_pre is not None:
            maps["t1w_post"], maps["t1w_pre"] = t1w_post, t1w_pre
            se = signal_enhancement_percent(t1w_post, t1w_pre)
            se[~signal_mask(t1w_pre)] = np.nan        # background: no signal to enhance
            maps["se"] = se
            self._results["se_file"] = G.save_like(maps["se"], affine, cwd / "se.nii")

        rows = []
        if isdefined(self.inputs.regions_file):
            regions = json.loads(Path(self.inputs.regions_file).read_text())
            lesions, _, _ = G.load(self.inputs.lesion_labels_file, dtype=np.int32)
            controls, _, _ = G.load(self.inputs.control_labels_file, dtype=np.int16)
            base = dict(self.inputs.row_base)
            if "t1w_post" in maps:
                base["se_intensity_scale"] = scale
            rows = region_rows(regions=regions, lesion_labels=lesions, control_labels=controls,
                               maps=maps, base=base, relaxivity=rel)
        out = cwd / "rows.json"
        out.write_text(json.dumps(_plain(rows), indent=1))
        self._results["rows_file"] = str(out)
        return runtime


def _inverse(r1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r1 > 0, 1.0 / r1, np.nan)


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
