"""Nipype sinks that copy work-dir results into OUTPUT_DIR as BIDS-Derivatives (atomic writes).

Names and sidecars are decided when the graph is built (:mod:`bids_agquant.bids.derivatives`);
the sinks only write. They always run (so deleted outputs come back on a rerun) but skip an
image whose output is newer than its work-dir source (so a resumed run does not recompress
every map). Sidecars are rewritten only when their content changes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, InputMultiObject,
                                    SimpleInterface, TraitedSpec, isdefined, traits)

from bids_agquant.bids import columns as C
from bids_agquant.bids import derivatives as D
from bids_agquant.bids import tables as T
from bids_agquant.qmri.brain import TISSUE_CLASSES
from bids_agquant.qmri.regions import Regions

__all__ = ["DerivativeSpec", "DerivativesSink", "LesionTableSink", "STATE_SINK_FIELDS",
           "write_output"]


@dataclass(frozen=True)
class DerivativeSpec:
    """One output of a sink: its path relative to OUTPUT_DIR and its sidecar (None: none).

    Decided when the graph is built; crosses the node boundary as :meth:`to_dict` (nipype hashes
    and caches plain dicts) and is read back with :meth:`from_dict`.
    """
    path: str
    sidecar: dict | None = field(default=None)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sidecar": self.sidecar}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DerivativeSpec":
        return cls(path=str(d["path"]), sidecar=d.get("sidecar"))


def specs_to_dicts(specs: Mapping) -> dict:
    """{field: DerivativeSpec} -> the plain dicts a sink's ``outputs``/``images`` input takes."""
    return {k: (v.to_dict() if isinstance(v, DerivativeSpec) else dict(v))
            for k, v in specs.items()}


#: The file inputs of a state's sink (key of :data:`bids_agquant.bids.derivatives.OUTPUTS`).
STATE_SINK_FIELDS = ("T1map", "R1map", "M0map", "delta_r1", "concentration", "enhancement",
                     "xfm_t1w", "xfm_vfa", "b1_factor")


def _up_to_date(src: Path, dst: Path) -> bool:
    try:
        return dst.stat().st_mtime_ns >= src.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def write_output(src, dst: Path, *, dtype=None) -> bool:
    """Write work-dir file ``src`` to ``dst`` (NIfTI recompressed, other files copied).

    Returns False when ``dst`` was already up to date.
    """
    src, dst = Path(src), Path(dst)
    if _up_to_date(src, dst):
        return False
    if dst.name.endswith((".nii.gz", ".nii")):
        img = nib.load(str(src))
        data = np.asarray(img.dataobj)
        if dtype is not None:
            data = data.astype(dtype)
        out = nib.Nifti1Image(data, img.affine, header=img.header)
        out.set_data_dtype(data.dtype)
        D.write_nifti(dst, out)
    else:
        D.atomic_write_bytes(dst, src.read_bytes())
    return True


def write_sidecar(path: Path, content: dict) -> None:
    text = json.dumps(T.json_safe(content), indent=2, allow_nan=False) + "\n"
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    D.atomic_write_text(path, text)


def _sidecar_path(path: Path) -> Path:
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".mat", ".txt"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def _prepare_output_dir(output_dir: Path, dataset_links: dict) -> None:
    D.ensure_dataset_description(output_dir, dataset_links=dataset_links)
    D.ensure_readme(output_dir)
    D.update_bidsignore(output_dir)


class _SinkInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    dataset_links = traits.Dict(usedefault=True, desc="DatasetLinks name -> root folder")
    outputs = traits.Dict(mandatory=True,
                          desc="field -> DerivativeSpec.to_dict() ({'path', 'sidecar'})")
    relaxivity = traits.Dict(desc="added to the concentration sidecar")
    T1map = File(exists=True)
    R1map = File(exists=True)
    M0map = File(exists=True)
    delta_r1 = File(exists=True)
    concentration = File(exists=True)
    enhancement = File(exists=True)
    xfm_t1w = File(exists=True)
    xfm_vfa = File(exists=True)
    b1_factor = File(exists=True)


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str, desc="written (or up-to-date) output files")


class DerivativesSink(SimpleInterface):
    """Write the maps and transforms of one contrast state with their sidecars."""
    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        out_dir = Path(self.inputs.output_dir)
        _prepare_output_dir(out_dir, self.inputs.dataset_links)
        written = []
        for name, raw in self.inputs.outputs.items():
            spec = DerivativeSpec.from_dict(raw)
            src = getattr(self.inputs, name, None)
            if src is None or not isdefined(src):
                continue
            dst = out_dir / spec.path
            write_output(src, dst, dtype=np.float32 if dst.name.endswith(".nii.gz") else None)
            sidecar = dict(spec.sidecar or {})
            if name == "concentration" and isdefined(self.inputs.relaxivity):
                sidecar["Relaxivity"] = dict(self.inputs.relaxivity)
            if sidecar:
                write_sidecar(_sidecar_path(dst), sidecar)
            written.append(str(dst))
        self._results["out_files"] = written
        return runtime


class _TableInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    dataset_links = traits.Dict(usedefault=True)
    rows_files = InputMultiObject(File(exists=True), desc="JSON rows of each post state")
    table_path = traits.Str(mandatory=True, desc="relative path of the lesion table (.tsv)")
    table_sidecar = traits.Dict(usedefault=True, desc="extra keys of the table's JSON")
    lesion_labels_file = File(exists=True)
    control_labels_file = File(exists=True)
    brain_mask_file = File(exists=True)
    probseg_files = InputMultiObject(File(exists=True), desc="GM, WM, CSF probabilities")
    tissue_dseg_file = File(exists=True)
    regions_file = File(exists=True)
    images = traits.Dict(mandatory=True, desc="'lesion_dseg'|'control_dseg'|'brain_mask' -> "
                                              "DerivativeSpec.to_dict()")


class LesionTableSink(SimpleInterface):
    """Write the participant lesion table (+ data dictionary) and the region images."""
    input_spec = _TableInputSpec
    output_spec = _SinkOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        out_dir = Path(self.inputs.output_dir)
        _prepare_output_dir(out_dir, self.inputs.dataset_links)
        written = []
        rows = []
        for f in (self.inputs.rows_files if isdefined(self.inputs.rows_files) else []):
            rows.extend(json.loads(Path(f).read_text()))
        table = out_dir / self.inputs.table_path
        T.write_tsv(table, rows, C.columns(C.LESION_TABLE))
        dictionary = C.dictionary(C.LESION_TABLE)
        dictionary.update(self.inputs.table_sidecar)
        write_sidecar(_sidecar_path(table), dictionary)
        written.append(str(table))

        regions = Regions()
        if isdefined(self.inputs.regions_file):
            regions = Regions.from_dict(json.loads(Path(self.inputs.regions_file).read_text()))
        sources = {"lesion_dseg": (self.inputs.lesion_labels_file, np.int32),
                   "control_dseg": (self.inputs.control_labels_file, np.int16),
                   "brain_mask": (self.inputs.brain_mask_file, np.uint8)}
        for key, (src, dtype) in sources.items():
            raw = self.inputs.images.get(key)
            if raw is None or not isdefined(src):
                continue
            spec = DerivativeSpec.from_dict(raw)
            dst = out_dir / spec.path
            write_output(src, dst, dtype=dtype)
            sidecar = dict(spec.sidecar or {})
            if key == "control_dseg" and regions.control_diameter_mm is not None:
                sidecar["RegionDiameterMM"] = regions.control_diameter_mm
            if sidecar:
                write_sidecar(_sidecar_path(dst), sidecar)
            written.append(str(dst))
            if key in ("lesion_dseg", "control_dseg"):
                written.append(_write_label_table(dst, key, regions))
        written += self._tissue_images(out_dir)
        self._results["out_files"] = written
        return runtime

    def _tissue_images(self, out_dir: Path) -> list[str]:
        """The tissue dseg (+ look-up table) and one probseg per class."""
        written = []
        if isdefined(self.inputs.tissue_dseg_file) and "tissue_dseg" in self.inputs.images:
            spec = DerivativeSpec.from_dict(self.inputs.images["tissue_dseg"])
            dst = out_dir / spec.path
            write_output(self.inputs.tissue_dseg_file, dst, dtype=np.uint8)
            write_sidecar(_sidecar_path(dst), dict(spec.sidecar or {}))
            lut = dst.with_name(dst.name.replace(".nii.gz", ".tsv"))
            T.write_tsv(lut, [{"index": i, "name": n} for i, n in
                              enumerate(TISSUE_CLASSES, start=1)], ("index", "name"))
            written += [str(dst), str(lut)]
        files = self.inputs.probseg_files if isdefined(self.inputs.probseg_files) else []
        for cls, src in zip(TISSUE_CLASSES, files):
            raw = self.inputs.images.get(f"probseg_{cls.lower()}")
            if raw is None:
                continue
            spec = DerivativeSpec.from_dict(raw)
            dst = out_dir / spec.path
            write_output(src, dst, dtype=np.float32)
            write_sidecar(_sidecar_path(dst), dict(spec.sidecar or {}))
            written.append(str(dst))
        return written


def _write_label_table(dst: Path, key: str, regions: Regions) -> str:
    """The dseg's look-up table (index, name) next to it: ``lesion-<id>`` or ``control-<k>``."""
    if key == "lesion_dseg":
        rows = [{"index": int(i), "name": f"lesion-{i}"} for i in sorted(regions.lesions, key=int)]
    else:
        rows = [{"index": int(k), "name": f"control-{k}"}
                for k in sorted(regions.controls, key=int)]
    lut = dst.with_name(dst.name.replace(".nii.gz", ".tsv"))
    T.write_tsv(lut, rows, ("index", "name"))
    return str(lut)
