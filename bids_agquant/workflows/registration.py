"""Registration of one contrast state into the reference space (builder only wires nodes).

Per state (``ContrastState`` of the plan):

* ``t1w_to_ref``: rigid registration of the state's T1w onto the reference T1w (the baseline
  pre-contrast T1w); also resamples the T1w onto the reference grid (linear) for the SE maps.
  Absent for the reference itself.
* ``vfa_to_t1w``: rigid registration of the VFA set (its highest flip angle image, the most
  T1-weighted, registers best against a T1w) onto the T1w of the same state (same session, same
  contrast), or onto the reference when the state has no T1w. The VFA -> T1w -> reference
  transforms are composed later so that every VFA map is resampled once.
"""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_agquant.interfaces.registration import RigidRegistration

__all__ = ["init_registration_wf", "registration_target"]


def registration_target(state, reference_t1w):
    """The T1w the state's VFA set is registered to (its own T1w, else the reference)."""
    return state.t1w if state.t1w is not None else reference_t1w


def init_registration_wf(*, state, reference_t1w, seed: int, mem_gb: float,
                         name: str = "registration_wf"):
    """Registration nodes of one state.

    Outputs (``outputnode``): ``t1w_ref`` (the state's T1w on the reference grid),
    ``t1w_transform`` (T_ref<-T1w), ``vfa_transform`` (T_target<-VFA, target =
    :func:`registration_target`), ``t1w_qa``, ``vfa_qa`` (JSON of each registration's QA
    metric, :mod:`bids_agquant.qmri.qa`). Fields that do not apply to the state stay unset: the state's
    T1w is the reference (no t1w_* outputs), no T1w, or no VFA set.
    """
    wf = pe.Workflow(name=name)
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_ref", "t1w_transform",
                                                       "vfa_transform", "t1w_qa", "vfa_qa"]),
                         name="outputnode")
    if state.t1w is not None and state.t1w != reference_t1w:
        t1w_to_ref = pe.Node(RigidRegistration(target_file=str(reference_t1w),
                                               source_files=[str(state.t1w)], seed=seed,
                                               resample_source=True),
                             name="t1w_to_ref", mem_gb=mem_gb, n_procs=1)
        wf.connect([(t1w_to_ref, outputnode, [("resampled_file", "t1w_ref"),
                                              ("transform_file", "t1w_transform"),
                                              ("qa_file", "t1w_qa")])])
    if state.vfa is not None:
        vfa_to_t1w = pe.Node(RigidRegistration(
            target_file=str(registration_target(state, reference_t1w)),
            source_files=[str(state.vfa.files[-1])], source_as_fixed=True, seed=seed),
            name="vfa_to_t1w", mem_gb=mem_gb, n_procs=1)
        wf.connect([(vfa_to_t1w, outputnode, [("transform_file", "vfa_transform"),
                                              ("qa_file", "vfa_qa")])])
    if not wf._graph.nodes():
        wf.add_nodes([outputnode])
    return wf
