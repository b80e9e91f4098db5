"""The participant QA table: every session's QA metrics against their thresholds.

The metrics and thresholds are defined in :mod:`bids_agquant.qmri.qa`.  Nodes that already hold
the images compute theirs on the way (``FitVFA``: fit residual and B1 map; ``RigidRegistration``:
the result's cross-correlation) and write them as a small JSON ``{metric: value}``; this node
adds the metrics of the maps in the reference space (NAWM T1, R1 change and pattern against the
baseline) and of the native T1w images (SNR), and writes ``sub-<p>_desc-qa_stats.tsv`` with its
JSON sidecar (data dictionary, thresholds, flagged metrics).  A flagged metric is a warning,
never an error: the run goes on and the report shows it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, InputMultiObject, SimpleInterface,
                                    TraitedSpec, isdefined, traits)

from bids_agquant.bids import columns as C
from bids_agquant.bids import tables as T
from bids_agquant.qmri import geometry as pure_geometry
from bids_agquant.qmri import qa
from bids_agquant.qmri.brain import TISSUE_CLASSES
from bids_agquant.qmri.masks import otsu_threshold, signal_mask
from bids_agquant.qmri.uncertainty import image_noise_sd

from . import geometry as G
from .derivatives import _prepare_output_dir, _sidecar_path, write_sidecar
from .notes import node_warning, warnings_output

__all__ = ["SessionQA", "QATableSink", "qa_rows", "t1w_snr"]


def _where(meta: dict) -> dict:
    """The session and contrast state of an item list entry (what a QA row is about)."""
    return {k: meta[k] for k in ("session_id", "contrast_state")}


def _vfa_item(metric: str) -> str:
    """The item of a metric of a FitVFA QA file (its B1 statistics describe the B1 map)."""
    return "b1_map" if metric.startswith("b1_") else "vfa_fit"


class _QAInputSpec(BaseInterfaceInputSpec):
    participant_id = traits.Str(mandatory=True, desc="sub-<label>")
    record_files = InputMultiObject(File(exists=True), desc="JSON {metric: value} of nodes")
    record_items = traits.List(traits.Dict, desc="per record file: session_id, contrast_state, "
                                                 "item ('vfa_fit' for a FitVFA file)")
    r1_files = InputMultiObject(File(exists=True), desc="R1 maps of the states (reference space)")
    r1_items = traits.List(traits.Dict, desc="per R1 map: session_id, contrast_state, pre "
                                             "(bool), baseline (bool), field_strength_t")
    t1w_items = traits.List(traits.Dict, desc="session_id, contrast_state, path (native T1w), "
                                              "transform (index into t1w_transforms, or None "
                                              "for the reference T1w)")
    t1w_transforms = InputMultiObject(File(exists=True), desc="T_ref<-T1w of the registered "
                                                               "T1w images")
    probseg_files = InputMultiObject(File(exists=True), desc="tissue probabilities, "
                                                             "TISSUE_CLASSES order")
    brain_mask_file = File(exists=True)
    lesion_labels_file = File(exists=True)


class _QAOutputSpec(TraitedSpec):
    rows_file = File(exists=True, desc="JSON list of the QA table's rows")
    n_flagged = traits.Int(desc="flagged metrics")
    warnings = warnings_output()


def _row(pid, where: dict, item: str, metric: str, value, field_strength_t=None) -> dict:
    t = qa.threshold_for(metric, field_strength_t)
    v = float(value) if value is not None else math.nan
    return {"participant_id": pid, "session_id": where["session_id"],
            "contrast_state": where["contrast_state"], "item": item, "metric": metric,
            "value": v if math.isfinite(v) else None, "unit": t.unit, "low": t.low,
            "high": qa.high_text(t),
            "qa_flag": qa.flagged(v, t)}


def t1w_snr(path, nawm=None, nawm_affine=None, transform=None) -> float:
    """SNR of a native T1w: its median over normal-appearing white matter over its noise SD
    (:func:`image_noise_sd`) in the same voxels, a homogeneous tissue where the second
    differences see noise and not anatomy (over the whole head, edges inflate the SD: by 50 % on
    a 3 mm grid). ``nawm``: the NAWM mask on the reference grid (``nawm_affine``), brought onto
    the T1w's own grid (nearest neighbour) through ``transform`` (T_ref<-T1w, the
    registration's; None: the T1w is the reference or shares its world). Without a NAWM mask,
    the bright tissue above the head's Otsu threshold and the head's noise SD stand in."""
    data, aff, _ = G.load(path)
    head = signal_mask(data)
    values = data[head & np.isfinite(data)]
    if values.size < 100:
        return math.nan
    spacing = pure_geometry.voxel_sizes(aff)
    if nawm is None:
        return qa.snr(data, head & (data > otsu_threshold(values)),
                      image_noise_sd(data, head, spacing))
    to_ref = None if transform is None else np.linalg.inv(G.read_transform(transform))
    region = head & pure_geometry.resample_mask(nawm, nawm_affine, data.shape, aff, to_ref)
    return qa.snr(data, region, image_noise_sd(data, region, spacing))


def qa_rows(pid: str, records, r1_maps, t1w_snrs, nawm, spacing_mm) -> list[dict]:
    """The QA table's rows.

    ``records``: [(where, item, {metric: value})]; ``r1_maps``: [(where, r1 array, pre,
    baseline, field_strength_t)] in the reference space; ``t1w_snrs``: [(where, snr)];
    ``nawm``: NAWM mask of the reference space. ``where``: {session_id, contrast_state}.
    """
    rows = []
    for where, item, metrics in records:
        for metric, value in metrics.items():
            rows.append(_row(pid, where, _vfa_item(metric) if item == "vfa_fit" else item,
                             metric, value))
    base = next((r for r in r1_maps if r[3]), None)
    for where, r1, pre, baseline, b0 in r1_maps:
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = 1.0 / r1
        rows.append(_row(pid, where, "t1_map", "nawm_t1_s", qa.nawm_t1_median(t1, nawm), b0))
        if base is None or baseline:
            continue
        if pre:
            rows.append(_row(pid, where, "t1_map", "nawm_r1_change",
                             qa.r1_change(r1, base[1], nawm)))
        rows.append(_row(pid, where, "t1_map", "nawm_r1_pattern",
                         qa.r1_pattern(r1, base[1], nawm, spacing_mm)))
    finite = [s for _, s in t1w_snrs if math.isfinite(s)]
    median = float(np.median(finite)) if finite else math.nan
    for where, s in t1w_snrs:
        rows.append(_row(pid, where, "t1w", "snr_t1w", s))
        if len(t1w_snrs) > 1:
            rows.append(_row(pid, where, "t1w", "snr_t1w_relative", s / median))
    return rows


class SessionQA(SimpleInterface):
    """Compute the participant's QA metrics (the rows of the QA table); flags are warnings."""
    input_spec = _QAInputSpec
    output_spec = _QAOutputSpec

    def _run_interface(self, runtime):
        inp = self.inputs
        records = []
        files = list(inp.record_files) if isdefined(inp.record_files) else []
        for f, meta in zip(files, inp.record_items):
            records.append((_where(meta), meta["item"], json.loads(Path(f).read_text())))
        nawm, nawm_aff, spacing, r1_maps = None, None, (1.0, 1.0, 1.0), []
        r1_files = list(inp.r1_files) if isdefined(inp.r1_files) else []
        if r1_files and isdefined(inp.probseg_files) and isdefined(inp.brain_mask_file):
            wm, aff, _ = G.load(list(inp.probseg_files)[TISSUE_CLASSES.index("WM")])
            brain, _, _ = G.load(inp.brain_mask_file)
            lesions = None
            if isdefined(inp.lesion_labels_file):
                lesions = G.load(inp.lesion_labels_file)[0] > 0
            spacing = pure_geometry.voxel_sizes(aff)
            nawm, nawm_aff = qa.nawm_mask(wm, brain > 0, lesions, spacing), aff
            for f, meta in zip(r1_files, inp.r1_items):
                r1_maps.append((_where(meta), G.load(f)[0], bool(meta["pre"]),
                                bool(meta["baseline"]), meta.get("field_strength_t")))
        xfms = list(inp.t1w_transforms) if isdefined(inp.t1w_transforms) else []
        snrs = [(_where(m), t1w_snr(m["path"], nawm, nawm_aff,
                                    None if m.get("transform") is None else xfms[m["transform"]]))
                for m in inp.t1w_items]
        rows = qa_rows(inp.participant_id, records, r1_maps, snrs, nawm, spacing)
        # the plan's order of sessions and states (the items are listed in it), then metric, item
        order = {}
        for m in list(inp.t1w_items) + list(inp.record_items) + list(inp.r1_items):
            order.setdefault((m["session_id"], m["contrast_state"]), len(order))
        rows.sort(key=lambda r: (order.get((r["session_id"], r["contrast_state"]), len(order)),
                                 qa.metric_rank(r["metric"]), r["item"]))
        flagged = [r for r in rows if r["qa_flag"]]
        rows_file = Path(runtime.cwd, "qa_rows.json")
        rows_file.write_text(json.dumps(rows))
        for r in flagged:
            value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
            node_warning(self._results, "bids_agquant.qa",
                         f"QA flag: {inp.participant_id} {r['session_id']} "
                         f"{r['contrast_state']} {r['item']}: {r['metric']} = {value} "
                         f"outside [{r['low']:g}, {r['high']}] {r['unit']} (docs/qa.md)")
        self._results["rows_file"] = str(rows_file)
        self._results["n_flagged"] = len(flagged)
        return runtime


class _SinkInputSpec(BaseInterfaceInputSpec):
    rows_file = File(exists=True, mandatory=True, desc="SessionQA's rows")
    output_dir = traits.Str(mandatory=True)
    dataset_links = traits.Dict(mandatory=True)
    table_path = traits.Str(mandatory=True, desc="QA table path relative to output_dir")


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class QATableSink(SimpleInterface):
    """Write the QA table and its JSON sidecar (data dictionary, thresholds, flagged metrics)
    into output_dir, atomically; it always runs (cheap), so a deleted table comes back."""
    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        rows = json.loads(Path(self.inputs.rows_file).read_text())
        out_dir = Path(self.inputs.output_dir)
        _prepare_output_dir(out_dir, self.inputs.dataset_links)
        table = out_dir / self.inputs.table_path
        T.write_tsv(table, rows, C.columns(C.QA_TABLE))
        write_sidecar(_sidecar_path(table), qa_sidecar(rows))
        self._results["out_files"] = [str(table), str(_sidecar_path(table))]
        return runtime


def qa_sidecar(rows) -> dict:
    """The QA table's JSON: data dictionary, every threshold, and the flagged metrics."""
    return {**C.dictionary(C.QA_TABLE),
            "Thresholds": {t.metric: {"Low": t.low, "High": qa.high_text(t), "Unit": t.unit,
                                      "Why": t.why, "Source": t.source}
                           for t in qa.THRESHOLDS.values()},
            "NAWMT1RangesSeconds": {f"{b0:g}T": list(r) for b0, r in qa.NAWM_T1_RANGES_S.items()},
            "FlaggedMetrics": [f"{r['session_id']} {r['contrast_state']} {r['item']} "
                               f"{r['metric']}" for r in rows if r["qa_flag"]]}
