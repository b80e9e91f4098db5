"""Running a nipype workflow from the CLI: progress lines, resume from the work dir, node failures.

A three-node workflow of nipype Function nodes runs for real with the configured plugin
(cli.plugin), so the status callback, crash files and the exit path are nipype's own.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bids_agquant.errors import NodeFailedError
from bids_agquant.cli.run import configure_nipype, execute_workflow
from bids_agquant.config import Config


def _double(x):
    return 2 * x


def _fail_if_big(x):
    if x > 10:
        raise ValueError(f"value {x} is too big for this node")
    return x


def chain(fail=False):
    from nipype import Function, Node, Workflow

    wf = Workflow(name="demo_sub_01_wf")
    a = Node(Function(input_names=["x"], output_names=["x"], function=_double), name="double_a")
    a.inputs.x = 3
    b = Node(Function(input_names=["x"], output_names=["x"], function=_double), name="double_b")
    c = Node(Function(input_names=["x"], output_names=["x"],
                      function=_fail_if_big if fail else _double), name="check_c")
    wf.connect([(a, b, [("x", "x")]), (b, c, [("x", "x")])])
    return wf


@pytest.fixture
def config(tmp_path):
    cfg = Config(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                 analysis_level="participant", work_dir=tmp_path / "work", nprocs=1)
    configure_nipype(cfg)
    return cfg


@pytest.fixture
def progress_log(caplog):
    caplog.set_level(logging.INFO, logger="bids_agquant")
    return caplog


def progress_lines(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "bids_agquant" and r.getMessage().startswith("[")]


def test_progress_line_per_node_then_cached_on_rerun(config, progress_log):
    progress = execute_workflow(chain(), config, "sub-01")
    assert progress.done == 3 and progress.failed == []
    lines = progress_lines(progress_log)
    assert [ln.split("]")[0] for ln in lines] == ["[1/3", "[2/3", "[3/3"]
    assert all(" done in " in ln and ln.endswith(" s") for ln in lines)
    assert any("double_a: done in" in ln for ln in lines)
    # a rerun with the same work dir resumes: every node comes from the cache
    progress_log.clear()
    execute_workflow(chain(), config, "sub-01")
    lines = progress_lines(progress_log)
    assert len(lines) == 3 and all(ln.endswith(": cached") for ln in lines)
    assert (config.work_dir / "demo_sub_01_wf" / "double_a").is_dir()


def test_failing_node_names_node_reason_and_crash_file(config):
    with pytest.raises(NodeFailedError) as info:
        execute_workflow(chain(fail=True), config, "sub-01")
    err = info.value
    assert err.exit_code == 1
    text = str(err)
    assert text.startswith("sub-01: demo_sub_01_wf.check_c failed: ValueError: value 12 is too "
                           "big for this node; crash file ")
    crash = Path(text.split("crash file ")[1].split(";")[0])
    assert crash.is_file() and crash.parent == config.crashdump_dir
    assert crash.suffix == ".txt" and "check_c" in crash.name
    assert "same -w" in text


def _refuse_data(x):
    from bids_agquant.errors import BadDataError
    raise BadDataError("x_TB1map.nii.gz: the B1 map covers 30 % of the head voxels",
                       fix="acquire a B1 map covering the head")


def test_a_node_refusing_its_data_is_exit_65(config):
    """A data problem only a node can see (raised as BadDataError inside the node, e.g. a B1
    map's coverage of the head) ends with the data exit code and the node's own message."""
    from nipype import Function, Node, Workflow

    from bids_agquant.errors import BadDataError

    wf = Workflow(name="refuse_wf")
    node = Node(Function(input_names=["x"], output_names=["x"], function=_refuse_data),
                name="fit_vfa")
    node.inputs.x = 1
    wf.add_nodes([node])
    with pytest.raises(BadDataError) as info:
        execute_workflow(wf, config, "sub-01")
    assert info.value.exit_code == 65
    text = str(info.value)
    assert text.startswith("sub-01: refuse_wf.fit_vfa: x_TB1map.nii.gz: the B1 map covers 30 % "
                           "of the head voxels; acquire a B1 map covering the head; crash file ")
