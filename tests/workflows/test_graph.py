"""The participant graph adapts to what a plan holds (built, not run: fast)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_agquant.bids.plan import ContrastState, LesionMask, ParticipantPlan, VFASet
from bids_agquant.config import Config
from bids_agquant.workflows.participant import init_participant_wf, participant_outputs


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    return path


def _state(root, ses, agent=None, t1w=True, vfa=True, pre_session=None):
    ce = f"_ce-{agent}" if agent else ""
    anat = root / f"sub-01/ses-{ses}/anat"
    return ContrastState(
        session=ses, agent=agent, agent_label=agent,
        t1w=_img(anat / f"sub-01_ses-{ses}{ce}_T1w.nii.gz") if t1w else None,
        vfa=VFASet(files=tuple(_img(anat / f"sub-01_ses-{ses}{ce}_flip-{i}_VFA.nii.gz")
                               for i in (1, 2)),
                   flip_angles_deg=(3.0, 15.0), tr_s=0.006, field_strength_t=3.0) if vfa else None,
        pre_session=pre_session)


@pytest.fixture
def plan_parts(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    base = _state(tmp_path, "D0")
    dot = _state(tmp_path, "D0", "Dotarem", pre_session="D0")
    d1 = _state(tmp_path, "D1", "AGuIX", t1w=False)             # VFA only: no SE
    d8 = _state(tmp_path, "D8", "AGuIX", vfa=False)             # T1w only: no concentration
    return tmp_path, (base, dot, d1, d8)


def _names(wf):
    """Dotted node names below the participant workflow (identity nodes left out)."""
    out = set()

    def walk(w, prefix):
        for node in w._graph.nodes():
            if isinstance(node, type(wf)):
                walk(node, f"{prefix}{node.name}.")
            elif type(node.interface).__name__ != "IdentityInterface":
                out.add(prefix + node.name)
    walk(wf, "")
    return out


def test_graph_follows_the_plan(plan_parts):
    root, states = plan_parts
    mask = LesionMask(path=_img(root / "derivatives/m/sub-01/ses-D0/anat/"
                                       "sub-01_ses-D0_label-metastasis_mask.nii.gz"),
                      kind="mask", session="D0", drawn_on=states[0].t1w)
    (root / "derivatives/m/dataset_description.json").write_text("{}")
    plan = ParticipantPlan(participant="01", baseline_session="D0",
                           reference_t1w=states[0].t1w, states=states, lesion_mask=mask)
    config = Config(bids_dir=root, output_dir=root.parent / "out", analysis_level="participant",
                    work_dir=root.parent / "work")
    names = _names(init_participant_wf(plan, config))
    assert "reg_D0_pre_wf.t1w_to_ref" not in names              # the reference itself
    assert {"reg_D0_Dotarem_wf.t1w_to_ref", "reg_D8_AGuIX_wf.t1w_to_ref"} <= names
    assert "reg_D1_AGuIX_wf.t1w_to_ref" not in names            # no T1w
    assert {f"vfa_{s}_wf.fit_vfa" for s in ("D0_pre", "D0_Dotarem", "D1_AGuIX")} <= names
    assert "vfa_D8_AGuIX_wf.fit_vfa" not in names
    assert {f"post_{s}_wf.quantify" for s in ("D0_Dotarem", "D1_AGuIX", "D8_AGuIX")} <= names
    assert {"regions_wf.prepare_regions", "lesion_table_wf.lesion_table"} <= names
    outs = participant_outputs(plan, config)
    assert "enhancement" not in outs["D1_AGuIX"] and "concentration" in outs["D1_AGuIX"]
    assert "concentration" not in outs["D8_AGuIX"] and "enhancement" in outs["D8_AGuIX"]
    assert "xfm_vfa" in outs["D1_AGuIX"] and "xfm_t1w" not in outs["D1_AGuIX"]
    # every node is single-threaded and declares memory
    for node in init_participant_wf(plan, config)._get_all_nodes():
        assert node.n_procs == 1 and node.mem_gb > 0


def test_graph_without_lesion_mask_still_has_controls(plan_parts):
    root, states = plan_parts
    plan = ParticipantPlan(participant="01", baseline_session="D0",
                           reference_t1w=states[0].t1w, states=states[:2], lesion_mask=None)
    config = Config(bids_dir=root, output_dir=root.parent / "out", analysis_level="participant")
    wf = init_participant_wf(plan, config)
    names = _names(wf)
    assert "regions_wf.prepare_regions" in names
    table = wf.get_node("lesion_table_wf").get_node("lesion_table")
    assert "lesion_dseg" not in table.inputs.images and "control_dseg" in table.inputs.images
