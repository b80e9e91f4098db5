"""Lesion and control regions, and the participant lesion table (builder only wires nodes).

``prepare_regions``: lesion labels (input mask, nearest neighbour into the reference space
through the transform of the T1w it was drawn on), RECIST diameters on the mask's own grid,
brain mask from the baseline pre-contrast T1 map, three control spheres of one size (fixed seed).
``lesion_table``: gathers the rows every post-contrast state computed and writes
``sub-<p>/sub-<p>_desc-lesions_stats.tsv`` (+ JSON data dictionary) and the region images.
"""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_agquant.interfaces.brain import BrainExtraction
from bids_agquant.interfaces.derivatives import LesionTableSink
from bids_agquant.interfaces.lesions import PrepareRegions
from bids_agquant.interfaces.notes import keep_warnings
from bids_agquant.qmri.lesions import CONTROL_DIAMETER_MM

__all__ = ["init_regions_wf", "init_lesion_table_wf"]


def init_regions_wf(*, reference_t1w, lesion_mask, seed: int, mem_gb: float,
                    control_diameter_mm: float = CONTROL_DIAMETER_MM, ants_seed: int = 42,
                    name: str = "regions_wf"):
    """``brain_extraction`` then ``prepare_regions``: brain mask and tissue classes, lesion
    labels, diameters and control regions.

    Inputs (``inputnode``): ``t1``, ``m0`` (baseline pre-contrast T1 and M0 maps, reference
    space; optional), ``lesion_transform`` (T_ref<-drawn-on T1w; unset when drawn on the
    reference).
    Outputs (``outputnode``): ``lesion_labels``, ``control_labels``, ``regions``, ``brain_mask``,
    ``probseg`` (GM, WM, CSF), ``tissue_dseg``, ``healthy_brain`` (parenchyma >= 10 mm from
    every lesion, for the SE intensity scale).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1", "m0", "lesion_transform"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["lesion_labels", "control_labels",
                                                       "regions", "brain_mask", "probseg",
                                                       "tissue_dseg", "healthy_brain"]),
                         name="outputnode")
    brain = pe.Node(BrainExtraction(reference_file=str(reference_t1w), seed=int(ants_seed)),
                    name="brain_extraction", mem_gb=mem_gb, n_procs=1)
    prepare = pe.Node(PrepareRegions(reference_file=str(reference_t1w), seed=seed,
                                     control_diameter_mm=float(control_diameter_mm)),
                      name="prepare_regions", mem_gb=mem_gb, n_procs=1)
    keep_warnings(prepare)
    if lesion_mask is not None:
        prepare.inputs.lesion_file = str(lesion_mask.path)
        prepare.inputs.lesion_kind = lesion_mask.kind
    wf.connect([
        (inputnode, brain, [("t1", "t1_file"), ("m0", "m0_file")]),
        (inputnode, prepare, [("t1", "t1_file"), ("lesion_transform", "lesion_transform")]),
        (brain, prepare, [("brain_mask_file", "brain_mask_file"),
                          ("probseg_files", "probseg_files"),
                          ("prior_parenchyma_file", "prior_parenchyma_file")]),
        (brain, outputnode, [("brain_mask_file", "brain_mask"), ("probseg_files", "probseg"),
                             ("dseg_file", "tissue_dseg")]),
        (prepare, outputnode, [("lesion_labels_file", "lesion_labels"),
                               ("control_labels_file", "control_labels"),
                               ("regions_file", "regions"),
                               ("healthy_mask_file", "healthy_brain")]),
    ])
    return wf


def init_lesion_table_wf(*, n_post: int, output_dir: str, dataset_links: dict, table_path: str,
                         table_sidecar: dict, images: dict, mem_gb: float,
                         name: str = "lesion_table_wf"):
    """``lesion_table``: the participant lesion table (+ dictionary) and the region images.

    Inputs (``inputnode``): ``lesion_labels``, ``control_labels``, ``brain_mask``, ``regions``
    (from :func:`init_regions_wf`) and ``rows_1`` .. ``rows_<n_post>`` (JSON rows of each
    post-contrast state, in plan order).
    """
    wf = pe.Workflow(name=name)
    row_fields = [f"rows_{i + 1}" for i in range(n_post)]
    inputnode = pe.Node(niu.IdentityInterface(fields=["lesion_labels", "control_labels",
                                                      "brain_mask", "regions", "probseg",
                                                      "tissue_dseg"] + row_fields),
                        name="inputnode")
    table = pe.Node(LesionTableSink(output_dir=str(output_dir), dataset_links=dict(dataset_links),
                                    table_path=str(table_path),
                                    table_sidecar=dict(table_sidecar), images=dict(images)),
                    name="lesion_table", mem_gb=mem_gb, n_procs=1)
    wf.connect([(inputnode, table, [("lesion_labels", "lesion_labels_file"),
                                    ("control_labels", "control_labels_file"),
                                    ("brain_mask", "brain_mask_file"),
                                    ("probseg", "probseg_files"),
                                    ("tissue_dseg", "tissue_dseg_file"),
                                    ("regions", "regions_file")])])
    if n_post:
        merge = pe.Node(niu.Merge(n_post), name="merge_rows", run_without_submitting=True)
        wf.connect([(inputnode, merge, [(f, f"in{i + 1}") for i, f in enumerate(row_fields)]),
                    (merge, table, [("out", "rows_files")])])
    return wf
