"""The participant workflow: one ParticipantPlan -> every output of interface.md.

Graph (per participant; ``<s>`` = one contrast state, e.g. ``D1_AGuIX``)::

    reg_<s>_wf.t1w_to_ref      T1w(s) -> reference T1w (rigid, ANTs)     [not for the reference]
    reg_<s>_wf.vfa_to_t1w      VFA(s) -> T1w(s) (rigid, ANTs)
    vfa_<s>_wf.fit_vfa         VFA fit in native space (qmri.vfa, B1-corrected when a map exists)
    vfa_<s>_wf.maps_to_ref     R1, M0 resampled once through VFA -> T1w -> reference; T1 = 1/R1
    post_<s>_wf.quantify       post states: delta R1, [Gd], SE, lesion/control rows
    regions_wf.prepare_regions lesion labels, diameters, brain mask, control regions
    session_qa, ds_qa_table    QA metrics of every state and registration -> OUTPUT_DIR
    lesion_table_wf.lesion_table  lesion table (+ dictionary), region images     -> OUTPUT_DIR
    ds_<s>                     maps, transforms and sidecars of the state         -> OUTPUT_DIR

Fits and registrations of all states are independent and run in parallel (MultiProc); every node
is single-threaded and declares its memory (estimated from the image sizes). The work dir is
``config.work_dir``: a rerun with it recomputes nothing that is cached (the sinks always run but
skip outputs that are up to date). ANTs runs deterministically (one thread, fixed seed
``config.ants_seed``) so two runs give identical arrays.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_agquant import methods
from bids_agquant.bids import derivatives as D
from bids_agquant.bids.tables import software_versions
from bids_agquant.interfaces.derivatives import DerivativeSpec, DerivativesSink, specs_to_dicts
from bids_agquant.interfaces.brain import TEMPLATE_REGISTRATION
from bids_agquant.interfaces.notes import keep_warnings
from bids_agquant.interfaces.qa import QATableSink, SessionQA
from bids_agquant.interfaces.registration import REGISTRATION_SETTINGS
from bids_agquant.workflows.lesions import init_lesion_table_wf, init_regions_wf
from bids_agquant.workflows.quantification import init_post_contrast_wf, init_vfa_wf
from bids_agquant.workflows.registration import init_registration_wf, registration_target

__all__ = ["init_participant_wf", "workflow_name", "state_label", "participant_outputs"]

#: Seed of the control-region placement (reproducible regions).
CONTROL_SEED = 0


def se_normalization_for(option: str, post, pre) -> str:
    """``--se-normalization`` for one post-contrast state: 'brain' or 'off'.

    'auto' scales the post-contrast T1w to the pre-contrast one in healthy brain when the two come
    from different sessions (receiver gain and scanner scaling differ between sessions), and
    leaves a same-session pair alone.
    """
    if option == "auto":
        return "brain" if pre is not None and pre.session != post.session else "off"
    return "brain" if option == "brain" else "off"


def state_label(state) -> str:
    """Node-name-safe label of a state: ``<session>_<agent label or pre>``."""
    return re.sub(r"[^A-Za-z0-9]", "_", f"{state.session}_{state.agent_label or 'pre'}")


def _n_voxels(path) -> int:
    try:
        shape = nib.load(str(path)).shape
    except Exception:
        return 10_000_000
    n = 1
    for s in shape[:3]:
        n *= int(s)
    return n


def _mem_gb(base: float, bytes_per_voxel: float, n_voxels: int) -> float:
    return round(base + bytes_per_voxel * n_voxels / 1e9, 2)


def _datasets(plan, config) -> tuple[dict, dict]:
    """(DatasetLinks for dataset_description, roots for BIDS URIs incl. the output itself)."""
    links = {"raw": Path(config.bids_dir)}
    if plan.lesion_mask is not None:
        root = D.find_dataset_root(plan.lesion_mask.path)
        given = getattr(config, "lesion_masks_dir", None)
        if given is not None and (root is None or not _inside(root, given)):
            root = Path(given)       # --lesion-masks DIR without a dataset_description.json
        if root is not None and not _inside(root, config.bids_dir):
            links["lesions"] = root
    return links, {**links, "": Path(config.output_dir)}


def _inside(path, root) -> bool:
    try:
        Path(path).absolute().relative_to(Path(root).absolute())
        return True
    except ValueError:
        return False


def participant_outputs(plan, config) -> dict:
    """Every output path (relative to OUTPUT_DIR) the workflow writes, by state and key.

    ``{state_label: {key: path}}`` plus ``"participant": {key: path}`` (lesion table, dsegs).
    """
    out = {}
    ref = plan.reference_t1w
    for s in plan.states:
        src = s.vfa.files[0] if s.vfa is not None else s.t1w
        # a post state's outputs carry ce-<agent> even when its files do not (agent from the
        # sidecar, sessions.tsv or --session-agent)
        ce = {"ce": s.agent_label} if s.is_post else {}
        keys = {}
        if s.vfa is not None:
            keys.update({k: D.derivative_path(k, src, **ce) for k in ("T1map", "R1map",
                                                                        "M0map", "xfm_vfa")})
            if s.vfa.b1_computed and config.b1_correction == "auto":
                keys["b1_factor"] = D.derivative_path("b1_factor", src, **ce)
        if s.t1w is not None and s.t1w != ref:
            keys["xfm_t1w"] = D.derivative_path("xfm_t1w", s.t1w, **ce)
        if s.is_post:
            pre = plan.pre_state_for(s)
            if s.vfa is not None and pre is not None and pre.vfa is not None:
                keys["delta_r1"] = D.derivative_path("delta_r1", src, **ce)
                keys["concentration"] = D.derivative_path("concentration", src, **ce)
            if s.t1w is not None and pre is not None and pre.t1w is not None:
                keys["enhancement"] = D.derivative_path("enhancement", s.t1w, **ce)
        out[state_label(s)] = keys
    p = plan.participant
    out["participant"] = {k: D.participant_path(k, p) for k in
                          ("lesion_table", "lesion_table_json", "qa_table", "qa_table_json",
                           "brain_mask", "control_dseg",
                           "lesion_dseg") + D.TISSUE_IMAGES}
    return out


@dataclass(frozen=True)
class _Build:
    """What every part of one participant's graph needs (see :func:`init_participant_wf`)."""
    plan: object
    config: object
    wf: pe.Workflow
    ref: Path
    output_dir: Path
    links: dict            # DatasetLinks name -> absolute root (str)
    roots: dict            # roots of the BIDS URIs
    paths: dict            # participant_outputs()
    mem: dict              # node kind -> GB

    def uri(self, path):
        return D.bids_uri(path, self.roots)

    @property
    def ref_uri(self):
        return self.uri(self.ref)


def workflow_name(participant: str) -> str:
    """The name of a participant's workflow, also its folder in the work dir."""
    return f"sub_{re.sub(r'[^A-Za-z0-9]', '_', participant)}_wf"


def init_participant_wf(plan, config, *, name: str | None = None) -> pe.Workflow:
    """Build the nipype workflow of one participant (see the module docstring).

    ``plan``: :class:`bids_agquant.bids.plan.ParticipantPlan`; ``config``:
    :class:`bids_agquant.config.Config` (output_dir, work_dir, vfa_fit, b1_correction,
    relaxivity_overrides, ants_seed). The workflow's ``base_dir`` is ``config.work_dir``.
    """
    ref = Path(plan.reference_t1w)
    links, roots = _datasets(plan, config)
    n_ref = _n_voxels(ref)
    mem = {"reg": _mem_gb(0.3, 40, n_ref), "resample": _mem_gb(0.2, 60, n_ref),
           "quant": _mem_gb(0.3, 110, n_ref), "regions": _mem_gb(0.3, 90, n_ref),
           "sink": _mem_gb(0.1, 12, n_ref)}
    wf = pe.Workflow(name=name or workflow_name(plan.participant))
    if config.work_dir is not None:
        wf.base_dir = str(Path(config.work_dir).absolute())
    wf.config["execution"] = {"crashfile_format": "txt"}
    b = _Build(plan=plan, config=config, wf=wf, ref=ref,
               output_dir=Path(config.output_dir).absolute(),
               links={k: str(Path(v).absolute()) for k, v in links.items()}, roots=roots,
               paths=participant_outputs(plan, config), mem=mem)
    reg_wfs, vfa_wfs = _add_state_wfs(b)
    lesions, table = _add_regions(b, reg_wfs, vfa_wfs)
    post_wfs = _add_post_contrast(b, reg_wfs, vfa_wfs, lesions, table)
    _add_sinks(b, reg_wfs, vfa_wfs, post_wfs)
    _add_qa(b, reg_wfs, vfa_wfs, lesions)
    return wf


def _add_state_wfs(b: _Build):
    """Registration and VFA sub-workflows of every state: ({label: reg_wf}, {label: vfa_wf})."""
    reg_wfs, vfa_wfs = {}, {}
    for s in b.plan.states:
        label = state_label(s)
        reg = init_registration_wf(state=s, reference_t1w=b.ref, seed=b.config.ants_seed,
                                   mem_gb=b.mem["reg"], name=f"reg_{label}_wf")
        reg_wfs[label] = reg
        if s.vfa is not None:
            n_vfa = _n_voxels(s.vfa.files[0]) * len(s.vfa.files)
            vfa = init_vfa_wf(state=s, reference_t1w=b.ref, method=b.config.vfa_fit,
                              b1_correction=b.config.b1_correction,
                              mem_fit_gb=_mem_gb(0.3, 120, n_vfa),
                              mem_resample_gb=b.mem["resample"],
                              intensity_factors=[b.plan.intensity_factor(f) for f in s.vfa.files],
                              name=f"vfa_{label}_wf")
            vfa_wfs[label] = vfa
            b.wf.connect(reg, "outputnode.vfa_transform", vfa, "inputnode.vfa_transform")
            if registration_target(s, b.ref) != b.ref:
                b.wf.connect(reg, "outputnode.t1w_transform", vfa, "inputnode.t1w_transform")
    return reg_wfs, vfa_wfs


def _region_images(b: _Build) -> dict:
    """{key: DerivativeSpec} of the region images (lesion dseg only with a lesion mask)."""
    plan, paths = b.plan, b.paths["participant"]
    images = {
        "lesion_dseg": DerivativeSpec(str(paths["lesion_dseg"]), {
            **_describe("lesion_dseg"), "SpatialReference": b.ref_uri,
            "Sources": [b.uri(plan.lesion_mask.path)] if plan.lesion_mask else []}),
        "control_dseg": DerivativeSpec(str(paths["control_dseg"]), {
            **_describe("control_dseg"), "SpatialReference": b.ref_uri,
            "Method": methods.control_regions_method(
                seed=CONTROL_SEED, diameter_mm=b.config.control_diameter_mm)}),
        "brain_mask": DerivativeSpec(str(paths["brain_mask"]), {
            **_describe("brain_mask"), "SpatialReference": b.ref_uri, "Type": "Brain",
            "Sources": [b.uri(b.ref)], "Method": methods.brain_extraction_method(TEMPLATE_REGISTRATION)}),
    }
    for key in D.TISSUE_IMAGES:
        images[key] = DerivativeSpec(str(paths[key]), {
            **_describe(key), "SpatialReference": b.ref_uri, "Sources": [b.uri(b.ref)],
            "Method": methods.tissue_classes_method()})
    if plan.lesion_mask is None:
        images.pop("lesion_dseg")
    return images


def _add_regions(b: _Build, reg_wfs, vfa_wfs):
    """Regions (needs the baseline pre-contrast T1 map) and the lesion table: (regions, table)."""
    plan, ref = b.plan, b.ref
    base_pre = plan.state(plan.baseline_session, None)
    lesions = init_regions_wf(reference_t1w=ref, lesion_mask=plan.lesion_mask, seed=CONTROL_SEED,
                              control_diameter_mm=b.config.control_diameter_mm,
                              ants_seed=b.config.ants_seed, mem_gb=b.mem["regions"],
                              name="regions_wf")
    table = init_lesion_table_wf(
        n_post=len([s for s in plan.states if s.is_post]), output_dir=str(b.output_dir),
        dataset_links=b.links, table_path=str(b.paths["participant"]["lesion_table"]),
        table_sidecar={}, images=specs_to_dicts(_region_images(b)), mem_gb=b.mem["sink"],
        name="lesion_table_wf")
    b.wf.connect([(lesions, table, [(f"outputnode.{f}", f"inputnode.{f}") for f in
                                    ("lesion_labels", "control_labels", "brain_mask",
                                     "regions", "probseg", "tissue_dseg")])])
    if base_pre is not None and state_label(base_pre) in vfa_wfs:
        b.wf.connect([(vfa_wfs[state_label(base_pre)], lesions,
                       [("outputnode.t1", "inputnode.t1"), ("outputnode.m0", "inputnode.m0")])])
    if plan.lesion_mask is not None:
        drawn_on = plan.lesion_mask.drawn_on or _pre_t1w(plan, plan.lesion_mask.session) or ref
        if Path(drawn_on) != ref:
            owner = next((s for s in plan.states if s.t1w == drawn_on), None)
            if owner is None:
                raise ValueError(f"lesion mask {plan.lesion_mask.path}: the T1w it was drawn on "
                                 f"({drawn_on}) is not part of the plan")
            b.wf.connect(reg_wfs[state_label(owner)], "outputnode.t1w_transform",
                         lesions, "inputnode.lesion_transform")
    return lesions, table


def lesion_row_base(plan, s, pre) -> dict:
    """The columns every lesion-table row of post state ``s`` (pre state ``pre``) starts with."""
    return {"participant_id": f"sub-{plan.participant}", "session_id": f"ses-{s.session}",
            "contrast_agent": s.agent,
            "pre_session_id": f"ses-{pre.session}" if pre else None,
            "session_order": plan.session_rank(s.session),
            "session_order_source": plan.session_order or None}


def _add_post_contrast(b: _Build, reg_wfs, vfa_wfs, lesions, table) -> list:
    """Post-contrast quantification of every post state (plan order): their sub-workflows."""
    plan, config, ref, wf = b.plan, b.config, b.ref, b.wf
    post_wfs = []
    for i, s in enumerate((s for s in plan.states if s.is_post), start=1):
        label = state_label(s)
        pre = plan.pre_state_for(s)
        post = init_post_contrast_wf(
            agent=s.agent, field_strength_t=s.vfa.field_strength_t if s.vfa else None,
            relaxivity_overrides=dict(config.relaxivity_overrides),
            row_base=lesion_row_base(plan, s, pre),
            se_normalization=se_normalization_for(config.se_normalization, s, pre),
            t1w_factors=_t1w_factors(plan, s, pre), mem_gb=b.mem["quant"], name=f"post_{label}_wf")
        post_wfs.append(post)
        if pre is not None and label in vfa_wfs and state_label(pre) in vfa_wfs:
            for st, end in ((s, "post"), (pre, "pre")):
                wf.connect([(vfa_wfs[state_label(st)], post,
                             [("outputnode.r1", f"inputnode.r1_{end}"),
                              ("outputnode.r1_var", f"inputnode.r1_{end}_var"),
                              ("outputnode.xfm_vfa", f"inputnode.r1_{end}_transform")])])
        if pre is not None and s.t1w is not None and pre.t1w is not None:
            for st, field in ((s, "t1w_post"), (pre, "t1w_pre")):
                setattr(post.inputs.inputnode, f"{field}_native", str(st.t1w))
                if st.t1w == ref:
                    setattr(post.inputs.inputnode, field, str(ref))
                else:
                    wf.connect([(reg_wfs[state_label(st)], post,
                                 [("outputnode.t1w_ref", f"inputnode.{field}"),
                                  ("outputnode.t1w_transform", f"inputnode.{field}_transform")])])
        wf.connect([(lesions, post, [("outputnode.lesion_labels", "inputnode.lesion_labels"),
                                     ("outputnode.control_labels", "inputnode.control_labels"),
                                     ("outputnode.regions", "inputnode.regions"),
                                     ("outputnode.healthy_brain", "inputnode.healthy_brain")]),
                    (post, table, [("outputnode.rows", f"inputnode.rows_{i}")])])
    return post_wfs


def _add_qa(b: _Build, reg_wfs, vfa_wfs, lesions) -> None:
    """``session_qa``: the QA table of every state and registration (interfaces/qa.py)."""
    plan = b.plan
    base_pre = plan.state(plan.baseline_session, None)
    node = pe.Node(SessionQA(participant_id=f"sub-{plan.participant}"),
                   name="session_qa", mem_gb=b.mem["regions"], n_procs=1)
    keep_warnings(node)
    sink = pe.Node(QATableSink(output_dir=str(b.output_dir), dataset_links=b.links,
                               table_path=str(b.paths["participant"]["qa_table"])),
                   name="ds_qa_table", mem_gb=b.mem["sink"], n_procs=1)
    b.wf.connect(node, "rows_file", sink, "rows_file")
    records, record_items, r1s, r1_items, t1w_items, t1w_xfms = [], [], [], [], [], []
    for s in plan.states:
        label = state_label(s)
        where = {"session_id": f"ses-{s.session}", "contrast_state": s.agent_label or "pre"}
        if s.t1w is not None:
            t1w_items.append({**where, "path": str(s.t1w), "transform": None})
            if s.t1w != b.ref:
                records.append((reg_wfs[label], "outputnode.t1w_qa"))
                record_items.append({**where, "item": "t1w_to_reference"})
                t1w_items[-1]["transform"] = len(t1w_xfms)
                t1w_xfms.append((reg_wfs[label], "outputnode.t1w_transform"))
        if label in vfa_wfs:
            records.append((reg_wfs[label], "outputnode.vfa_qa"))
            record_items.append({**where, "item": "vfa_to_t1w"})
            records.append((vfa_wfs[label], "outputnode.qa"))
            record_items.append({**where, "item": "vfa_fit"})
            r1s.append((vfa_wfs[label], "outputnode.r1"))
            r1_items.append({**where, "pre": not s.is_post, "baseline": s == base_pre,
                             "field_strength_t": s.vfa.field_strength_t})
    node.inputs.record_items = record_items
    node.inputs.r1_items = r1_items
    node.inputs.t1w_items = t1w_items
    for field, sources in (("record_files", records), ("r1_files", r1s),
                           ("t1w_transforms", t1w_xfms)):
        if not sources:
            continue
        merge = pe.Node(niu.Merge(len(sources)), name=f"merge_qa_{field}",
                        run_without_submitting=True)
        for i, (wf, out) in enumerate(sources, start=1):
            b.wf.connect(wf, out, merge, f"in{i}")
        b.wf.connect(merge, "out", node, field)
    b.wf.connect([(lesions, node, [("outputnode.probseg", "probseg_files"),
                                   ("outputnode.brain_mask", "brain_mask_file"),
                                   ("outputnode.lesion_labels", "lesion_labels_file")])])


def _t1w_factors(plan, post, pre) -> tuple[float, float]:
    """(post, pre) T1w factors to precise values (1.0 where a T1w is absent)."""
    return tuple(plan.intensity_factor(st.t1w) if st is not None and st.t1w is not None
                 else 1.0 for st in (post, pre))


def _add_sinks(b: _Build, reg_wfs, vfa_wfs, post_wfs) -> None:
    """One derivatives sink per state with outputs."""
    post_states = [s for s in b.plan.states if s.is_post]
    for s in b.plan.states:
        label = state_label(s)
        outputs = _state_outputs(s, b.plan, b.config, b.paths[label], b.uri, b.ref_uri)
        if not outputs:
            continue
        sink = pe.Node(DerivativesSink(output_dir=str(b.output_dir), dataset_links=b.links,
                                       outputs=specs_to_dicts(outputs)),
                       name=f"ds_{label}", mem_gb=b.mem["sink"], n_procs=1)
        if label in vfa_wfs:
            b.wf.connect([(vfa_wfs[label], sink, [
                ("outputnode.t1", "T1map"), ("outputnode.r1", "R1map"),
                ("outputnode.m0", "M0map"), ("outputnode.xfm_vfa", "xfm_vfa")])])
        if "xfm_t1w" in outputs:
            b.wf.connect(reg_wfs[label], "outputnode.t1w_transform", sink, "xfm_t1w")
        if "b1_factor" in outputs:
            b.wf.connect(vfa_wfs[label], "outputnode.b1_factor", sink, "b1_factor")
        if s.is_post:
            post = post_wfs[post_states.index(s)]
            for field, key in (("delta_r1", "delta_r1"), ("conc", "concentration"),
                               ("se", "enhancement")):
                if key in outputs:
                    b.wf.connect(post, f"outputnode.{field}", sink, key)
            if "concentration" in outputs:
                b.wf.connect(post, "outputnode.relaxivity", sink, "relaxivity")


def _pre_t1w(plan, session):
    st = plan.state(session, None)
    return st.t1w if st is not None else None


def _describe(key) -> dict:
    return D.describe(key)


def _state_outputs(s, plan, config, paths: dict, uri, ref_uri) -> dict:
    """Sink specs of one state: {field: DerivativeSpec}."""
    out = {}
    if s.vfa is not None:
        out.update(_vfa_outputs(s, plan, config, paths, uri, ref_uri))
    if "xfm_t1w" in paths:
        out["xfm_t1w"] = DerivativeSpec(str(paths["xfm_t1w"]), {
            **_describe("xfm_t1w"), "Sources": [uri(s.t1w), ref_uri],
            "SpatialReference": ref_uri, "Software": _ants_software(),
            "RegistrationSeed": int(config.ants_seed)})
    if s.is_post:
        out.update(_post_outputs(s, plan, config, paths, uri, ref_uri))
    return out


def _vfa_outputs(s, plan, config, paths: dict, uri, ref_uri) -> dict:
    """Specs of the VFA maps and the VFA transform of a state with a VFA set."""
    ref, vfa, out = plan.reference_t1w, s.vfa, {}
    vfa_sources = [uri(f) for f in vfa.files]
    b1_used = bool(vfa.b1_sources) and config.b1_correction == "auto"
    if b1_used:
        vfa_sources += [uri(f) for f in vfa.b1_sources]
    acq = D.allowed_metadata(D.read_sidecar(vfa.files[0]))
    acq.pop("RepetitionTime", None)
    vfa_meta = {
        **acq,
        "Sources": vfa_sources,
        "SpatialReference": ref_uri,
        "FlipAngle": [float(a) for a in vfa.flip_angles_deg],
        "RepetitionTimeExcitation": float(vfa.tr_s),
        "MagneticFieldStrength": vfa.field_strength_t,
        "EstimationMethod": methods.vfa_estimation_method(config.vfa_fit),
        "EstimationAlgorithm": f"bids_agquant.qmri.vfa.VFAModel(method={config.vfa_fit!r})",
        "B1Correction": bool(b1_used),
        "B1Map": (uri(vfa.b1map) if not vfa.b1_computed else [uri(f) for f in vfa.b1_files])
                 if b1_used else None,
        "B1Method": methods.b1_method(vfa.b1_method, dict(vfa.b1_params), vfa.b1_scale) if b1_used else None,
        "Resampling": methods.vfa_resampling(paths.get("xfm_vfa")),
    }
    for key in ("T1map", "R1map", "M0map"):
        out[key] = DerivativeSpec(str(paths[key]), {**_describe(key), **vfa_meta})
    if "b1_factor" in paths:
        out["b1_factor"] = DerivativeSpec(str(paths["b1_factor"]), {
            **_describe("b1_factor"), "Sources": [uri(f) for f in vfa.b1_files],
            "B1Method": vfa_meta["B1Method"]})
    out["xfm_vfa"] = DerivativeSpec(str(paths["xfm_vfa"]), {
        **_describe("xfm_vfa"),
        "Sources": [uri(vfa.files[-1]), uri(registration_target(s, ref))]
                   + ([uri(ref)] if registration_target(s, ref) != ref else []),
        "SpatialReference": ref_uri,
        "Software": _ants_software(), "RegistrationSeed": int(config.ants_seed)})
    return out


def _post_outputs(s, plan, config, paths: dict, uri, ref_uri) -> dict:
    """Specs of the delta R1, concentration and SE maps of a post-contrast state."""
    pre, vfa, out = plan.pre_state_for(s), s.vfa, {}
    if "delta_r1" in paths:
        r1_post = paths["R1map"]
        pre_paths = D.derivative_path("R1map", pre.vfa.files[0])
        out["delta_r1"] = DerivativeSpec(str(paths["delta_r1"]), {
            **_describe("delta_r1"), "Sources": [f"bids::{r1_post}", f"bids::{pre_paths}"],
            "PreContrastSources": [f"bids::{pre_paths}"],
            "PreContrastSession": f"ses-{pre.session}", "SpatialReference": ref_uri})
        out["concentration"] = DerivativeSpec(str(paths["concentration"]), {
            **_describe("concentration"), "Sources": [f"bids::{paths['delta_r1']}"],
            "ContrastAgent": s.agent, "ContrastAgentLabel": s.agent_label,
            "MagneticFieldStrength": vfa.field_strength_t if vfa else None,
            "PreContrastSession": f"ses-{pre.session}", "SpatialReference": ref_uri})
    if "enhancement" in paths:
        out["enhancement"] = DerivativeSpec(str(paths["enhancement"]), {
            **_describe("enhancement"), "Sources": [uri(s.t1w), uri(pre.t1w)],
            "PreContrastSession": f"ses-{pre.session}", "SpatialReference": ref_uri,
            "Resampling": methods.enhancement_resampling(),
            "IntensityNormalization": methods.intensity_normalization(
                se_normalization_for(config.se_normalization, s, pre),
                same_session=pre.session == s.session)})
    return out


def _ants_software() -> str:
    return methods.registration_software(software_versions(stack_only=True).get("antspyx"),
                                         REGISTRATION_SETTINGS)
