"""--use-plugin FILE: validation, defaults, Slurm availability, nipype execution config.

Runs without a Slurm cluster; real nipype workflows run with MultiProc/Linear here (the Slurm
runs are in test_slurm.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bids_agquant.cli import plugin as P
from bids_agquant.cli.plugin import PluginSettingsError, load_plugin_settings


def write(tmp_path: Path, text: str, name="plugin.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def fake_slurm_bin(tmp_path, monkeypatch):
    """A PATH holding executables named sbatch and squeue (only looked up, never run here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("sbatch", "squeue"):
        exe = bin_dir / cmd
        exe.write_text("#!/bin/sh\nexit 1\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_default_is_multiproc_with_nprocs(tmp_path):
    name, args = load_plugin_settings(None, 3, tmp_path)
    assert name == "MultiProc"
    assert args["n_procs"] == 3
    assert args["raise_insufficient"] is False
    assert 0 < args["poll_sleep_duration"] <= 0.5


def test_file_overrides_defaults_and_nprocs(tmp_path):
    path = write(tmp_path, "plugin: multiproc\nplugin_args: {n_procs: 5, memory_gb: 2}\n")
    name, args = load_plugin_settings(path, 2, tmp_path)
    assert name == "MultiProc"            # matched case-insensitively
    assert args["n_procs"] == 5           # the file is more specific than --nprocs
    assert args["memory_gb"] == 2
    assert args["raise_insufficient"] is False   # default kept


def test_linear_takes_no_args(tmp_path):
    assert load_plugin_settings(write(tmp_path, "plugin: Linear\n"), 2, tmp_path) == ("Linear", {})


@pytest.mark.parametrize("text, words", [
    ("plugin: SGE\n", ["SGE", "MultiProc", "SLURMGraph"]),
    ("plugin: [SLURM\n", ["not valid YAML", "line"]),
    ("plugin_args: {n_procs: 2}\n", ["plugin:"]),
    ("- plugin\n", ["plugin:"]),
    ("plugin: MultiProc\nplugin_arg: {n_procs: 2}\n", ["plugin_arg"]),
    ("plugin: MultiProc\nplugin_args: [1, 2]\n", ["mapping"]),
    ("plugin: MultiProc\nplugin_args: {n_procs: 0}\n", ["n_procs", ">= 1"]),
    ("plugin: MultiProc\nplugin_args: {n_procs: two}\n", ["n_procs"]),
    ("plugin: MultiProc\nplugin_args: {raise_insufficient: maybe}\n", ["raise_insufficient"]),
    ("plugin: MultiProc\nplugin_args: {sbatch_args: -p x}\n", ["sbatch_args", "MultiProc"]),
    ("plugin: Linear\nplugin_args: {n_procs: 2}\n", ["n_procs", "Linear"]),
])
def test_bad_files_name_file_and_problem(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(PluginSettingsError) as err:
        load_plugin_settings(path, 2, tmp_path)
    assert err.value.exit_code == 64
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path):
    with pytest.raises(PluginSettingsError, match="no such file"):
        load_plugin_settings(tmp_path / "nope.yml", 2, tmp_path)


def test_slurm_without_sbatch_says_what_to_do(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for plugin in ("SLURM", "SLURMGraph"):
        with pytest.raises(PluginSettingsError) as err:
            load_plugin_settings(write(tmp_path, f"plugin: {plugin}\n"), 2, tmp_path)
        assert "sbatch" in str(err.value) and "MultiProc" in str(err.value)


def test_slurm_defaults_and_logname(tmp_path, monkeypatch, fake_slurm_bin):
    monkeypatch.delenv("LOGNAME", raising=False)
    name, args = load_plugin_settings(write(tmp_path, "plugin: slurm\n"), 2, tmp_path)
    assert name == "SLURM"
    assert args["poll_sleep_duration"] >= 0.5     # gentle on slurmctld
    assert os.environ["LOGNAME"]                  # nipype's SLURM plugin reads it


def test_slurmgraph_keeps_user_sbatch_args_and_cancel_on_failed_dependency(tmp_path,
                                                                         fake_slurm_bin):
    text = yaml.safe_dump({"plugin": "SLURMGraph",
                           "plugin_args": {"sbatch_args": ["--partition=short", "--mem=2G"]}})
    name, args = load_plugin_settings(write(tmp_path, text), 2, tmp_path)
    assert name == "SLURMGraph"
    assert args["dont_resubmit_completed_jobs"] is True
    assert "--partition=short --mem=2G" in args["sbatch_args"]
    assert "--kill-on-invalid-dep=yes" in args["sbatch_args"]
    # a user's explicit choice is not doubled or overridden
    text = "plugin: SLURMGraph\nplugin_args: {sbatch_args: '--kill-on-invalid-dep=no'}\n"
    _, args = load_plugin_settings(write(tmp_path, text), 2, tmp_path)
    assert args["sbatch_args"] == "--kill-on-invalid-dep=no"


def test_template_path_resolved_or_refused(tmp_path, fake_slurm_bin):
    (tmp_path / "job.sh").write_text("#!/bin/bash\n#SBATCH --time=10\n")
    _, args = load_plugin_settings(
        write(tmp_path, "plugin: SLURM\nplugin_args: {template: job.sh}\n"), 2, Path("/"))
    assert args["template"] == str((tmp_path / "job.sh").resolve())
    # nipype would silently use a mistyped path as the script text itself
    with pytest.raises(PluginSettingsError, match="template file .*jbo.sh does not exist"):
        load_plugin_settings(write(tmp_path, "plugin: SLURM\nplugin_args: {template: jbo.sh}\n"),
                             2, tmp_path)
    # inline script text is fine
    text = yaml.safe_dump({"plugin": "SLURM", "plugin_args": {"template": "#!/bin/bash\nset -e\n"}})
    _, args = load_plugin_settings(write(tmp_path, text), 2, tmp_path)
    assert args["template"].startswith("#!/bin/bash")


def _failing_workflow(name="wf"):
    from nipype import Function, Node, Workflow

    def fail_on_three(x):
        if x == 3:
            raise ValueError("three is not allowed")
        return x

    def double(x):
        return 2 * x

    wf = Workflow(name=name)
    first = Node(Function(input_names=["x"], output_names=["y"], function=double), name="double")
    second = Node(Function(input_names=["x"], output_names=["y"], function=fail_on_three),
                  name="check")
    wf.connect(first, "y", second, "x")
    return wf, first


def test_run_workflow_results_and_crash_files_in_work_dir(tmp_path, monkeypatch):
    """A real nipype run: crash files land in WORK_DIR/crash, not the current directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    work = tmp_path / "work"
    for plugin_file in (None, write(tmp_path, "plugin: Linear\n")):
        name, args = load_plugin_settings(plugin_file, 2, work)
        wf, first = _failing_workflow(f"wf_{name}")
        first.inputs.x = 2                        # double -> 4: fine
        graph = P.run_workflow(wf, name, args, work)
        assert {n.name: n.result.outputs.y for n in graph.nodes()} == {"double": 4, "check": 4}

        wf, first = _failing_workflow(f"wf_{name}_fail")
        first.inputs.x = 1.5                      # double -> 3: the second node fails
        with pytest.raises(RuntimeError):
            P.run_workflow(wf, name, args, work)
    crashes = sorted((work / "crash").glob("crash-*check*.txt"))
    assert len(crashes) == 2
    assert "three is not allowed" in crashes[0].read_text()
    assert not list(cwd.iterdir())


def test_configure_workflow_reaches_every_node(tmp_path):
    wf, _ = _failing_workflow()
    name, args = load_plugin_settings(None, 2, tmp_path)
    nipype_args = P.configure_workflow(wf, name, args, tmp_path / "w")
    assert "poll_sleep_duration" not in nipype_args          # ours, not nipype's
    assert float(wf.config["execution"]["poll_sleep_duration"]) == args["poll_sleep_duration"]
    for node in wf._get_all_nodes():
        assert node.config["execution"]["crashdump_dir"] == str((tmp_path / "w" / "crash"))
    assert Path(wf.base_dir) == (tmp_path / "w").absolute()


def _stamp(label, log, after=None):
    """Append ``label`` to the file ``log`` (the order nodes ran in)."""
    with open(log, "a") as f:
        f.write(label + "\n")
    return label


def test_multiproc_starts_the_longest_chain_first(tmp_path):
    """A real MultiProc run on one process: a chain a -> b -> c -> d that everything at its end
    waits for, beside four independent nodes. nipype's topological order would run the four
    independents right after ``a``; ours runs each link of the chain as soon as it is ready
    (``d``, with nothing after it, ties with the independents and keeps its topological place)."""
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    log = tmp_path / "order.txt"
    wf = Workflow("order_wf", base_dir=str(tmp_path / "work"))

    def node(label):
        n = Node(Function(input_names=["label", "log", "after"], output_names=["out"],
                          function=_stamp), name=label)
        n.inputs.label, n.inputs.log = label, str(log)
        return n

    chain = [node(x) for x in ("a", "b", "c", "d")]
    for up, down in zip(chain, chain[1:]):
        wf.connect(up, "out", down, "after")
    for x in ("x1", "x2", "x3", "x4"):
        wf.add_nodes([node(x)])
    name, args = load_plugin_settings(None, 1, tmp_path / "work")
    P.run_workflow(wf, name, args, tmp_path / "work")
    order = log.read_text().split()
    assert order[:3] == ["a", "b", "c"], order
    assert sorted(order[3:]) == ["d", "x1", "x2", "x3", "x4"]
    assert P.downstream_counts(wf._graph, [n for n in wf._graph.nodes() if n.name == "a"]) == [3]
