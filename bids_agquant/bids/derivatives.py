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
    sub-01/ses-D1/fmap/sub-01_ses-D1_ce-AGuIX_desc-computed_TB1map.nii.gz  B1+ factor computed
                                                       from a B1 method's images (their grid)
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

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from bids_agquant import __version__
from bids_agquant.bids.atomic import (_complete_temp, _unlink, atomic_write_bytes,  # noqa: F401
                                      atomic_write_text, remove_stale_temporaries, write_nifti)
from bids_agquant.bids.tables import json_safe, software_versions, write_tsv  # noqa: F401
from bids_agquant.config import REFERENCE_SPACE

__all__ = [
    "OUTPUTS", "OutputSpec", "ENTITY_ORDER", "SOURCE_ENTITIES", "BIDSIGNORE",
    "SIDECAR_ALLOW_LIST", "PIPELINE_NAME",
    "parse_bids_name", "format_bids_name", "derivative_path", "participant_path",
    "bids_uri", "find_dataset_root", "allowed_metadata", "read_sidecar",
    "atomic_write_bytes", "atomic_write_text", "write_json", "write_nifti", "write_tsv",
    "dataset_description", "ensure_dataset_description", "update_bidsignore",
    "container_info", "remove_stale_temporaries", "TISSUE_IMAGES",
    "SEGMENTATION_SUFFIXES", "describe", "dataset_link", "dataset_identity", "readme_text",
    "ensure_readme", "README_NAME", "NON_BIDS_FOLDERS", "REPORT_PATTERN", "pybids_ignore",
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
    level: str = "anat"                # "anat": <sub>/[<ses>/]anat/ ; "fmap": <sub>/[<ses>/]fmap/ ;
                                       # "subject": <sub>/


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
    "b1_factor": OutputSpec("TB1map", desc="computed", space=False, units="1", level="fmap",
                            description=(
        "B1+ factor (1 = nominal flip angle) computed from the images of a B1 mapping method "
        "(B1Method), on their grid; the map the VFA fit of this state used (resampled onto the "
        "VFA grid, head voxels without a value filled)")),
    "brain_mask": OutputSpec("mask", desc="brain", description=(
        "Intracranial mask (brain parenchyma and CSF) of the baseline pre-contrast T1w: the MNI152 "
        "template registered to it, decided voxel by voxel with the T1 and M0 maps")),
    "tissue_dseg": OutputSpec("dseg", desc="tissue", description=(
        "Tissue classes inside the brain mask (1 GM, 2 WM, 3 CSF): the most probable class of "
        "the tissue probability maps")),
    "tissue_dseg_tsv": OutputSpec("dseg", extension=".tsv", desc="tissue"),
    "probseg_gm": OutputSpec("probseg", entities=(("label", "GM"),), description=(
        "Grey-matter probability (0-1) inside the brain mask")),
    "probseg_wm": OutputSpec("probseg", entities=(("label", "WM"),), description=(
        "White-matter probability (0-1) inside the brain mask")),
    "probseg_csf": OutputSpec("probseg", entities=(("label", "CSF"),), description=(
        "Cerebrospinal-fluid probability (0-1) inside the brain mask")),
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
    "qa_table": OutputSpec("stats", extension=".tsv", desc="qa", space=False, custom=True,
                           level="subject"),
    "qa_table_json": OutputSpec("stats", extension=".json", desc="qa", space=False,
                                custom=True, level="subject"),
}

#: The tissue-class images of the brain extraction (participant level, reference space).
TISSUE_IMAGES = ("tissue_dseg", "probseg_gm", "probseg_wm", "probseg_csf")

#: Suffixes of segmentations and masks: the BIDS schema asks no ``SkullStripped`` of them.
SEGMENTATION_SUFFIXES = ("dseg", "probseg", "mask")


def describe(key: str) -> dict:
    """The fields every sidecar of output ``key`` starts with: ``Description``, ``Units`` and,
    for a map (a NIfTI output that is no segmentation or mask), ``SkullStripped``: false, which
    the schema requires of derivative images. The maps cover the head (the VFA fit's signal
    mask, background NaN), skull included: the brain mask is a separate output."""
    spec = OUTPUTS[key]
    out = {}
    if spec.description:
        out["Description"] = spec.description
    if spec.units:
        out["Units"] = spec.units
    if spec.extension.startswith(".nii") and spec.suffix not in SEGMENTATION_SUFFIXES:
        out["SkullStripped"] = False
    return out


#: Folders of OUTPUT_DIR that are not BIDS: per-run logs and the group level's tables, figures
#: and report. Their ``.bidsignore`` lines are bare names (the schema-based validator reads
#: ``group/`` as the files in the folder, not the folder, and reports it); pybids reads no
#: ``.bidsignore``: :func:`pybids_ignore` gives it the same list.
NON_BIDS_FOLDERS = ("logs", "group")

#: The participant reports at the top of OUTPUT_DIR (``sub-<label>.html``), not BIDS either.
REPORT_PATTERN = "sub-*.html"


def pybids_ignore() -> list:
    """``ignore`` patterns for pybids' ``BIDSLayoutIndexer`` that skip what is not BIDS in
    OUTPUT_DIR (:data:`NON_BIDS_FOLDERS`, the reports) on top of pybids' own defaults (passing
    ``ignore`` replaces them). pybids matches them against the path below each dataset root::

        from bids import BIDSLayout
        from bids.layout import BIDSLayoutIndexer
        layout = BIDSLayout(bids_dir, derivatives=output_dir,
                            indexer=BIDSLayoutIndexer(validate=False, ignore=pybids_ignore()))
    """
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

    folders = "|".join(re.escape(f) for f in NON_BIDS_FOLDERS)
    report = re.escape(REPORT_PATTERN).replace(r"\*", "[^/]+")
    return list(DEFAULT_LOCATIONS_TO_IGNORE) + [re.compile(rf"^/({folders})(/|$)"),
                                                 re.compile(rf"^/{report}$")]


#: Lines of ``.bidsignore``: our custom suffixes, the non-BIDS folders and the reports.
BIDSIGNORE = ("*_Conc.nii.gz", "*_Conc.json", "*_SEmap.nii.gz", "*_SEmap.json", "*_xfm.mat",
              "*_xfm.txt", "*_xfm.json", "*_stats.tsv", "*_stats.json", *NON_BIDS_FOLDERS,
              REPORT_PATTERN)

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
    if spec.level in ("anat", "fmap"):
        if "ses" in ents:
            folder = folder / f"ses-{ents['ses']}"
        folder = folder / spec.level
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


# ----------------------------------------------------------------------------- writes

def write_json(path, obj) -> Path:
    """Atomic JSON write (sorted keys off: the order we give is the reading order)."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------- dataset-level files

def container_info() -> dict | None:
    """The software container we run in, when known.

    ``BIDS_AGQUANT_CONTAINER_TYPE`` / ``_TAG`` / ``_URI`` (the image sets the tag) win; otherwise
    the engine's own marks give the type: Apptainer/Singularity's ``APPTAINER_CONTAINER`` /
    ``SINGULARITY_CONTAINER`` variables, podman's ``/run/.containerenv`` file (or its
    ``container=podman`` variable), Docker's ``/.dockerenv``. None outside a container.
    """
    return _container_info(os.environ, Path("/"))


def _container_info(env: Mapping[str, str], root: Path) -> dict | None:
    """:func:`container_info` for an environment and a root folder (for tests)."""
    ctype = env.get("BIDS_AGQUANT_CONTAINER_TYPE")
    tag = env.get("BIDS_AGQUANT_CONTAINER_TAG")
    uri = env.get("BIDS_AGQUANT_CONTAINER_URI")
    if not ctype:
        if env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER"):
            ctype = "apptainer" if env.get("APPTAINER_CONTAINER") else "singularity"
            tag = tag or Path(env.get("APPTAINER_CONTAINER")
                              or env.get("SINGULARITY_CONTAINER")).name
        elif env.get("container") == "podman" or (root / "run/.containerenv").exists():
            ctype = "podman"
        elif (root / ".dockerenv").exists():
            ctype = "docker"
    if not ctype:
        return None
    out = {"Type": ctype}
    if tag:
        out["Tag"] = tag
    if uri:
        out["URI"] = uri
    return out


def dataset_link(root, output_dir) -> str:
    """The ``DatasetLinks`` URI of dataset ``root`` seen from OUTPUT_DIR, without a host path.

    * ``root`` and OUTPUT_DIR share a folder below the file-system root (OUTPUT_DIR inside the
      raw dataset, e.g. ``derivatives/bids_agquant``, or both in one study folder): the relative
      path from OUTPUT_DIR, e.g. ``../..`` or ``../rawdata`` (a URI without a scheme resolves
      against the dataset root, BIDS "Resolution of BIDS URIs"). It survives moving or copying
      the two together and names no folder above them.
    * otherwise (say ``/data`` and ``/out`` mounted in a container, where a path means nothing
      on the host) the dataset's ``DatasetDOI`` when it declares one, else its identity
      :func:`dataset_identity`: where it lies is not recorded, what it is is.
    """
    root, out = Path(root).absolute(), Path(output_dir).absolute()
    common = Path(os.path.commonpath([root, out]))
    if common != Path(common.anchor):
        return Path(os.path.relpath(root, out)).as_posix()
    doi = _dataset_doi(root)
    return doi if doi else dataset_identity(root)


def _dataset_doi(root: Path) -> str | None:
    """``doi:<...>`` of a dataset's DatasetDOI (bare DOIs get the scheme), None without one."""
    try:
        doi = json.loads((Path(root) / "dataset_description.json").read_text()).get("DatasetDOI")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(doi, str) or not doi.strip():
        return None
    doi = doi.strip()
    return doi if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", doi) else f"doi:{doi}"


#: Folders of a raw dataset left out of its identity (not raw data, or our own output).
_IDENTITY_SKIP = ("derivatives", "sourcedata", "code")


def dataset_identity(root) -> str:
    """A location-free URI naming a dataset by its content: ``ni:///sha-256;<digest>`` (RFC 6920
    named information) of the sorted list of its files (relative path and size, or a symbolic
    link's target; the bytes of every JSON and TSV file), hidden files and ``derivatives``/
    ``sourcedata``/``code`` left out. Cheap on a large dataset (images are not read) and equal on
    every copy of it."""
    root = Path(root).absolute()
    h = hashlib.sha256()
    entries = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (rel_folder == Path(".") and d in _IDENTITY_SKIP))
        for name in names:
            if not name.startswith("."):
                entries.append(rel_folder / name)
    for rel in sorted(entries, key=lambda r: r.as_posix()):
        path = root / rel
        try:
            # a symbolic link (git-annex / DataLad: its target names the content) as itself, so
            # the identity is the same whether the content was fetched or not
            what = f"-> {os.readlink(path)}" if path.is_symlink() else str(path.stat().st_size)
            h.update(f"{rel.as_posix()}\t{what}\n".encode("utf-8"))
            if not path.is_symlink() and rel.name.endswith((".json", ".tsv")):
                h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            continue
    digest = base64.urlsafe_b64encode(h.digest()).decode("ascii").rstrip("=")
    return f"ni:///sha-256;{digest}"


def dataset_description(*, dataset_links: Mapping[str, Path] | None = None,
                        output_dir=None) -> dict:
    """The content of OUTPUT_DIR/dataset_description.json.

    ``dataset_links`` maps names (``raw``, ``lesions``) to dataset roots; each is recorded with
    :func:`dataset_link` (relative to ``output_dir``, or a DOI / content identity: never an
    absolute host path), in ``DatasetLinks`` and in ``SourceDatasets`` (with the DOI when the
    dataset declares one).
    """
    versions = software_versions(stack_only=True)
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
    roots = {k: Path(v) for k, v in (dataset_links or {}).items() if k}
    if roots:
        if output_dir is None:
            raise ValueError("dataset_description: dataset links need the output_dir they are "
                             "relative to")
        links = {k: dataset_link(v, output_dir) for k, v in roots.items()}
        desc["DatasetLinks"] = links
        sources = []
        for k, uri in links.items():
            entry = {"URL": uri}
            doi = _dataset_doi(roots[k])
            if doi and doi != uri:
                entry["DOI"] = doi
            sources.append(entry)
        desc["SourceDatasets"] = sources
    return desc


def _create_once(target: Path, text: str) -> Path:
    """Create ``target`` with ``text`` unless it exists, safely when many jobs race for it.

    The complete file is written to a temporary name and hard-linked to the final name: the link
    fails if another job was first, so the file is never half-written nor overwritten.
    """
    if target.exists():
        return target
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


def ensure_dataset_description(output_dir, *, dataset_links: Mapping[str, Path] | None = None
                               ) -> Path:
    """Create OUTPUT_DIR/dataset_description.json once (first writer wins, never overwritten).

    One exception: a file an earlier version wrote with absolute ``file://`` links (a host path,
    broken by a move) gets its ``DatasetLinks`` and ``SourceDatasets`` replaced by the portable
    ones, everything else kept; every job computes the same content, so concurrent rewrites
    (atomic replace) agree.
    """
    target = Path(output_dir) / "dataset_description.json"
    if target.exists():
        _replace_host_links(target, dataset_links, output_dir)
        return target
    desc = dataset_description(dataset_links=dataset_links, output_dir=output_dir)
    return _create_once(target, json.dumps(json_safe(desc), indent=2) + "\n")


def _replace_host_links(target: Path, dataset_links, output_dir) -> None:
    try:
        old = json.loads(target.read_text())
    except (OSError, ValueError):
        return
    links = old.get("DatasetLinks") if isinstance(old, dict) else None
    if not isinstance(links, dict) or not any(
            isinstance(v, str) and v.startswith("file:") for v in links.values()):
        return
    desc = dataset_description(dataset_links=dataset_links, output_dir=output_dir)
    new = dict(old)
    for key in ("DatasetLinks", "SourceDatasets"):
        if key in desc:
            new[key] = desc[key]
        else:
            new.pop(key, None)
    atomic_write_text(target, json.dumps(json_safe(new), indent=2) + "\n")


#: The derivatives' README (the schema recommends one; the validator warns without it).
README_NAME = "README.md"


def readme_text() -> str:
    """OUTPUT_DIR/README.md: what the folder holds, generated from :data:`OUTPUTS` (one home for
    every output's description and units) and :data:`BIDSIGNORE`."""
    lines = [f"# {PIPELINE_NAME} derivatives", "",
             f"Made by {PIPELINE_NAME} {__version__}: quantitative MRI of gadolinium-based "
             "contrast agents (AGuIX nanoparticles, gadolinium chelates) in brain metastases. "
             "The software versions are in `dataset_description.json` (`GeneratedBy`, "
             "`SoftwareVersions`); every image has a JSON sidecar with its description, units "
             "and `Sources` (BIDS URIs: `bids:raw:` the input dataset named in `DatasetLinks`, "
             "`bids::` this folder).", "",
             "| file (suffix, desc) | units | what it is |", "|---|---|---|"]
    for key, spec in OUTPUTS.items():
        if not spec.description:
            continue
        name = "_".join(([f"desc-{spec.desc}"] if spec.desc else [])
                        + [f"{k}-{v}" for k, v in spec.entities] + [spec.suffix]) + spec.extension
        lines.append(f"| `{name}` | {spec.units or ''} | {spec.description} |")
    lines += ["", "Per participant: `sub-<label>/sub-<label>_desc-lesions_stats.tsv`, the lesion "
              "table (its columns are described in the `.json` next to it); `sub-<label>.html`, "
              "the participant report.", "",
              "Not BIDS, listed in `.bidsignore`: "
              + ", ".join(f"`{p}`" for p in BIDSIGNORE) + ". `logs/` holds the per-run logs, "
              "`group/` the group level's tables, figures and report.", ""]
    return "\n".join(lines)


def ensure_readme(output_dir) -> Path:
    """Create OUTPUT_DIR/README.md once (first writer wins; a README already there is kept)."""
    out = Path(output_dir)
    for name in ("README", "README.md", "README.rst", "README.txt"):
        if (out / name).exists():
            return out / name
    return _create_once(out / README_NAME, readme_text())


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
