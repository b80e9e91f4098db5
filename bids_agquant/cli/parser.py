"""The BIDS-Apps command line (fMRIPrep-style option groups).

``bids-agquant BIDS_DIR OUTPUT_DIR {participant,group} [options]``. A wrong command line raises
:class:`~bids_agquant.errors.UsageError` (exit 64) with one line naming the option; ``--help``
and ``--version`` exit 0. Every option is documented in ``docs/cli.md``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from bids_agquant import __version__
from bids_agquant.bids.filters import QUERIES
from bids_agquant.bids.layout import normalise_label
from bids_agquant.config import AnalysisLevel, B1Correction, SENormalization, VFAFit
from bids_agquant.errors import UsageError
from bids_agquant.qmri.lesions import CONTROL_DIAMETER_MM

__all__ = ["build_parser", "parse_args", "DEFAULT_WORK_SUBDIR", "WORKDIR_MARKER",
           "PARTICIPANT_ONLY"]

#: Default work directory, relative to OUTPUT_DIR (hidden: BIDS tools and pybids skip it).
DEFAULT_WORK_SUBDIR = ".work"
#: The file bids_agquant writes into every work directory it creates; ``--clean-workdir``
#: deletes only in a folder holding it.
WORKDIR_MARKER = ".bids_agquant_workdir"
#: Options of the participant level only (the group level neither runs nipype nor reads BIDS
#: queries): ``dest`` -> option.
PARTICIPANT_ONLY = {"bids_filter_file": "--bids-filter-file", "reports_only": "--reports-only",
                    "boilerplate_only": "--boilerplate-only", "clean_workdir": "--clean-workdir",
                    "resource_monitor": "--resource-monitor"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 64) instead of printing usage and exit 2."""

    def error(self, message):  # noqa: D401 - argparse API
        message = " ".join(str(message).split())
        raise UsageError(message, fix=f"see '{self.prog} --help'")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _control_diameter(text: str) -> float:
    """A control-sphere diameter in mm: a number from 5 to 60."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (mm)") from None
    if not (5.0 <= value <= 60.0):
        raise argparse.ArgumentTypeError(f"{text!r} must be from 5 to 60 (mm)")
    return value


def _session_agent(text: str) -> tuple[str, str]:
    """``SES=AGENT``: the contrast agent given in a session (``none``: no agent)."""
    ses, sep, agent = str(text).partition("=")
    ses, agent = ses.strip(), agent.strip()
    if not sep or not ses or not agent:
        raise argparse.ArgumentTypeError(f"{text!r} is not SES=AGENT (e.g. D1=AGuIX, D0=none)")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9 _\-+/]*$", agent):
        raise argparse.ArgumentTypeError(f"agent {agent!r} must start with a letter or digit "
                                         f"(e.g. D1=AGuIX)")
    return ses, agent


def _relaxivity(text: str) -> tuple[str, float]:
    """``AGENT=VALUE`` with VALUE a positive r1 in 1/(mM s)."""
    agent, sep, value = str(text).partition("=")
    agent = agent.strip()
    if not sep or not agent:
        raise argparse.ArgumentTypeError(f"{text!r} is not AGENT=VALUE (e.g. AGuIX=8.9)")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9 _\-+]*$", agent):
        raise argparse.ArgumentTypeError(f"agent {agent!r} must start with a letter or digit "
                                         f"(e.g. AGuIX=8.9)")
    try:
        r1 = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} in {text!r} is not a number "
                                         f"(r1 in 1/(mM s), e.g. {agent}=8.9)") from None
    if not math.isfinite(r1) or r1 <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} in {text!r} must be a positive r1 in "
                                         f"1/(mM s)")
    return agent, r1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bids-agquant",
        description="Quantitative MRI of gadolinium nanoparticles (AGuIX) in brain metastases: "
                    "signal enhancement, VFA T1 maps and concentration per lesion, as a BIDS-App.",
        epilog="Exit codes: 0 ok, 64 usage, 65 bad data, 66 missing input, 73 cannot create "
               "output, 1 unexpected (e.g. a failing pipeline node). Details: docs/cli.md.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path,
                        help="the raw BIDS dataset (the folder holding dataset_description.json); "
                             "opened read-only")
    parser.add_argument("output_dir", type=Path,
                        help="where the BIDS-Derivatives go; not BIDS_DIR, nor inside it except "
                             "under BIDS_DIR/derivatives/")
    parser.add_argument("analysis_level", choices=AnalysisLevel.values(),
                        help="'participant': maps and lesion tables per participant; 'group': "
                             "cohort tables and figures from the participant outputs")
    _add_bids_filters(parser)
    _add_quantification_options(parser)
    _add_performance_options(parser)
    _add_other_options(parser)
    return parser


def _add_bids_filters(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Options for filtering BIDS queries")
    g.add_argument("--participant-label", "--participant_label", dest="participant_label",
                   nargs="+", action="extend", metavar="LABEL", default=[],
                   help="participants to process, with or without 'sub-' (default: all)")
    g.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                   action="extend", metavar="LABEL", default=[],
                   help="sessions to quantify, with or without 'ses-' (default: all); the "
                        "baseline pre-contrast T1w is always read as the reference")
    g.add_argument("--baseline-session", metavar="LABEL", default=None,
                   help="session whose pre-contrast T1w is the reference space (default: the one "
                        "holding a pre-contrast T1w; the earliest by sessions.tsv acq_time if "
                        "several do)")
    g.add_argument("--session-agent", metavar="SES=AGENT", type=_session_agent, action="append",
                   default=[],
                   help="the contrast agent given in session SES (repeatable; AGENT 'none' for "
                        "no agent), for images whose names (ce-) and sidecars do not say it; "
                        "must agree with a contrast_agent column of sessions.tsv")
    g.add_argument("--lesion-masks", metavar="DIR", type=Path, default=None,
                   help="BIDS-derivatives dataset with *_label-metastasis_mask or "
                        "*_desc-metastases_dseg images (default: search BIDS_DIR/derivatives/)")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   help="index every file whatever its name, and accept a dataset without a "
                        "valid dataset_description.json")
    g.add_argument("--bids-filter-file", "--bids_filter_file", metavar="FILE", type=Path,
                   default=None,
                   help="JSON object of pybids entity filters merged into the input queries, "
                        "keyed by query: " + "; ".join(f"'{k}' {v}" for k, v in QUERIES.items())
                        + ". Values: a label, a list of labels, null (entity absent) or \"*\" "
                          "(present); e.g. {\"t1w\": {\"session\": [\"pre\", \"inj\"]}}")


def _add_quantification_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Options for the quantification")
    g.add_argument("--relaxivity", metavar="AGENT=VALUE", type=_relaxivity, action="append",
                   default=[],
                   help="r1 per Gd in 1/(mM s) for an agent (repeatable); overrides the built-in "
                        "table (AGuIX, Dotarem) and is required for an agent it does not know")
    g.add_argument("--b1-correction", choices=B1Correction.values(),
                   default=B1Correction.AUTO.value,
                   help="'auto': correct VFA flip angles with the session's TB1map when there is "
                        "one; 'off': never")
    g.add_argument("--vfa-fit", choices=VFAFit.values(), default=VFAFit.NONLINEAR.value,
                   help="VFA T1 fit: nonlinear least squares, or the linear DESPOT1 fit")
    g.add_argument("--se-normalization", choices=SENormalization.values(),
                   default=SENormalization.AUTO.value,
                   help="before SE, divide the post-contrast T1w by its median ratio to the "
                        "pre-contrast T1w in healthy brain (>= 10 mm from lesions): 'auto' when "
                        "the two come from different sessions, 'brain' always, 'off' never")
    g.add_argument("--control-diameter-mm", metavar="MM", type=_control_diameter,
                   default=CONTROL_DIAMETER_MM,
                   help="diameter of the three healthy-tissue control spheres, the same for "
                        "every participant (default %(default)g; shrunk with a warning, in "
                        "2.5 mm steps down to 10 mm, when three do not fit)")


def _add_performance_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Options for the group level")
    g.add_argument("--exclude-qa-flagged", action="store_true",
                   help="leave the sessions with a QA flag (participant QA tables) out of every "
                        "group statistic (default: keep and annotate them)")

    g = parser.add_argument_group("Options to handle performance")
    g.add_argument("--nprocs", "--nthreads", "--n-cpus", dest="nprocs", type=_positive_int,
                   metavar="N", default=None,
                   help="CPUs for the whole run (default: the CPUs available to this process)")
    g.add_argument("--omp-nthreads", type=_positive_int, metavar="N", default=1,
                   help="threads per process (numpy/ITK); ANTs registration runs single-threaded "
                        "regardless, for reproducible results")
    g.add_argument("--use-plugin", metavar="FILE", type=Path, default=None,
                   help="nipype plugin settings (YAML with 'plugin' and 'plugin_args', e.g. "
                        "SLURM); default: MultiProc with --nprocs")
    g.add_argument("--resource-monitor", action="store_true",
                   help="measure every node's run time, peak memory and CPU (nipype's resource "
                        "monitor, sampled each second) into OUTPUT_DIR/logs/sub-<label>_"
                        "resources.tsv, shown in the participant report")


def _add_other_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Other options")
    g.add_argument("-w", "--work-dir", metavar="DIR", type=Path, default=None,
                   help=f"nipype work directory; a rerun with the same one resumes (default: "
                        f"OUTPUT_DIR/{DEFAULT_WORK_SUBDIR})")
    only = g.add_mutually_exclusive_group()
    only.add_argument("--print-plan", action="store_true",
                      help="validate the inputs, print what would be computed per participant, "
                           "and exit without computing or writing anything")
    only.add_argument("--reports-only", action="store_true",
                      help="rebuild the participant reports OUTPUT_DIR/sub-<label>.html from the "
                           "outputs already there, and nothing else")
    only.add_argument("--boilerplate-only", "--boilerplate_only", action="store_true",
                      help="write the methods text (OUTPUT_DIR/logs/CITATION.md and .bib) for "
                           "the planned run and exit without running the workflow")
    g.add_argument("--stop-on-first-crash", action=argparse.BooleanOptionalAction, default=True,
                   help="stop the run at the first failing node (nipype's stop_on_first_crash); "
                        "with --no-stop-on-first-crash the nodes that do not depend on it run "
                        "first (cached for the rerun). A failing node exits 1 either way (65 when "
                        "it refused its data)")
    g.add_argument("--clean-workdir", action="store_true",
                   help=f"delete the cache of the selected participants in the work dir before "
                        f"running; only in a work dir bids_agquant created (it holds "
                        f"{WORKDIR_MARKER}), never BIDS_DIR, OUTPUT_DIR or a folder holding them")
    g.add_argument("--version", action="version", version=f"bids-agquant {__version__}")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more output (repeatable): -v prints the plan, tracebacks and pipeline "
                        "warnings; -vv nipype's progress; -vvv debugging")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and normalise the command line; UsageError (64) on anything wrong."""
    args = build_parser().parse_args(argv)
    args.participant_label = [normalise_label(v, "sub", "--participant-label")
                              for v in args.participant_label]
    args.session_label = [normalise_label(v, "ses", "--session-label") for v in args.session_label]
    if args.baseline_session is not None:
        args.baseline_session = normalise_label(args.baseline_session, "ses", "--baseline-session")
    if args.nprocs is None:
        try:
            args.nprocs = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            args.nprocs = os.cpu_count() or 1
    agents: dict[str, str] = {}
    for ses, agent in args.session_agent:
        ses = normalise_label(ses, "ses", "--session-agent")
        if agents.get(ses, agent).lower() != agent.lower():
            raise UsageError(f"--session-agent {ses} given twice with different agents "
                             f"({agents[ses]} and {agent})", fix="pass it once")
        agents[ses] = agent
    args.session_agent = agents
    relax = {}
    for agent, r1 in args.relaxivity:
        if agent in relax and relax[agent] != r1:
            raise UsageError(f"--relaxivity {agent} given twice with different values "
                             f"({relax[agent]:g} and {r1:g})", fix="pass it once")
        relax[agent] = r1
    args.relaxivity = relax
    if args.analysis_level != "participant":
        given = [opt for dest, opt in PARTICIPANT_ONLY.items() if getattr(args, dest)]
        if not args.stop_on_first_crash:
            given.append("--no-stop-on-first-crash")
        if given:
            raise UsageError(f"{', '.join(given)}: participant level only",
                             fix="leave it out of the group-level command")
    if args.analysis_level == "participant" and args.exclude_qa_flagged:
        raise UsageError("--exclude-qa-flagged: group level only",
                         fix="leave it out of the participant-level command")
    if args.clean_workdir and (args.print_plan or args.reports_only or args.boilerplate_only):
        other = next(o for o, v in (("--print-plan", args.print_plan),
                                    ("--reports-only", args.reports_only),
                                    ("--boilerplate-only", args.boilerplate_only)) if v)
        raise UsageError(f"--clean-workdir with {other}: {other} runs no workflow, the cache "
                         f"would be deleted for nothing", fix="pass one of the two")
    return args
