"""The fMRIPrep-style options (issue 15 item 5) on the smallest phantom, with the real pipeline:
--bids-filter-file, --resource-monitor, --reports-only, --boilerplate-only, --clean-workdir,
--[no-]stop-on-first-crash. One participant run (two of the phantom's three sessions selected by
a filter file, resource monitor on) is shared by the tests of this module."""
from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil

import pytest

from bids_agquant.bids import columns as C
from bids_agquant.cli.parser import WORKDIR_MARKER
from testkit import read_tsv, tree_state

SESSIONS = ["pre", "inj", "late"]
KEEP = ["pre", "inj"]
FILTERS = {q: {"session": KEEP} for q in ("t1w", "vfa", "b1")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(dataset, filter file, output dir, work dir, cwd, cwd listing after, exit code, stdout)
    of one participant run started in an empty current directory."""
    from bids_agquant import simulate
    from bids_agquant.cli.run import main

    root = tmp_path_factory.mktemp("options")
    ds = root / "bids"
    simulate.simulate_dataset(ds, preset="small", n_participants=1, sessions=SESSIONS, seed=5)
    filt = root / "filters.json"
    filt.write_text(json.dumps(FILTERS))
    out, work, cwd = root / "out", root / "work", root / "cwd"
    cwd.mkdir()
    before = tree_state(ds)
    with contextlib.chdir(cwd):
        code = main([str(ds), str(out), "participant", "-w", str(work), "--nprocs", "2",
                     "--bids-filter-file", str(filt), "--resource-monitor"])
    listing = sorted(p.name for p in cwd.iterdir())
    assert tree_state(ds) == before                     # nothing written into BIDS_DIR
    return dict(ds=ds, filt=filt, out=out, work=work, listing=listing, code=code)


def test_filter_file_runs_only_the_selected_sessions(run):
    assert run["code"] == 0
    out = run["out"]
    sessions = sorted(p.name for p in (out / "sub-01").glob("ses-*"))
    assert sessions == sorted(f"ses-{s}" for s in KEEP)
    rows = read_tsv(out / "sub-01" / "sub-01_desc-lesions_stats.tsv")
    assert rows and {r["session_id"] for r in rows} <= {f"ses-{s}" for s in KEEP}
    assert any(r["session_id"] == "ses-inj" for r in rows)


def test_print_plan_shows_the_filters_and_only_the_selected_sessions(run, run_cli, tmp_path):
    res = run_cli(run["ds"], tmp_path / "out", "participant", "--print-plan",
                  "--bids-filter-file", run["filt"])
    assert res.code == 0, res.err
    assert f"BIDS filters (--bids-filter-file {run['filt']}):" in res.out
    assert 't1w: session=["pre", "inj"]' in res.out
    assert "ses-inj AGuIX" in res.out and "ses-late AGuIX" not in res.out
    assert "ses-late: no T1w or VFA image passes --bids-filter-file; skipped" in res.out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, code, expected", [
    ({"bold": {"session": "pre"}}, 64, "unknown query 'bold'; use one of t1w, vfa, b1, "
                                       "lesion_mask"),
    ({"t1w": {"sesion": "pre"}}, 64, "t1w.sesion is not a BIDS entity"),
    ({"vfa": {"subject": "01"}}, 64, "vfa.subject cannot be filtered; use --participant-label"),
    ({"t1w": {"session": []}}, 64, "t1w.session: an empty list matches nothing"),
    ('{"t1w": {"session": "pre",}}', 64, "not valid JSON"),
    (["t1w"], 64, "holds a JSON list, not an object"),
])
def test_bad_filter_files_name_the_file_and_the_key(run, run_cli, tmp_path, content, code,
                                                    expected):
    filt = tmp_path / "f.json"
    filt.write_text(content if isinstance(content, str) else json.dumps(content))
    res = run_cli(run["ds"], tmp_path / "out", "participant", "--print-plan",
                  "--bids-filter-file", filt)
    assert res.code == code
    assert res.first_err_line.startswith(f"bids-agquant: error: --bids-filter-file {filt}: ")
    assert expected in res.first_err_line
    assert len(res.err.splitlines()) == 1


def test_missing_filter_file_is_missing_input(run, run_cli, tmp_path):
    res = run_cli(run["ds"], tmp_path / "out", "participant", "--bids-filter-file",
                  tmp_path / "nope.json")
    assert res.code == 66 and "nope.json: no such file" in res.first_err_line


def test_lesion_mask_filter_that_matches_no_mask_leaves_maps_only(run, run_cli, tmp_path):
    filt = tmp_path / "f.json"
    filt.write_text(json.dumps({"lesion_mask": {"session": "inj"}}))
    res = run_cli(run["ds"], tmp_path / "out", "participant", "--print-plan",
                  "--bids-filter-file", filt)
    assert res.code == 0, res.err
    assert "no lesion mask passing --bids-filter-file" in res.out
    assert "  lesions: none" in res.out


def test_resource_monitor_table_report_and_nothing_in_cwd(run):
    out, work = run["out"], run["work"]
    assert run["listing"] == []                     # no .proc-* / resource files in the cwd
    tsv = out / "logs" / "sub-01_resources.tsv"
    rows = read_tsv(tsv)
    assert list(rows[0]) == list(C.columns(C.RESOURCES_TABLE))
    assert json.loads(tsv.with_suffix(".json").read_text()) == C.dictionary(C.RESOURCES_TABLE)
    names = [r["node"] for r in rows]
    assert len(names) == len(set(names)) >= 10
    assert any("reg_" in n for n in names) and "lesion_table_wf.lesion_table" in names
    assert {r["status"] for r in rows} == {"ran"}
    assert all(float(r["duration_s"]) >= 0 for r in rows)
    memory = [float(r["mem_peak_mb"]) for r in rows if r["mem_peak_mb"] != "n/a"]
    assert memory and all(50 < m < 8192 for m in memory)   # a Python process with numpy
    assert 'id="resources"' in (out / "sub-01.html").read_text()
    assert (work / WORKDIR_MARKER).is_file()
    assert not list((work / "run").glob(".proc-*"))


def test_reports_only_rebuilds_the_report_and_nothing_else(run, run_cli):
    out = run["out"]
    report = out / "sub-01.html"
    old = report.read_text()
    report.unlink()
    before = {k: v for k, v in tree_state(out).items()}
    res = run_cli(run["ds"], out, "participant", "--reports-only", "-w", run["work"],
                  "--bids-filter-file", run["filt"])
    assert res.code == 0, res.err
    assert report.is_file()
    after = tree_state(out)
    assert {k: v for k, v in after.items() if k != "sub-01.html"} == before
    text = report.read_text()
    for anchor in ("plan", "lesions", "methods", "resources"):
        assert f'id="{anchor}"' in text and f'id="{anchor}"' in old
    assert "running sub_01_wf" not in res.out


def test_reports_only_refuses_without_outputs(run, run_cli, tmp_path):
    res = run_cli(run["ds"], tmp_path / "empty", "participant", "--reports-only")
    assert res.code == 66
    assert res.first_err_line.startswith("bids-agquant: error: --reports-only: no outputs of "
                                         "sub-01 in ")
    assert "run the participant level first" in res.first_err_line


def test_boilerplate_only_writes_the_run_methods_text_only(run, run_cli, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    res = run_cli(run["ds"], out, "participant", "--boilerplate-only", "-w", work,
                  "--bids-filter-file", run["filt"])
    assert res.code == 0, res.err
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["logs/CITATION.bib", "logs/CITATION.md"]
    assert not work.exists()
    # the same text the full run wrote for the same plans
    assert (out / "logs" / "CITATION.md").read_text() == \
        (run["out"] / "logs" / "CITATION.md").read_text()


def test_clean_workdir_refuses_a_folder_the_app_did_not_make(run, run_cli, tmp_path):
    work = tmp_path / "mine"
    (work / "sub_01_wf").mkdir(parents=True)
    (work / "notes.txt").write_text("keep me")
    before = tree_state(work)
    res = run_cli(run["ds"], tmp_path / "out", "participant", "-w", work, "--clean-workdir")
    assert res.code == 64
    assert f"{work} was not created by bids-agquant (no {WORKDIR_MARKER} in it)" in res.err
    assert tree_state(work) == before


def test_clean_workdir_never_deletes_a_folder_holding_the_output(run, run_cli, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / WORKDIR_MARKER).write_text("")
    res = run_cli(run["ds"], work / "out", "participant", "-w", work, "--clean-workdir")
    assert res.code == 64 and "is or contains OUTPUT_DIR" in res.first_err_line


def test_clean_workdir_with_print_plan_is_a_usage_error(run, run_cli, tmp_path):
    res = run_cli(run["ds"], tmp_path / "out", "participant", "--print-plan", "--clean-workdir")
    assert res.code == 64 and "--clean-workdir with --print-plan" in res.first_err_line


def test_participant_only_options_at_group_level(run, run_cli):
    res = run_cli(run["ds"], run["out"], "group", "--resource-monitor")
    assert res.code == 64 and "--resource-monitor: participant level only" in res.first_err_line


@pytest.mark.slow
def test_clean_workdir_recomputes_the_participant_and_keeps_the_rest(run, run_cli):
    """Last in the module: reruns the shared participant with an emptied cache."""
    work = run["work"]
    other = work / "sub_02_wf" / "kept.txt"
    other.parent.mkdir()
    other.write_text("another array task's cache")
    res = run_cli(run["ds"], run["out"], "participant", "-w", work, "--nprocs", "2",
                  "--bids-filter-file", run["filt"], "--clean-workdir")
    assert res.code == 0, res.err
    assert f"--clean-workdir: removed {work / 'sub_01_wf'}" in res.out
    assert not re.search(r"\] \S+: cached", res.out)       # nothing came from the cache
    assert other.read_text() == "another array task's cache"
    assert (work / WORKDIR_MARKER).is_file()


# --------------------------------------------------------------------------------------------
# --stop-on-first-crash: a real nipype workflow with a failing branch and an independent one


def _fail(x):
    raise ValueError(f"node refuses {x}")


def _inc(x):
    return x + 1


def _two_branches():
    """``bad -> g -> h`` (bad fails; first, with the most nodes waiting on it) and the
    independent ``a -> b``."""
    from nipype import Function, Node, Workflow

    wf = Workflow(name="opts_sub_01_wf")

    def node(name, fn):
        n = Node(Function(input_names=["x"], output_names=["x"], function=fn), name=name)
        return n
    bad, g, h, a, b = (node("bad", _fail), node("g", _inc), node("h", _inc), node("a", _inc),
                       node("b", _inc))
    bad.inputs.x = 1
    a.inputs.x = 1
    wf.connect([(bad, g, [("x", "x")]), (g, h, [("x", "x")]), (a, b, [("x", "x")])])
    return wf


@pytest.mark.parametrize("stop", [True, False])
def test_stop_on_first_crash(tmp_path, caplog, stop):
    from bids_agquant.cli.run import configure_nipype, execute_workflow
    from bids_agquant.config import Config
    from bids_agquant.errors import NodeFailedError
    from nipype import config as ncfg

    cfg = Config(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                 analysis_level="participant", work_dir=tmp_path / "work", nprocs=1,
                 stop_on_first_crash=stop)
    configure_nipype(cfg)
    assert ncfg.get("execution", "stop_on_first_crash") == str(stop).lower()
    caplog.set_level(logging.INFO, logger="bids_agquant")
    with pytest.raises(NodeFailedError) as info:
        execute_workflow(_two_branches(), cfg, "sub-01")
    assert info.value.exit_code == 1
    assert "opts_sub_01_wf.bad failed: ValueError: node refuses 1" in str(info.value)
    done = {r.getMessage().split("] ")[1].split(":")[0] for r in caplog.records
            if r.name == "bids_agquant" and r.getMessage().startswith("[")}
    # the independent branch runs only when the run does not stop at the first crash
    assert done == (set() if stop else {"a", "b"})


# --------------------------------------------------------------------------------------------
# nothing is sent anywhere: a participant run without any network


def _no_network_prefix() -> list[str] | None:
    import subprocess
    if shutil.which("unshare") is None:
        return None
    ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    return ["unshare", "-rn"] if ok else None


@pytest.mark.slow
def test_participant_run_without_network(run, tmp_path):
    """The real participant level in a network namespace with no interface but loopback
    (``unshare -rn``): exit 0, no telemetry or version check is needed (docs/cli.md)."""
    import subprocess
    import sys
    prefix = _no_network_prefix()
    if prefix is None:
        pytest.skip("unshare -rn (a user network namespace) is not available here")
    filt = tmp_path / "pre.json"
    filt.write_text(json.dumps({q: {"session": "pre"} for q in ("t1w", "vfa", "b1")}))
    out = tmp_path / "out"
    res = subprocess.run([*prefix, sys.executable, "-m", "bids_agquant", str(run["ds"]), str(out),
                          "participant", "--nprocs", "2", "--bids-filter-file", str(filt)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "sub-01" / "sub-01_desc-lesions_stats.tsv").is_file()
    assert (out / "sub-01.html").is_file()
