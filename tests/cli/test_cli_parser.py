"""The command line: options, their normalisation, and usage errors (exit 64, one line)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bids_agquant.errors import UsageError
from bids_agquant.cli.parser import build_parser, parse_args
from bids_agquant.cli.run import build_config


def test_every_option_parses_into_the_config(tmp_path):
    args = parse_args([
        "bids", "out", "participant",
        "--participant-label", "sub-01", "02", "--participant_label", "03",
        "--session-label", "ses-D1", "day8",
        "--baseline-session", "ses-D0",
        "--lesion-masks", str(tmp_path / "masks"),
        "--skip-bids-validation",
        "--relaxivity", "AGuIX=9.1", "--relaxivity", "Gadovist=4.5",
        "--b1-correction", "off", "--vfa-fit", "linear",
        "--nprocs", "3", "--omp-nthreads", "2", "--use-plugin", "plugin.yml",
        "-w", str(tmp_path / "work"), "--print-plan", "-vv",
    ])
    config = build_config(args)
    assert config.participant_labels == ("01", "02", "03")
    assert config.session_labels == ("D1", "day8")
    assert config.baseline_session == "D0"
    assert config.lesion_masks_dir == tmp_path / "masks"
    assert config.skip_bids_validation
    assert config.relaxivity_overrides == {"AGuIX": 9.1, "Gadovist": 4.5}
    assert (config.b1_correction, config.vfa_fit) == ("off", "linear")
    assert (config.nprocs, config.omp_nthreads) == (3, 2)
    assert config.plugin_file == Path.cwd() / "plugin.yml"
    assert config.work_dir == tmp_path / "work"
    assert config.print_plan and config.verbose == 2
    assert config.bids_dir.is_absolute() and config.output_dir == Path.cwd() / "out"


def test_defaults(tmp_path):
    config = build_config(parse_args([str(tmp_path / "b"), str(tmp_path / "o"), "group"]))
    assert config.analysis_level == "group"
    assert config.work_dir == tmp_path / "o" / ".work"          # never inside BIDS_DIR
    assert config.nprocs == len(os.sched_getaffinity(0))
    assert (config.b1_correction, config.vfa_fit, config.omp_nthreads) == ("auto", "nonlinear", 1)
    assert config.participant_labels == () and config.relaxivity_overrides == {}
    assert not config.print_plan and config.verbose == 0


def test_every_option_is_documented_in_docs_cli_md():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for action in build_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and "_" not in flag:
                assert f"`{flag}" in doc, f"{flag} is not documented in docs/cli.md"


@pytest.mark.parametrize("argv, option", [
    ([], "the following arguments are required"),
    (["b", "o"], "analysis_level"),
    (["b", "o", "everything"], "analysis_level"),
    (["b", "o", "participant", "--nprocs", "0"], "--nprocs"),
    (["b", "o", "participant", "--nprocs", "two"], "--nprocs"),
    (["b", "o", "participant", "--omp-nthreads", "-1"], "--omp-nthreads"),
    (["b", "o", "participant", "--relaxivity", "AGuIX"], "--relaxivity"),
    (["b", "o", "participant", "--relaxivity", "AGuIX=fast"], "--relaxivity"),
    (["b", "o", "participant", "--relaxivity", "AGuIX=0"], "--relaxivity"),
    (["b", "o", "participant", "--relaxivity", "AGuIX=nan"], "--relaxivity"),
    (["b", "o", "participant", "--relaxivity", "=3"], "--relaxivity"),
    (["b", "o", "participant", "--relaxivity", "AGuIX=8", "--relaxivity", "AGuIX=9"], "twice"),
    (["b", "o", "participant", "--b1-correction", "maybe"], "--b1-correction"),
    (["b", "o", "participant", "--vfa-fit", "quadratic"], "--vfa-fit"),
    (["b", "o", "participant", "--participant-label", "../02"], "--participant-label"),
    (["b", "o", "participant", "--participant-label", "sub-01/ses-1"], "--participant-label"),
    (["b", "o", "participant", "--participant-label", "/etc"], "--participant-label"),
    (["b", "o", "participant", "--session-label", "D_1"], "--session-label"),
    (["b", "o", "participant", "--baseline-session", ".."], "--baseline-session"),
    (["b", "o", "participant", "--participant"], "unrecognized"),   # no abbreviations
    (["b", "o", "participant", "--frobnicate"], "unrecognized"),
])
def test_usage_errors_exit_64_with_one_line(run_cli, argv, option):
    res = run_cli(*argv)
    assert res.code == 64
    assert res.err.count("\n") == 1, res.err                        # exactly one line
    assert res.first_err_line.startswith("bids-agquant: error: ")
    assert option in res.first_err_line
    message, _, fix = res.first_err_line.partition("; ")
    assert fix.startswith(("see 'bids-agquant --help'", "pass ")), res.first_err_line  # what to do
    assert "Traceback" not in res.err + res.out


def test_usage_error_traceback_only_with_verbose(run_cli):
    res = run_cli("b", "o", "participant", "--participant-label", "../x", "-v")
    assert res.code == 64
    assert res.first_err_line.startswith("bids-agquant: error: --participant-label")
    assert "Traceback" in res.err


def test_parse_args_raises_usage_error_object():
    with pytest.raises(UsageError) as info:
        parse_args(["b", "o", "participant", "--nprocs", "x"])
    assert info.value.exit_code == 64


def test_help_and_version_exit_0(run_cli):
    res = run_cli("--version")
    assert res.code == 0 and res.out.startswith("bids-agquant ")
    res = run_cli("--help")
    assert res.code == 0
    for group in ("Options for filtering BIDS queries", "Options for the quantification",
                  "Options to handle performance", "Other options"):
        assert group in res.out
