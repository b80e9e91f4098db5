"""nipype's SLURM and SLURMGraph plugins on a real Slurm cluster (scripts/slurm_local.sh).

Skipped unless a cluster answers (SLURM_CONF set, sinfo works). CI::

    eval "$(scripts/slurm_local.sh start)"; pytest -m slurm tests/hpc; scripts/slurm_local.sh stop
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bids_agquant.cli.plugin import load_plugin_settings, run_workflow

pytestmark = pytest.mark.slurm


def _square_in_job(x):
    import os
    return x * x, os.environ.get("SLURM_JOB_ID", "")


def _total_in_job(values, offset):
    import os
    if offset < 0:
        raise ValueError("negative offset")
    return sum(values) + offset, os.environ.get("SLURM_JOB_ID", "")


def tiny_workflow(name: str, offset: int = 1):
    """x in (1, 2, 3) -> x**2 (MapNode, one job) -> sum + offset; every node reports its job."""
    from nipype import Function, MapNode, Node, Workflow

    wf = Workflow(name=name)
    wf.config["execution"]["remove_unnecessary_outputs"] = "false"   # keep the "job" outputs
    squares = MapNode(Function(input_names=["x"], output_names=["y", "job"],
                               function=_square_in_job), iterfield=["x"], name="squares")
    squares.inputs.x = [1, 2, 3]
    total = Node(Function(input_names=["values", "offset"], output_names=["total", "job"],
                          function=_total_in_job), name="total")
    total.inputs.offset = offset
    wf.connect(squares, "y", total, "values")
    return wf


def plugin_file(tmp_path: Path, plugin: str) -> Path:
    path = tmp_path / f"{plugin}.yml"
    path.write_text(f"plugin: {plugin}\nplugin_args:\n  sbatch_args: '--time=10'\n")
    return path


def queued_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def results(graph) -> dict:
    out = {}
    for node in graph.nodes():
        outputs = node.result.outputs          # TraitedSpec for a Node, Bunch for a MapNode
        out[node.name] = outputs.get() if hasattr(outputs, "trait_get") else outputs.dictcopy()
    return out


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph"])
def test_tiny_workflow_through_slurm(slurm_cluster, tmp_path, plugin):
    name, args = load_plugin_settings(plugin_file(tmp_path, plugin), 2, tmp_path / "work")
    assert name == plugin
    graph = run_workflow(tiny_workflow("tiny"), name, args, tmp_path / "work")
    out = results(graph)
    assert out["total"]["total"] == 1 + 4 + 9 + 1
    assert out["squares"]["y"] == [1, 4, 9]
    # every node ran inside a Slurm job, each its own job
    jobs = [out["total"]["job"], *out["squares"]["job"]]
    assert all(job.isdigit() for job in jobs), jobs
    assert out["total"]["job"] not in out["squares"]["job"]
    # run_workflow returns only when this run's jobs have left the queue
    assert not set(jobs) & set(queued_jobs())

    # same numbers as MultiProc
    mp_name, mp_args = load_plugin_settings(None, 2, tmp_path / "work_mp")
    mp = results(run_workflow(tiny_workflow("tiny"), mp_name, mp_args, tmp_path / "work_mp"))
    assert mp["total"]["total"] == out["total"]["total"]
    assert mp["total"]["job"] == ""

    # a rerun on the same work dir submits nothing: the cached results (same job ids) come back
    batch = tmp_path / "work" / "tiny" / "batch"
    scripts_before = sorted(batch.glob("batchscript_*.sh"))
    again = results(run_workflow(tiny_workflow("tiny"), name, args, tmp_path / "work"))
    assert again["total"] == out["total"]
    if plugin == "SLURM":
        assert sorted(batch.glob("batchscript_*.sh")) == scripts_before
    else:
        newest = max(batch.glob("submit_jobs.sh"), key=lambda p: p.stat().st_mtime)
        assert "sbatch" not in newest.read_text()


def test_slurmgraph_failure_is_reported_and_dependants_cancelled(slurm_cluster, tmp_path):
    name, args = load_plugin_settings(plugin_file(tmp_path, "SLURMGraph"), 2, tmp_path / "work")
    wf = tiny_workflow("broken", offset=-1)
    with pytest.raises(RuntimeError, match=r"broken\.total") as err:
        run_workflow(wf, name, args, tmp_path / "work")
    crash = list((tmp_path / "work" / "crash").glob("crash-*total*.txt"))
    assert crash and "negative offset" in crash[0].read_text()
    assert str(crash[0]) in str(err.value)
    # nothing of this run is left in the queue (our jobs carry the run's comment)
    out = subprocess.run(["squeue", "-h", "-o", "%k"], capture_output=True, text=True, check=True)
    assert "bids_agquant:" not in out.stdout


def test_slurm_plugin_failure_is_reported(slurm_cluster, tmp_path):
    name, args = load_plugin_settings(plugin_file(tmp_path, "SLURM"), 2, tmp_path / "work")
    with pytest.raises(RuntimeError):
        run_workflow(tiny_workflow("broken", offset=-1), name, args, tmp_path / "work")
    crash = list((tmp_path / "work" / "crash").glob("crash-*total*.txt"))
    assert crash and "negative offset" in crash[0].read_text()
