"""VFA T1 mapping of one state and post-contrast quantification (builders only wire nodes).

Fit in native VFA space, then resample R1 and M0 once into the reference space through the
composed VFA -> T1w -> reference transform (see :mod:`bids_agquant.interfaces.vfa` for why);
the same for pre- and post-contrast states.
"""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_agquant.interfaces.b1 import ComputeB1Factor
from bids_agquant.interfaces.quantify import QuantifyPostContrast
from bids_agquant.interfaces.vfa import FitVFA, MapsToReference
from bids_agquant.interfaces.notes import keep_warnings

__all__ = ["init_vfa_wf", "init_post_contrast_wf"]


def init_vfa_wf(*, state, reference_t1w, method: str, b1_correction: str, mem_fit_gb: float,
                mem_resample_gb: float, intensity_factors=None, name: str = "vfa_wf"):
    """``fit_vfa`` (native space) -> ``maps_to_ref`` (reference space); with the images of a B1
    mapping method (not a TB1map), ``b1_factor`` computes the B1+ factor map ``fit_vfa`` uses.

    ``intensity_factors``: per flip image, the plan's factor to precise values
    (:meth:`~bids_agquant.bids.plan.ParticipantPlan.intensity_factor`); set on the node only
    when one differs from 1, so the node (and its cache) is unchanged for other data.

    Inputs (``inputnode``): ``t1w_transform`` (T_ref<-T1w, unset when the VFA set was registered
    to the reference itself), ``vfa_transform`` (T_T1w<-VFA).
    Outputs (``outputnode``): ``r1``, ``t1``, ``m0`` (reference space), ``xfm_vfa`` (composed),
    ``r1_var`` (variance of R1 on the native VFA grid, for the region means' standard errors),
    ``b1_factor`` (only with a B1 method's images: the computed factor map, on their grid),
    ``qa`` (JSON of the fit's QA metrics, :mod:`bids_agquant.qmri.qa`).
    """
    vfa = state.vfa
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w_transform", "vfa_transform"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["r1", "t1", "m0", "xfm_vfa",
                                                       "b1_factor", "r1_var", "qa"]),
                         name="outputnode")
    fit = pe.Node(FitVFA(in_files=[str(f) for f in vfa.files],
                         flip_angles_deg=[float(a) for a in vfa.flip_angles_deg],
                         tr_s=float(vfa.tr_s), method=method),
                  name="fit_vfa", mem_gb=mem_fit_gb, n_procs=1)
    keep_warnings(fit)
    if intensity_factors is not None and any(f != 1.0 for f in intensity_factors):
        fit.inputs.intensity_factors = [float(f) for f in intensity_factors]
    if vfa.b1map is not None and b1_correction == "auto":
        fit.inputs.b1map = str(vfa.b1map)
        fit.inputs.b1_scale = float(vfa.b1_scale)
    elif vfa.b1_computed and b1_correction == "auto":
        b1 = pe.Node(ComputeB1Factor(in_files=[str(f) for f in vfa.b1_files],
                                     roles=list(vfa.b1_roles), method=vfa.b1_method,
                                     params=dict(vfa.b1_params)),
                     name="b1_factor", mem_gb=mem_fit_gb, n_procs=1)
        fit.inputs.b1_method = vfa.b1_method
        wf.connect([(b1, fit, [("b1_file", "b1map")]),
                    (b1, outputnode, [("b1_file", "b1_factor")])])
    to_ref = pe.Node(MapsToReference(reference_file=str(reference_t1w)), name="maps_to_ref",
                     mem_gb=mem_resample_gb, n_procs=1)
    wf.connect([
        (inputnode, to_ref, [("t1w_transform", "t1w_transform"),
                             ("vfa_transform", "vfa_transform")]),
        (fit, to_ref, [("r1_file", "r1_file"), ("m0_file", "m0_file")]),
        (fit, outputnode, [("r1_var_file", "r1_var"), ("qa_file", "qa")]),
        (to_ref, outputnode, [("r1_file", "r1"), ("t1_file", "t1"), ("m0_file", "m0"),
                              ("transform_file", "xfm_vfa")]),
    ])
    return wf


def init_post_contrast_wf(*, agent: str, field_strength_t, relaxivity_overrides: dict,
                          row_base: dict, mem_gb: float, se_normalization: str = "off",
                          t1w_factors=(1.0, 1.0), name: str = "post_wf"):
    """``quantify``: delta R1, [Gd], SE and the lesion-table rows of one post-contrast state.

    Inputs: ``r1_post``, ``r1_pre``, ``t1w_post``, ``t1w_pre`` (reference space; any pair may be
    left unset, its outputs are then absent), ``lesion_labels``, ``control_labels``, ``regions``,
    ``healthy_brain`` (for ``se_normalization="brain"``: the post-contrast T1w is divided by its
    scale over the pre-contrast one in that mask before SE).
    The standard errors of the region means need, per R1 map, its native variance
    (``r1_post_var``, ``r1_pre_var``) and transform into the reference (``r1_*_transform``), and
    per T1w its native image (``t1w_*_native``) and transform (``t1w_*_transform``, unset for
    the reference T1w itself); without them those columns are n/a.
    ``t1w_factors``: (post, pre) factors of the T1w images to precise values (set on the node
    only when not 1).
    Outputs: ``delta_r1``, ``conc``, ``se``, ``rows``, ``relaxivity``.
    """
    wf = pe.Workflow(name=name)
    noise = ["r1_post_var", "r1_post_transform", "r1_pre_var", "r1_pre_transform",
             "t1w_post_native", "t1w_post_transform", "t1w_pre_native", "t1w_pre_transform"]
    fields = ["r1_post", "r1_pre", "t1w_post", "t1w_pre", "lesion_labels", "control_labels",
              "regions", "healthy_brain"] + noise
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["delta_r1", "conc", "se", "rows",
                                                       "relaxivity"]), name="outputnode")
    quant = pe.Node(QuantifyPostContrast(agent=agent, field_strength_t=field_strength_t,
                                         relaxivity_overrides=dict(relaxivity_overrides),
                                         row_base=dict(row_base),
                                         se_normalization=se_normalization),
                    name="quantify", mem_gb=mem_gb, n_procs=1)
    keep_warnings(quant)
    for factor, trait in zip(t1w_factors, ("t1w_post_factor", "t1w_pre_factor")):
        if factor != 1.0:
            setattr(quant.inputs, trait, float(factor))
    wf.connect([
        (inputnode, quant, [("r1_post", "r1_post"), ("r1_pre", "r1_pre"),
                            ("t1w_post", "t1w_post"), ("t1w_pre", "t1w_pre"),
                            ("lesion_labels", "lesion_labels_file"),
                            ("control_labels", "control_labels_file"),
                            ("regions", "regions_file"),
                            ("healthy_brain", "healthy_mask_file")]
         + [(f, f) for f in noise]),
        (quant, outputnode, [("delta_r1_file", "delta_r1"), ("conc_file", "conc"),
                             ("se_file", "se"), ("rows_file", "rows"),
                             ("relaxivity", "relaxivity")]),
    ])
    return wf
