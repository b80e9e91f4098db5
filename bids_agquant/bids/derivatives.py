"""BIDS-Derivatives output of bids_agquant: names, sidecars, dataset_description, atomic writes.

One place for every output name
-------------------------------
:data:`OUTPUTS` lists every file the participant level writes (suffix, ``desc``, units, what it
is); :func:`derivative_path` builds its path from the *source* file's entities, so names are never
assembled by hand elsewhere. Entities kept from the source: ``sub, ses, acq, ce, rec, run``
(``flip``, ``echo``, ``part`` ... describe one raw volume, not a map fitted from several); added:
``space`` (always ``T1w``, :data:`bids_agquant.config.REFERENCE_SPACE`), ``desc``, ``label`` and
for transforms ``from``/``to``/``mode``. Entity order is the BIDS schema's.

Examples (participant 01, session D1, AGuIX)::

    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_T1map.nii.gz     T1 (s)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_R1map.nii.gz     R1 (1/s)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_M0map.nii.gz     M0 (arbitrary)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_desc-delta_R1map.nii.gz   delta R1 (1/s)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_Conc.nii.gz      [Gd] (mM)   (custom)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_space-T1w_SEmap.nii.gz     SE (%)      (custom)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_from-orig_to-T1w_mode-image_xfm.mat  (custom)
    sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_from-VFA_to-T1w_mode-image_xfm.mat   (custom)
    sub-01/anat/sub-01_space-T1w_desc-brain_mask.nii.gz
    sub-01/anat/sub-01_space-T1w_desc-lesions_dseg.nii.gz (+ .tsv look-up table)
    sub-01/anat/sub-01_space-T1w_desc-controls_dseg.nii.gz (+ .tsv)
    sub-01/sub-01_desc-lesions_stats.tsv (+ .json data dictionary)                   (custom)

``T1map``, ``R1map``, ``M0map``, ``mask`` and ``dseg`` pass the BIDS schema's derivative rules;
the custom suffixes (``Conc``, ``SEmap``, ``xfm``, ``stats``) and the ``logs/`` folder are listed
in ``.bidsignore`` (:data:`BIDSIGNORE`). Transforms are ITK/ANTs files in the *resampling*
convention: ``from-X_to-T1w`` maps reference-space points to X's points, i.e. it is what
``antsApplyTransforms -r reference -i X -t file`` needs to bring an X image into ``space-T1w``.

Writes are atomic: a hidden temporary file in the target folder, then ``os.replace``; readers and
concurrent jobs (one HPC array task per participant writing into one OUTPUT_DIR) never see a
half-written file. ``dataset_description.json`` is created with ``os.link`` (first writer wins,
never overwritten), ``.bidsignore`` is merged.

Sidecars are built from what we computed, plus an allow-list (:data:`SIDECAR_ALLOW_LIST`) of
acquisition fields copied from input sidecars; nothing else (never names, dates, institutions).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

from bids_agquant.config import REFERENCE_SPACE

__all__ = [
    "OUTPUTS", "OutputSpec", "ENTITY_ORDER", "SOURCE_ENTITIES", "BIDSIGNORE",
    "SIDECAR_ALLOW_LIST", "LESION_TABLE_COLUMNS", "LESION_TABLE_DICTIONARY", "PIPELINE_NAME",
    "parse_bids_name", "format_bids_name", "derivative_path", "participant_path",
    "bids_uri", "find_dataset_root", "allowed_metadata", "read_sidecar",
    "atomic_write_bytes", "atomic_write_text", "write_json", "write_nifti", "write_tsv",
    "dataset_description", "ensure_dataset_description", "update_bidsignore",
    "stack_versions", "container_info", "format_tsv_value",
]

PIPELINE_NAME = "bids_agquant"

#: BIDS entity order (schema ``rules.entities``; only those we can meet), then the transform
#: entities of the derivatives convention (``from``, ``to``, ``mode``) before the suffix.
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "trc", "rec", "dir", "run", "mod", "echo",
                "flip", "inv", "mt", "part", "space", "res", "den", "label", "desc",
                "from", "to", "mode")

#: Entities a map inherits from its source file (the others describe one raw volume).
SOURCE_ENTITIES = ("sub", "ses", "acq", "ce", "rec", "run")


@dataclass(frozen=True)
class OutputSpec:
    """One kind of output file."""
    suffix: str
    extension: str = ".nii.gz"
    desc: str | None = None
    space: bool = True                 # carries space-<REFERENCE_SPACE>
    units: str | None = None
    description: str = ""
    custom: bool = False               # suffix not in BIDS: listed in .bidsignore
    entities: tuple = ()               # fixed extra entities, e.g. (("from", "VFA"), ...)
    level: str = "anat"                # "anat": <sub>/[<ses>/]anat/ ; "subject": <sub>/


#: Every output of the participant level (key -> spec). Keys are used by the workflow.
OUTPUTS: dict[str, OutputSpec] = {
    "T1map": OutputSpec("T1map", units="s", description=(
        "Longitudinal relaxation time T1 from the variable-flip-angle (VFA, DESPOT1) fit in the "
        "VFA set's own space, brought into the reference space as 1/R1 of the resampled R1 map")),
    "R1map": OutputSpec("R1map", units="1/s", description=(
        "Longitudinal relaxation rate R1 = 1/T1 from the VFA fit, resampled once (linear) into "
        "the reference space")),
    "M0map": OutputSpec("M0map", units="arbitrary", description=(
        "Equilibrium signal M0 of the VFA fit (scanner units, includes receive gain), resampled "
        "into the reference space")),
    "delta_r1": OutputSpec("R1map", desc="delta", units="1/s", description=(
        "Delta R1 = R1_post - R1_pre, the post-contrast R1 minus the R1 of the pre-contrast "
        "state named in PreContrastSources")),
    "concentration": OutputSpec("Conc", units="mM", custom=True, description=(
        "Gadolinium concentration [Gd] = delta R1 / r1 in mM of Gd (r1 per Gd ion, see "
        "Relaxivity); multiply by MassConcentrationFactor for mg/L of the agent")),
    "enhancement": OutputSpec("SEmap", units="%", custom=True, description=(
        "Signal enhancement 100 * (S_post - S_pre) / S_pre of the 3D T1w images, voxelwise, "
        "both images in the reference space")),
    "xfm_t1w": OutputSpec("xfm", extension=".mat", space=False, custom=True,
                          entities=(("from", "orig"), ("to", REFERENCE_SPACE), ("mode", "image")),
                          description=(
        "Rigid transform (ITK/ANTs) taking this session's T1w into the reference space "
        "(resampling convention: maps reference points to native T1w points)")),
    "xfm_vfa": OutputSpec("xfm", extension=".mat", space=False, custom=True,
                          entities=(("from", "VFA"), ("to", REFERENCE_SPACE), ("mode", "image")),
                          description=(
        "Rigid transform (ITK/ANTs) taking the VFA set into the reference space: VFA -> "
        "session T1w -> reference, composed into one (resampling convention)")),
    "brain_mask": OutputSpec("mask", desc="brain", description=(
        "Brain tissue mask used to place the healthy-tissue control regions")),
    "lesion_dseg": OutputSpec("dseg", desc="lesions", description=(
        "Lesion labels (one integer per lesion, lesion_id of the lesion table) in the reference "
        "space, nearest-neighbour resampled from the input mask")),
    "lesion_dseg_tsv": OutputSpec("dseg", extension=".tsv", desc="lesions"),
    "control_dseg": OutputSpec("dseg", desc="controls", description=(
        "Healthy-tissue control regions (label k = lesion_id control-k of the lesion table)")),
    "control_dseg_tsv": OutputSpec("dseg", extension=".tsv", desc="controls"),
    "lesion_table": OutputSpec("stats", extension=".tsv", desc="lesions", space=False,
                               custom=True, level="subject"),
    "lesion_table_json": OutputSpec("stats", extension=".json", desc="lesions", space=False,
                                    custom=True, level="subject"),
}

#: Lines of ``.bidsignore``: our custom suffixes and non-BIDS folders.
BIDSIGNORE = ("*_Conc.nii.gz", "*_Conc.json", "*_SEmap.nii.gz", "*_SEmap.json", "*_xfm.mat",
              "*_xfm.txt", "*_xfm.json", "*_stats.tsv", "*_stats.json", "logs/", "group/",
              "*.html")

#: Input sidecar fields that may be copied into output sidecars (acquisition parameters only).
SIDECAR_ALLOW_LIST = (
    "MagneticFieldStrength", "Manufacturer", "ManufacturersModelName", "PulseSequenceType",
    "ScanningSequence", "SequenceVariant", "MRAcquisitionType", "EchoTime",
    "RepetitionTimeExcitation", "RepetitionTime", "ContrastBolusIngredient",
)

_NAME_RE = re.compile(r"^(?P<stem>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)"
                      r"(?P<ext>\.[a-zA-Z0-9.]+)?$")


# --------------------------------------------------------------------------------------- names

def parse_bids_name(path) -> tuple[dict, str, str]:
    """(entities, suffix, extension) of a BIDS file name; ValueError if it is not one."""
    name = Path(path).name
    m = _NAME_RE.match(name)
    if not m:
        raise ValueError(f"{path}: not a BIDS file name (entity-label pairs, then a suffix)")
    entities = {}
    for pair in m["stem"].rstrip("_").split("_") if m["stem"] else []:
        key, _, value = pair.partition("-")
        entities[key] = value
    return entities, m["suffix"], m["ext"] or ""


def format_bids_name(entities: Mapping[str, str], suffix: str, extension: str = "") -> str:
    """``key-value_..._suffix.ext`` with the entities in BIDS order (unknown keys last)."""
    known = [k for k in ENTITY_ORDER if entities.get(k) not in (None, "")]
    other = [k for k in entities if k not in ENTITY_ORDER and entities[k] not in (None, "")]
    for k in known + other:
        v = str(entities[k])
        if not re.fullmatch(r"[a-zA-Z0-9]+", v):
            raise ValueError(f"entity {k}-{v}: BIDS labels are alphanumeric")
    parts = [f"{k}-{entities[k]}" for k in known + other]
    return "_".join(parts + [suffix]) + extension


def derivative_path(key: str, source, **entities) -> Path:
    """Relative path (inside OUTPUT_DIR) of output ``key`` derived from ``source``'s entities.

    ``entities`` override or add entities (``desc=...``; ``None`` removes one).
    """
    spec = OUTPUTS[key]
    src, _, _ = parse_bids_name(source)
    ents = {k: src[k] for k in SOURCE_ENTITIES if k in src}
    if spec.space:
        ents["space"] = REFERENCE_SPACE
    if spec.desc:
        ents["desc"] = spec.desc
    ents.update(dict(spec.entities))
    ents.update(entities)
    ents = {k: v for k, v in ents.items() if v is not None}
    if "sub" not in ents:
        raise ValueError(f"{source}: no sub- entity")
    name = format_bids_name(ents, spec.suffix, spec.extension)
    folder = Path(f"sub-{ents['sub']}")
    if spec.level == "anat":
        if "ses" in ents:
            folder = folder / f"ses-{ents['ses']}"
        folder = folder / "anat"
    return folder / name


def participant_path(key: str, participant: str, **entities) -> Path:
    """Relative path of a participant-level output (no session), e.g. the lesion table."""
    return derivative_path(key, f"sub-{participant}_x", **entities)


# ------------------------------------------------------------------ finding outputs again

@dataclass(frozen=True)
class FoundOutput:
    """A file of OUTPUT_DIR that the registry names: its key, path and naming entities."""
    key: str
    path: Path                         # OUTPUT_DIR / derivative_path(key, entities)
    entities: Mapping[str, str]        # the source entities it is named from (sub, ses, ce ...)


def registered_key(relative) -> tuple[str, dict] | None:
    """(key, source entities) of a path relative to OUTPUT_DIR, None if the registry does not
    name it so: a file is output ``key`` only when :func:`derivative_path` gives exactly this
    path for the source entities read from its name (a sidecar or a stray file never matches)."""
    rel = Path(relative)
    try:
        ents, suffix, extension = parse_bids_name(rel.name)
        source = {k: ents[k] for k in SOURCE_ENTITIES if k in ents}
        stand_in = format_bids_name(source, "x")
    except ValueError:
        return None
    if "sub" not in source:
        return None
    for key, spec in OUTPUTS.items():
        if spec.suffix == suffix and spec.extension == extension and \
                derivative_path(key, stand_in) == rel:
            return key, source
    return None


def list_outputs(output_dir, participant: str) -> list[FoundOutput]:
    """Every registered output of ``sub-<participant>`` present in OUTPUT_DIR, sorted by path."""
    output_dir = Path(output_dir)
    root = output_dir / f"sub-{participant}"
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            hit = registered_key(path.relative_to(output_dir))
            if hit is not None:
                found.append(FoundOutput(hit[0], path, hit[1]))
    return sorted(found, key=lambda f: f.path)


def find_outputs(output_dir, participant: str, key: str | None = None,
                 **entities) -> list[FoundOutput]:
    """The registered outputs of one participant with this ``key`` (any when None) and these
    source entities (``ses="D1"``; ``ce=None``: without a ``ce`` entity)."""
    if key is not None and key not in OUTPUTS:
        raise KeyError(f"{key}: not an output of the registry (OUTPUTS)")
    return [f for f in list_outputs(output_dir, participant)
            if (key is None or f.key == key)
            and all(f.entities.get(k) == v for k, v in entities.items())]


__all__ += ["FoundOutput", "registered_key", "list_outputs", "find_outputs"]


# --------------------------------------------------------------------------------- BIDS URIs

def find_dataset_root(path) -> Path | None:
    """Nearest folder above ``path`` holding a dataset_description.json (None if none)."""
    p = Path(path).absolute()
    for parent in [p] + list(p.parents):
        if (parent / "dataset_description.json").is_file():
            return parent
    return None


def bids_uri(path, datasets: Mapping[str, Path]) -> str:
    """BIDS URI ``bids:<name>:<relative path>`` of ``path`` in the first dataset containing it.

    ``datasets`` maps DatasetLinks names to roots (``""`` = the output dataset itself). A path in
    none of them is returned as a ``file://`` URI (still a valid URI, not portable).
    """
    p = Path(path).absolute()
    best = None
    for name, root in datasets.items():
        root = Path(root).absolute()
        try:
            rel = p.relative_to(root)
        except ValueError:
            continue
        if best is None or len(root.parts) > best[0]:
            best = (len(root.parts), name, rel)
    if best is None:
        return p.as_uri()
    return f"bids:{best[1]}:{best[2].as_posix()}"


# ---------------------------------------------------------------------------------- sidecars

def read_sidecar(image_path) -> dict:
    """The JSON sidecar next to a NIfTI file ({} when there is none or it is unreadable)."""
    p = Path(image_path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    side = p.with_name(name + ".json")
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError):
        return {}


def allowed_metadata(sidecar: Mapping) -> dict:
    """Only the allow-listed acquisition fields of an input sidecar."""
    return {k: sidecar[k] for k in SIDECAR_ALLOW_LIST if k in sidecar}


# ----------------------------------------------------------------------------- atomic writes

#: The writers' temporary files are hidden and sit beside their target:
#: ``.<target name>.<8 random characters from mkstemp>.tmp[<target extension>]``.
_TEMP_MARK = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(_TEMP_MARK)
                        + r"(\.[A-Za-z0-9.]+)?$")


def _temp_in(target: Path, suffix: str = "") -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                            suffix=_TEMP_MARK + suffix)


def remove_stale_temporaries(folder, beside=None) -> list[Path]:
    """Delete the temporary files of these writers that a killed run left; returns them.

    A SIGKILL (or a node killed by its scheduler) skips the writers' own cleanup. Looks in
    ``folder`` and below, and beside the single file ``beside`` (e.g. ``sub-<p>.html``, whose
    folder holds other jobs' files). Call it only for a folder one job owns (``sub-<p>/``,
    ``group/``): a dataset-level temporary may belong to a concurrent job.
    """
    folder = Path(folder)
    found = [p for p in folder.rglob(".*") if _TEMP_NAME.match(p.name)] if folder.is_dir() else []
    if beside is not None:
        beside = Path(beside)
        if beside.parent.is_dir():
            found += [p for p in beside.parent.glob(f".{beside.name}.*")
                      if _TEMP_NAME.match(p.name)]
    for p in found:
        _unlink(p)
    return found


def _complete_temp(target: Path, data: bytes) -> str:
    """A hidden temporary file beside ``target`` holding ``data``, flushed to disk, mode 0644."""
    fd, tmp = _temp_in(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    tmp = _complete_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> Path:
    """Atomic JSON write (sorted keys off: the order we give is the reading order)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_nifti(path, img) -> Path:
    """Atomic NIfTI write of a nibabel image (compressed when ``path`` ends with .gz)."""
    import nibabel as nib

    path = Path(path)
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = _temp_in(path, ext)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def format_tsv_value(value) -> str:
    """TSV cell: ``n/a`` for None/NaN/inf, ``true``/``false`` for booleans, repr-precise floats."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "n/a"
        return repr(value) if abs(value) >= 1e-4 or value == 0 else f"{value:.6e}"
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return format_tsv_value(value.item())
    except ImportError:  # pragma: no cover
        pass
    text = str(value)
    return "n/a" if text == "" else text.replace("\t", " ").replace("\n", " ")


def write_tsv(path, rows: Iterable[Mapping], columns: Iterable[str]) -> Path:
    columns = list(columns)
    lines = ["\t".join(columns)]
    for r in rows:
        lines.append("\t".join(format_tsv_value(r.get(c)) for c in columns))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _jsonable(obj):
    """Plain JSON types: paths to str, numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


# ----------------------------------------------------------------- dataset-level files

#: Python distributions whose exact versions go into dataset_description ``GeneratedBy``.
STACK = ("numpy", "scipy", "nibabel", "antspyx", "nipype", "pybids")


def stack_versions() -> dict[str, str]:
    out = {}
    for dist in STACK:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def container_info() -> dict | None:
    """The software container we run in, when known.

    ``BIDS_AGQUANT_CONTAINER_TYPE`` / ``_TAG`` / ``_URI`` (set by our Docker and Apptainer images)
    win; otherwise Apptainer/Singularity's own ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER``
    variables or Docker's ``/.dockerenv`` give the type. None outside a container.
    """
    env = os.environ
    ctype = env.get("BIDS_AGQUANT_CONTAINER_TYPE")
    tag = env.get("BIDS_AGQUANT_CONTAINER_TAG")
    uri = env.get("BIDS_AGQUANT_CONTAINER_URI")
    if not ctype:
        if env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER"):
            ctype = "apptainer" if env.get("APPTAINER_CONTAINER") else "singularity"
            tag = tag or Path(env.get("APPTAINER_CONTAINER")
                              or env.get("SINGULARITY_CONTAINER")).name
        elif Path("/.dockerenv").exists():
            ctype = "docker"
    if not ctype:
        return None
    out = {"Type": ctype}
    if tag:
        out["Tag"] = tag
    if uri:
        out["URI"] = uri
    return out


def dataset_description(*, dataset_links: Mapping[str, Path] | None = None) -> dict:
    """The content of OUTPUT_DIR/dataset_description.json."""
    from bids_agquant import __version__

    versions = stack_versions()
    generated = {
        "Name": PIPELINE_NAME,
        "Version": __version__,
        "Description": ("Quantitative MRI of gadolinium nanoparticles (AGuIX) and gadolinium "
                        "chelates: VFA T1/R1 maps, delta R1, concentration, signal enhancement "
                        "and lesion statistics. Software stack: "
                        + ", ".join(f"{k}=={v}" for k, v in versions.items())),
    }
    container = container_info()
    if container:
        generated["Container"] = container
    desc = {
        "Name": "bids_agquant derivatives",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SoftwareVersions": versions,
    }
    links = {k: Path(v).absolute().as_uri() for k, v in (dataset_links or {}).items() if k}
    if links:
        desc["DatasetLinks"] = links
        desc["SourceDatasets"] = [{"URL": u} for u in links.values()]
    return desc


def ensure_dataset_description(output_dir, *, dataset_links: Mapping[str, Path] | None = None
                               ) -> Path:
    """Create OUTPUT_DIR/dataset_description.json once, safely when many jobs race for it.

    The complete file is written to a temporary name and hard-linked to the final name: the link
    fails if another job was first, so the file is never half-written nor overwritten.
    """
    target = Path(output_dir) / "dataset_description.json"
    if target.exists():
        return target
    text = json.dumps(_jsonable(dataset_description(dataset_links=dataset_links)), indent=2) + "\n"
    tmp = _complete_temp(target, text.encode("utf-8"))
    try:
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        except OSError:      # file systems without hard links: exclusive create instead
            try:
                with open(target, "x") as fh:
                    fh.write(text)
            except FileExistsError:
                pass
    finally:
        _unlink(tmp)
    return target


def update_bidsignore(output_dir, patterns: Iterable[str] = BIDSIGNORE) -> Path:
    """Add ``patterns`` to OUTPUT_DIR/.bidsignore (kept lines stay; atomic replace)."""
    target = Path(output_dir) / ".bidsignore"
    try:
        lines = target.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    missing = [p for p in patterns if p not in lines]
    if missing:
        atomic_write_text(target, "\n".join(lines + missing) + "\n")
    return target


# ----------------------------------------------------------------------------- lesion table

#: Columns of the participant lesion table, in order: interface.md's, then ours.
LESION_TABLE_COLUMNS = (
    "participant_id", "session_id", "contrast_agent", "lesion_id", "longest_diameter_mm",
    "measurable", "volume_mm3", "se_mean_percent", "se_sd_percent", "t1_pre_mean_s",
    "t1_post_mean_s", "delta_r1_mean_per_s", "conc_mean_mM", "conc_sd_mM",
    "conc_mean_mg_per_L", "n_voxels",
    # additional columns
    "region_type", "longest_3d_diameter_mm", "pre_session_id", "se_median_percent",
    "se_voxel_mean_percent", "delta_r1_sd_per_s", "conc_median_mM", "conc_sd_mg_per_L",
    "n_voxels_conc", "n_voxels_se", "r1_per_mM_s", "field_strength_t", "mg_per_L_per_mM",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "se_intensity_scale",
)

#: JSON data dictionary of the lesion table (BIDS tabular-file sidecar).
LESION_TABLE_DICTIONARY = {
    "participant_id": {"Description": "Participant label (sub-<label>)."},
    "session_id": {"Description": "Session of the post-contrast state (ses-<label>)."},
    "contrast_agent": {"Description": "Contrast agent of the post-contrast state, canonical "
                                      "name of the relaxivity registry (e.g. AGuIX, Dotarem)."},
    "lesion_id": {"Description": "Lesion label in the lesion dseg (the input dseg label, or the "
                                 "connected-component number of a binary mask); healthy-tissue "
                                 "control regions are control-<k>."},
    "longest_diameter_mm": {"Description": "Longest axial (RECIST 1.1) diameter, measured on "
                                           "the input mask's own grid; n/a for controls.",
                            "Units": "mm"},
    "measurable": {"Description": "Longest axial diameter >= 10 mm (RECIST 1.1 / RANO); n/a for "
                                  "controls.", "Levels": {"true": "measurable",
                                                          "false": "not measurable"}},
    "volume_mm3": {"Description": "Volume of the region: on the input mask's grid for lesions, "
                                  "in the reference space for controls.", "Units": "mm^3"},
    "se_mean_percent": {"Description": "Signal enhancement of the ROI mean T1w signals, "
                                       "100 * (mean(S_post) - mean(S_pre)) / mean(S_pre) (the "
                                       "paper's definition), over the region's core: the region "
                                       "eroded by one reference voxel, so that rim voxels "
                                       "partly outside the lesion do not dilute it (the whole "
                                       "region when the core has fewer than 8 voxels).",
                        "Units": "%"},
    "se_sd_percent": {"Description": "Standard deviation (ddof=1) of the voxelwise SE over the "
                                     "region's core.", "Units": "%"},
    "t1_pre_mean_s": {"Description": "Mean T1 of the pre-contrast state over the region (maps at "
                                     "the VFA resolution: rim voxels mix with the surrounding "
                                     "tissue).", "Units": "s"},
    "t1_post_mean_s": {"Description": "Mean T1 of the post-contrast state over the region (VFA "
                                      "resolution, as t1_pre_mean_s).", "Units": "s"},
    "delta_r1_mean_per_s": {"Description": "Mean of R1_post - R1_pre over the ROI.",
                            "Units": "1/s"},
    "conc_mean_mM": {"Description": "Mean gadolinium concentration over the region, delta R1 / "
                                    "r1 (maps at the VFA resolution, resampled once).",
                     "Units": "mM"},
    "conc_sd_mM": {"Description": "Standard deviation (ddof=1) of the concentration over the ROI.",
                   "Units": "mM"},
    "conc_mean_mg_per_L": {"Description": "Mean mass concentration of the agent, conc_mean_mM x "
                                          "mg_per_L_per_mM (n/a when the agent's molar mass is "
                                          "unknown).", "Units": "mg/L"},
    "n_voxels": {"Description": "Voxels of the region in the reference space (the ROI of the "
                                "T1, delta R1 and concentration statistics)."},
    "n_voxels_se": {"Description": "Voxels of the region's core (the ROI of the SE "
                                   "statistics)."},
    "region_type": {"Description": "lesion or control.",
                    "Levels": {"lesion": "metastasis from the input mask",
                               "control": "healthy-tissue control region"}},
    "longest_3d_diameter_mm": {"Description": "Largest 3D distance across the lesion (input "
                                              "mask grid).", "Units": "mm"},
    "pre_session_id": {"Description": "Session of the pre-contrast state used (ses-<label>)."},
    "se_intensity_scale": {"Description": "The post-contrast T1w was divided by this before SE: "
                                          "the median of post / pre over the brain mask >= 10 "
                                          "mm from every lesion (--se-normalization; 1 when not "
                                          "applied, n/a when there was too little healthy "
                                          "brain)."},
    "se_median_percent": {"Description": "Median of the voxelwise SE over the region's core.",
                          "Units": "%"},
    "se_voxel_mean_percent": {"Description": "Mean of the voxelwise SE over the region's core "
                                             "(biased upward by noise, see se_mean_percent).",
                              "Units": "%"},
    "delta_r1_sd_per_s": {"Description": "Standard deviation of delta R1 over the ROI.",
                          "Units": "1/s"},
    "conc_median_mM": {"Description": "Median concentration over the ROI.", "Units": "mM"},
    "conc_sd_mg_per_L": {"Description": "Standard deviation of the mass concentration.",
                         "Units": "mg/L"},
    "n_voxels_conc": {"Description": "ROI voxels with a finite concentration (both VFA fits "
                                     "succeeded)."},
    "r1_per_mM_s": {"Description": "Relaxivity r1 per Gd ion used.", "Units": "1/(mM s)"},
    "field_strength_t": {"Description": "Field strength the relaxivity applies to (n/a for a "
                                        "user override).", "Units": "T"},
    "mg_per_L_per_mM": {"Description": "Factor from mM of Gd to mg/L of agent (molar mass / Gd "
                                       "per particle).", "Units": "mg/L/mM"},
    "centroid_x_mm": {"Description": "ROI centroid, reference-space world x (RAS+).",
                      "Units": "mm"},
    "centroid_y_mm": {"Description": "ROI centroid, reference-space world y (RAS+).",
                      "Units": "mm"},
    "centroid_z_mm": {"Description": "ROI centroid, reference-space world z (RAS+).",
                      "Units": "mm"},
}
