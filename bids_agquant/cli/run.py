"""``bids-agquant`` / ``python -m bids_agquant``: parse, check, plan, run; every failure -> an exit code.

Order of work (nothing is computed before every input is checked):

1. parse the command line (64 on a bad one) and build the frozen
   :class:`~bids_agquant.config.Config`;
2. check the paths: BIDS_DIR is a dataset (66), OUTPUT_DIR / work dir are not the input nor inside
   it except under ``BIDS_DIR/derivatives/`` (64);
3. participant level: index the dataset, build and validate every participant's plan (65/66),
   print it (``-v`` / ``--print-plan``, which stops here), create OUTPUT_DIR, its logs/ and the
   work dir (73 when impossible), then per participant build
   ``workflows.participant.init_participant_wf(plan, config)`` and run it with the configured
   nipype plugin, printing one line per finished node (a failing node exits 1 naming the node
   and its crash file), then write its HTML report ``OUTPUT_DIR/sub-<p>.html``;
4. group level: ``group.run_group(config)``.

Every non-zero exit prints one line first on stderr, ``bids-agquant: error: <what>; <fix>``;
the traceback follows only with ``-v``. Logs go to stdout and, per participant, to
``OUTPUT_DIR/logs/sub-<p>_<timestamp>.log``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

from bids_agquant import __version__
from bids_agquant.bids.atomic import atomic_write_text
from bids_agquant.bids.derivatives import container_info, remove_stale_temporaries
from bids_agquant.bids.layout import build_plans, format_plan
from bids_agquant.cli import plugin as plugin_mod
from bids_agquant.cli.workcache import claim_cache, remove_cache_folder
from bids_agquant.bids import filters as bids_filters
from bids_agquant.cli.parser import DEFAULT_WORK_SUBDIR, WORKDIR_MARKER, parse_args
from bids_agquant.config import (AnalysisLevel, B1Correction, Config, SENormalization,
                                 VFAFit)
from bids_agquant.errors import (EX_DATAERR, EX_FAILURE, EX_OK, AgquantError, BadDataError,
                                 MissingInputError, NodeFailedError, OutputError, UsageError)
from bids_agquant.qmri import relaxivity

# Imported inside functions, on purpose: nipype, the participant workflow (nipype, ANTs) and
# the reports / group level (matplotlib) take seconds to import, and ``--help``, ``--version``
# and a bad command line must answer at once.

__all__ = ["main", "build_config", "check_paths", "prepare_outputs", "configure_nipype",
           "execute_workflow", "NodeProgress"]

PROG = "bids-agquant"
LOGGER = logging.getLogger("bids_agquant")
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
_DATE_FORMAT = "%H:%M:%S"


# ---------------------------------------------------------------------------------------------
# configuration and paths


def build_config(args) -> Config:
    """The frozen Config from parsed arguments (paths absolute, defaults filled in)."""
    def absolute(p):
        return Path(os.path.abspath(Path(p).expanduser())) if p is not None else None

    output_dir = absolute(args.output_dir)
    work_dir = absolute(args.work_dir) if args.work_dir else output_dir / DEFAULT_WORK_SUBDIR
    return Config(
        bids_dir=absolute(args.bids_dir),
        output_dir=output_dir,
        analysis_level=AnalysisLevel(args.analysis_level),
        work_dir=work_dir,
        participant_labels=tuple(args.participant_label),
        session_labels=tuple(args.session_label),
        baseline_session=args.baseline_session,
        session_agents=dict(args.session_agent),
        lesion_masks_dir=absolute(args.lesion_masks),
        relaxivity_overrides=dict(args.relaxivity),
        b1_correction=B1Correction(args.b1_correction),
        vfa_fit=VFAFit(args.vfa_fit),
        control_diameter_mm=args.control_diameter_mm,
        se_normalization=SENormalization(args.se_normalization),
        nprocs=args.nprocs,
        omp_nthreads=args.omp_nthreads,
        plugin_file=absolute(args.use_plugin),
        skip_bids_validation=args.skip_bids_validation,
        verbose=args.verbose,
        print_plan=args.print_plan,
        bids_filter_file=absolute(args.bids_filter_file),
        bids_filters=bids_filters.load_filters(absolute(args.bids_filter_file)),
        reports_only=args.reports_only,
        boilerplate_only=args.boilerplate_only,
        stop_on_first_crash=args.stop_on_first_crash,
        clean_workdir=args.clean_workdir,
        resource_monitor=args.resource_monitor,
        exclude_qa_flagged=args.exclude_qa_flagged,
    )


def _inside(child: Path, parent: Path) -> bool:
    """True when ``child`` is ``parent`` or below it (symlinks resolved)."""
    child, parent = Path(child).resolve(), Path(parent).resolve()
    return child == parent or parent in child.parents


def _check_not_in_input(path: Path, bids_dir: Path, option: str) -> None:
    deriv = bids_dir / "derivatives"
    if _inside(path, bids_dir) and not (_inside(path, deriv) and path.resolve() != deriv.resolve()):
        same = path.resolve() == bids_dir.resolve()
        what = "is BIDS_DIR itself" if same else "is inside BIDS_DIR"
        raise UsageError(f"{option} {path} {what}; nothing may be written into the input dataset",
                         fix=f"choose a folder outside it, or under {deriv}/<name>")
    if _inside(bids_dir, path):
        raise UsageError(f"{option} {path} contains BIDS_DIR {bids_dir}",
                         fix="choose a folder that is not a parent of the input dataset")


def check_paths(config: Config) -> None:
    """Input exists and is a dataset (66/65); outputs are not the input nor inside it (64)."""
    bids = config.bids_dir
    if not bids.exists():
        raise MissingInputError(f"BIDS_DIR {bids} does not exist", fix="give the path of the "
                                "dataset (the folder holding dataset_description.json)")
    if not bids.is_dir():
        raise MissingInputError(f"BIDS_DIR {bids} is not a folder", fix="give the dataset folder")
    desc = bids / "dataset_description.json"
    if not desc.is_file():
        if not config.skip_bids_validation:
            raise MissingInputError(
                f"BIDS_DIR {bids} is not a BIDS dataset (no dataset_description.json)",
                fix="point BIDS_DIR at the dataset root, or pass --skip-bids-validation")
        LOGGER.warning("BIDS_DIR has no dataset_description.json (--skip-bids-validation)")
    elif not config.skip_bids_validation:
        try:
            content = json.loads(desc.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadDataError(f"{desc} is not valid JSON ({' '.join(str(exc).split())})",
                               fix="fix the file, or pass --skip-bids-validation") from exc
        missing = [k for k in ("Name", "BIDSVersion")
                   if not isinstance(content, dict) or k not in content]
        if missing:
            raise BadDataError(f"{desc} lacks {' and '.join(missing)}",
                               fix="add them (e.g. \"BIDSVersion\": \"1.9.0\"), or pass "
                                   "--skip-bids-validation")
    if config.lesion_masks_dir is not None and not config.lesion_masks_dir.is_dir():
        raise MissingInputError(f"--lesion-masks {config.lesion_masks_dir} is not a folder",
                                fix="give the lesion-mask derivatives dataset folder")
    if config.plugin_file is not None and not config.plugin_file.is_file():
        raise MissingInputError(f"--use-plugin {config.plugin_file}: no such file",
                                fix="give a YAML file with 'plugin:' and 'plugin_args:'")

    _check_not_in_input(config.output_dir, bids, "OUTPUT_DIR")
    _check_not_in_input(config.work_dir, bids, "--work-dir")
    if config.work_dir.resolve() == config.output_dir.resolve():
        raise UsageError(f"--work-dir {config.work_dir} is OUTPUT_DIR",
                         fix="use another folder (default: OUTPUT_DIR/.work)")


def prepare_outputs(config: Config) -> None:
    """Create OUTPUT_DIR, its logs/ and the work dir, and prove they are writable (else 73).

    A work dir created here (or found empty) gets the marker file :data:`WORKDIR_MARKER`, which
    ``--clean-workdir`` requires before it deletes anything there.
    """
    work = config.work_dir
    fresh = not work.exists() or (work.is_dir() and not any(work.iterdir()))
    for path, option in ((config.output_dir, "OUTPUT_DIR"), (config.log_dir, "OUTPUT_DIR"),
                         (work, "--work-dir")):
        _ensure_writable_dir(path, option)
    if fresh:
        try:
            atomic_write_text(
                work / WORKDIR_MARKER,
                f"nipype work directory of bids-agquant (OUTPUT_DIR {config.output_dir}); "
                f"--clean-workdir may delete what is in this folder\n")
        except OSError as exc:
            raise OutputError(f"--work-dir {work} cannot be written ({exc.strerror})",
                              fix=_permission_fix()) from exc


def clean_work_dir(config: Config, participants) -> list[Path]:
    """``--clean-workdir``: delete the cache of ``participants`` (their workflow folders) in the
    work dir; only in a work dir holding :data:`WORKDIR_MARKER`, never one that is or holds
    BIDS_DIR, OUTPUT_DIR, the lesion masks or the current directory (64 otherwise)."""
    work = config.work_dir
    if not work.exists():
        return []
    protected = [(config.bids_dir, "BIDS_DIR"), (config.output_dir, "OUTPUT_DIR"),
                 (Path.cwd(), "the current directory")]
    if config.lesion_masks_dir is not None:
        protected.append((config.lesion_masks_dir, "--lesion-masks"))
    for path, what in protected:
        if _inside(path, work):
            raise UsageError(f"--clean-workdir: the work dir {work} is or contains {what} "
                             f"{path}", fix="give a work dir of its own with -w")
    if not (work / WORKDIR_MARKER).is_file():
        raise UsageError(f"--clean-workdir: {work} was not created by bids-agquant (no "
                         f"{WORKDIR_MARKER} in it), so nothing is deleted",
                         fix="delete the folder yourself if it is a work dir, or leave out "
                             "--clean-workdir")
    from bids_agquant.workflows.participant import workflow_name  # lazy: nipype

    removed = []
    for participant in participants:
        folder = work / workflow_name(participant)
        if not remove_cache_folder(folder):
            continue
        removed.append(folder)
        LOGGER.info("--clean-workdir: removed %s", folder)
    return removed


def _ensure_writable_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bids_agquant_write_test_"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{option} {path} cannot be created or written ({reason})",
                          fix=_permission_fix()) from exc


def _permission_fix() -> str:
    """What to do about an unwritable folder; in a container, for the container's user."""
    fix = "choose a writable location or fix its permissions"
    if container_info() is None:
        return fix
    uid, gid = os.getuid(), os.getgid()
    return (f"{fix}; in a container (here uid {uid}): mount a host folder that uid {uid} can write (docker: "
            f"run with --user $(id -u):$(id -g); podman: add :U to the mount, e.g. -v "
            f"/data/out:/out:U; or chown {uid}:{gid} the host folder; Apptainer runs as you, so "
            f"the folder must be yours)")


# ---------------------------------------------------------------------------------------------
# logging


class _MaxLevel(logging.Filter):
    def __init__(self, level):
        super().__init__()
        self.level = level

    def filter(self, record):
        return record.levelno < self.level


@contextlib.contextmanager
def _console_logging(verbose: int):
    """Our log lines on stdout; nipype's only with -vv (they also go to the log files)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, _DATE_FORMAT))
    handler.setLevel(logging.DEBUG if verbose >= 3 else logging.INFO)
    ours = logging.getLogger("bids_agquant")
    old_level, old_propagate = ours.level, ours.propagate
    ours.setLevel(logging.DEBUG)
    ours.propagate = False
    ours.addHandler(handler)
    try:
        yield handler
    finally:
        ours.removeHandler(handler)
        ours.setLevel(old_level)
        ours.propagate = old_propagate


def _quiet_third_party(verbose: int) -> None:
    """Library chatter (pybids, bidsschematools, deprecations) stays out of the user's console.

    Call inside ``warnings.catch_warnings()``: the filters are undone when it exits.
    """
    for name in ("bidsschematools", "bids", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 3 else logging.ERROR)
    if verbose < 3:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(bids|nipype)\.")


def _setup_nipype_logging(verbose: int, file_handler: logging.Handler | None):
    """Route nipype's loggers: file always (INFO), console with -vv; returns a cleanup callable."""
    from nipype import config as ncfg, logging as nlogging  # lazy (see the imports)

    level = "DEBUG" if verbose >= 3 else "INFO"
    ncfg.update_config({"logging": {"workflow_level": level, "interface_level": level,
                                    "utils_level": "WARNING" if verbose < 3 else "DEBUG",
                                    "log_to_file": False}})
    nlogging.update_logging(ncfg)
    root = logging.getLogger("nipype")
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    added = []
    if file_handler is not None:
        root.addHandler(file_handler)
        added.append(file_handler)
    if verbose >= 2:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(_LOG_FORMAT, _DATE_FORMAT))
        root.addHandler(console)
        added.append(console)
    elif verbose == 1:
        console = logging.StreamHandler(sys.stdout)
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter(_LOG_FORMAT, _DATE_FORMAT))
        root.addHandler(console)
        added.append(console)
    root.propagate = False

    def cleanup():
        for h in added:
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)

    return cleanup


class _LogFileHandler(logging.StreamHandler):
    """The per-participant log file.  When it can no longer be written (a full disk, a lost
    mount) it stops quietly: logging's default would print a traceback per record on stderr,
    after the run's one-line error."""

    def handleError(self, record):
        self.setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def _log_file(config: Config, name: str):
    """A log file ``OUTPUT_DIR/logs/<name>_<timestamp>.log`` receiving our and nipype's records."""
    config.log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    path = config.log_dir / f"{name}_{stamp}.log"
    n = 1
    while True:
        try:
            fh = open(path, "x", encoding="utf-8")
            break
        except FileExistsError:
            n += 1
            path = config.log_dir / f"{name}_{stamp}-{n}.log"
    handler = _LogFileHandler(fh)
    handler.setLevel(logging.DEBUG if config.verbose >= 3 else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    ours = logging.getLogger("bids_agquant")
    ours.addHandler(handler)
    try:
        yield path, handler
    finally:
        ours.removeHandler(handler)
        handler.close()
        with contextlib.suppress(OSError):      # a full disk: the run's error says so already
            fh.close()


# ---------------------------------------------------------------------------------------------
# nipype


def configure_nipype(config: Config) -> None:
    """Global nipype settings; must run before any workflow is built (nodes copy them)."""
    os.environ["NIPYPE_NO_ET"] = "1"
    from nipype import config as ncfg  # lazy (see the imports)

    ncfg.update_config({
        "execution": {
            "crashdump_dir": str(config.crashdump_dir),
            "crashfile_format": "txt",
            # content hashes: a rerun resumes even after the inputs were copied (new mtimes),
            # e.g. staged to a node's scratch disk for each job
            "hash_method": "content",
            "stop_on_first_crash": str(config.stop_on_first_crash).lower(),
            "check_version": "false",
            "remove_unnecessary_outputs": "true",
            "write_provenance": "false",
            "parameterize_dirs": "true",
        },
        "monitoring": {"enabled": str(config.resource_monitor).lower()},
    })
    ncfg.update_config(_execution_config(config))
    if config.resource_monitor:
        ncfg.enable_resource_monitor()       # checks that psutil is there
        if not ncfg.resource_monitor:
            raise UsageError("--resource-monitor needs the psutil package, which is not "
                             "installed", fix="pip install psutil (or reinstall bids_agquant)")
    else:
        ncfg.disable_resource_monitor()


class NodeProgress:
    """nipype ``status_callback``: one log line per finished node (name, seconds, count)."""

    def __init__(self, logger: logging.Logger, total: int | None = None, prefix: str = ""):
        self.logger = logger
        self.total = total
        self.prefix = prefix
        self.started: dict[str, float] = {}
        self.done = 0
        self.failed: list[str] = []
        self.since = None                        # when the run started (UTC)
        self.execgraph = None                    # nipype's execution graph, once it finished

    def _name(self, node) -> str:
        name = getattr(node, "fullname", None) or str(node)
        if self.prefix and name.startswith(self.prefix + "."):
            name = name[len(self.prefix) + 1:]
        return name

    def __call__(self, node, status: str) -> None:
        name = self._name(node)
        if status == "start":
            self.started[name] = time.monotonic()
            return
        t0 = self.started.pop(name, None)
        if status == "end":
            self.done += 1
            exact = self.total and self.done <= self.total
            count = f"{self.done}/{self.total}" if exact else str(self.done)
            if t0 is None and getattr(node, "run_without_submitting", False):
                # light nodes run in the main process, cached or not: no start event
                self.logger.info("[%s] %s: done", count, name)
            elif t0 is None:
                self.logger.info("[%s] %s: cached", count, name)
                for message in _cached_warnings(node):
                    self.logger.warning("%s", message)
            else:
                self.logger.info("[%s] %s: done in %.1f s", count, name, time.monotonic() - t0)
        elif status == "exception":
            self.failed.append(getattr(node, "fullname", name))
            took = f" after {time.monotonic() - t0:.1f} s" if t0 is not None else ""
            self.logger.error("%s: FAILED%s", name, took)


def _cached_warnings(node) -> list[str]:
    """The ``warnings`` a cached node returned when it ran (:mod:`bids_agquant.interfaces.notes`)."""
    try:
        found = getattr(node.result.outputs, "warnings", None)
    except Exception:  # no readable result: nothing to repeat
        return []
    return [str(m) for m in found] if isinstance(found, list) else []


def _count_nodes(wf) -> int | None:
    """Nodes nipype will run: identity nodes are removed from the execution graph."""
    try:
        from nipype.interfaces.utility import IdentityInterface  # lazy
        from nipype.pipeline.engine import JoinNode
        return sum(1 for n in wf._get_all_nodes()
                   if isinstance(n, JoinNode) or not isinstance(n.interface, IdentityInterface))
    except Exception:  # a private nipype API: the count is cosmetic
        return None


#: Errors of a full or read-only output store in a node's last error line (ENOSPC, EDQUOT, EFBIG,
#: EROFS): the output cannot be created (73), the pipeline itself did not fail.
_STORAGE_FULL = re.compile(r"\[Errno (28|122|27|30)\]|No space left on device|Disk quota exceeded|"
                           r"File too large|Read-only file system")


#: The last line of a crash file of a node that raised BadDataError (exit 65, not 1).
_NODE_BAD_DATA = re.compile(r"^(?:[\w.]+\.)?BadDataError: (.+)$")


def _crash_summary(crash_dir: Path, since: float, failed: list[str]) -> tuple[str | None, str]:
    """(crash file, one-line reason) of the first failed node, from nipype's text crash files.

    Text, not nipype's pickled format, on purpose: the user opens the file the error names.
    nipype's own reader (``nipype.utils.filemanip.loadcrash``) reads only pickled crash files,
    so the text is read here: the last line of the traceback is the reason.
    """
    files = sorted((p for p in crash_dir.glob("crash-*") if p.stat().st_mtime >= since - 1),
                   key=lambda p: p.stat().st_mtime) if crash_dir.is_dir() else []
    chosen = None
    for name in failed:
        short = name.rsplit(".", 1)[-1]
        chosen = next((f for f in files if f"-{short}-" in f.name), None)
        if chosen:
            break
    chosen = chosen or (files[0] if files else None)
    reason = ""
    if chosen is not None and chosen.suffix == ".txt":
        try:
            text = chosen.read_text(errors="replace")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            tb = [ln for ln in lines if not ln.startswith(("File ", "^", "~"))]
            reason = tb[-1] if tb else ""
            # a full disk often shows up as a later error (a result file that was never
            # written): name the storage error itself
            full = [ln for ln in tb if _STORAGE_FULL.search(ln)]
            if full and not _STORAGE_FULL.search(reason):
                reason = full[-1]
        except OSError:
            pass
    return (str(chosen) if chosen else None), reason


def _run_one(plan, config: Config) -> None:
    """Build and run one participant's workflow; NodeFailedError (1) when a node fails."""
    try:
        from bids_agquant.workflows.participant import init_participant_wf  # lazy: nipype, ANTs
    except ImportError as exc:
        raise AgquantError("the participant workflow (bids_agquant.workflows.participant) is not "
                           f"available in this installation ({exc})",
                           fix="reinstall bids_agquant") from exc
    from bids_agquant.workflows.participant import workflow_name  # lazy: nipype
    folder = Path(config.work_dir) / workflow_name(plan.participant)
    try:        # a cache made by other code is not reused (nipype would reuse it silently)
        claim_cache(folder, (Path(config.work_dir) / WORKDIR_MARKER).is_file(),
                    f"sub-{plan.participant}")
    except OSError as exc:
        raise OutputError(f"--work-dir: the cache {folder} of other code could not be removed "
                          f"or moved aside ({exc.strerror or type(exc).__name__})",
                          fix="delete that folder yourself, or give another work dir with -w"
                          ) from exc
    wf = init_participant_wf(plan, config)
    progress = execute_workflow(wf, config, f"sub-{plan.participant}")
    if config.resource_monitor and progress.execgraph is not None:
        from bids_agquant.reports.resources import node_resources, write_resources  # lazy
        rows = node_resources(progress.execgraph, progress.since, prefix=wf.name)
        path = write_resources(config.output_dir, plan.participant, rows)
        LOGGER.info("sub-%s: node resources %s", plan.participant, path)


class _WarningCollector(logging.Handler):
    """Keeps the WARNING messages logged during one participant's run (for its report)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _write_citation(config: Config, plans) -> None:
    """The methods text of the run (logs/CITATION.md and .bib); a failure is logged, never fatal
    (the text describes the outputs, it is not one of them)."""
    try:
        from bids_agquant.reports.citation import write_citation  # lazy: matplotlib
        md, _ = write_citation(config.output_dir, config, plans)
    except Exception as exc:  # noqa: BLE001
        LOGGER.error("the methods text could not be written (%s: %s)", type(exc).__name__, exc)
        return
    LOGGER.info("methods text %s", md)


def _build_report(plan, config: Config, warnings: list[str]) -> None:
    """``OUTPUT_DIR/sub-<p>.html``; a failure here is logged, the maps and tables are complete."""
    try:
        from bids_agquant.reports.participant import build_participant_report  # lazy: matplotlib
        path = build_participant_report(config.output_dir, plan.participant, plan=plan,
                                        bids_dir=config.bids_dir, warnings=warnings,
                                        nprocs=config.nprocs)
    except Exception as exc:  # noqa: BLE001 - the outputs exist; the report is a view of them
        LOGGER.error("sub-%s: the HTML report could not be built (%s: %s); the maps and the "
                     "lesion table are complete", plan.participant, type(exc).__name__, exc)
        LOGGER.debug("report failure", exc_info=True)
        return
    LOGGER.info("sub-%s: report %s", plan.participant, path)


def with_plugin(config: Config) -> Config:
    """The config with ``plugin``/``plugin_args`` from ``--use-plugin`` (or MultiProc defaults)."""
    name, args = plugin_mod.load_plugin_settings(config.plugin_file, config.nprocs, config.work_dir)
    return dataclasses.replace(config, plugin=name, plugin_args=dict(args))


#: The current directory of a workflow run, relative to the work dir: files nipype writes into
#: the current directory (the resource monitor's ``.proc-*`` samples, ...) land there.
RUN_SUBDIR = "run"


@contextlib.contextmanager
def _run_directory(config: Config):
    """Run with the current directory in the work dir (never the user's, never BIDS_DIR)."""
    run_dir = Path(config.work_dir) / RUN_SUBDIR
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--work-dir {config.work_dir} cannot be written ({exc.strerror})",
                          fix=_permission_fix()) from exc
    with contextlib.chdir(run_dir):
        yield run_dir


def _remove_monitor_samples(run_dir: Path) -> None:
    """The resource monitor's raw sample files (read into the node results already)."""
    for f in run_dir.glob(".proc-*"):
        with contextlib.suppress(OSError):
            f.unlink()


def _execution_config(config: Config) -> dict:
    """nipype settings of the run that every node (and every Slurm job) must carry."""
    return {"execution": {"stop_on_first_crash": str(config.stop_on_first_crash).lower(),
                          "resource_monitor_frequency": "1"},
            "monitoring": {"enabled": str(config.resource_monitor).lower()}}


def execute_workflow(wf, config: Config, label: str) -> NodeProgress:
    """Run a nipype workflow with the configured plugin, one progress line per finished node.

    The plugin comes from ``cli.plugin.load_plugin_settings(config.plugin_file, nprocs, work_dir)``;
    crash files go to ``config.crashdump_dir``. A failure raises NodeFailedError naming the first
    failed node, the last line of its error and its crash file.
    """
    if not config.plugin_args:
        config = with_plugin(config)
    name, plugin_args = config.plugin, dict(config.plugin_args)
    if wf.base_dir is None:
        wf.base_dir = str(config.work_dir)
    progress = NodeProgress(LOGGER, _count_nodes(wf), prefix=wf.name)
    if not name.endswith("Graph"):          # graph plugins submit everything at once
        plugin_args = {**plugin_args, "status_callback": progress}
    LOGGER.info("%s: running %s with %s (work dir %s)", label, wf.name, name, config.work_dir)
    t0 = time.time()
    progress.since = datetime.now(timezone.utc)
    try:
        with _run_directory(config) as run_dir:
            progress.execgraph = plugin_mod.run_workflow(
                wf, name, plugin_args, config.work_dir, config.crashdump_dir,
                execution=_execution_config(config))
            _remove_monitor_samples(run_dir)
    except Exception as exc:
        if _exit_code_of(exc) is not None:     # e.g. the plugin's own settings errors (64)
            raise
        crash, reason = _crash_summary(config.crashdump_dir, t0, progress.failed)
        node = progress.failed[0] if progress.failed else "a pipeline node"
        reason = reason or " ".join(str(exc).split())[-200:]
        if not _STORAGE_FULL.search(reason) and _STORAGE_FULL.search(str(exc)):
            reason = " ".join(str(exc).split())[-200:]     # e.g. the crash file itself
        where = f"; crash file {crash}" if crash else f"; crash files in {config.crashdump_dir}"
        if _STORAGE_FULL.search(reason):
            raise OutputError(
                f"{label}: {node} could not write its files ({reason}) under "
                f"{config.output_dir} or the work dir {config.work_dir}{where}",
                fix="free space (or raise the quota / file-size limit) there, then run the same "
                    "command (same -w) to resume") from exc
        bad_data = _NODE_BAD_DATA.match(reason)
        if bad_data:          # a data problem only a node could see (e.g. a B1 map's coverage)
            raise BadDataError(f"{label}: {node}: {bad_data.group(1)}{where}") from exc
        raise NodeFailedError(f"{label}: {node} failed: {reason}{where}",
                              fix="rerun with -v for details; after a fix, the same command "
                                  "(same -w) resumes") from exc
    LOGGER.info("%s: finished in %.0f s (%d nodes)", label, time.time() - t0, progress.done)
    return progress


# ---------------------------------------------------------------------------------------------
# levels


def run_participant_level(config: Config) -> int:
    check_paths(config)
    config = with_plugin(config)            # a bad --use-plugin file fails before any work
    LOGGER.info("bids-agquant %s: participant level, BIDS_DIR %s", _version(), config.bids_dir)
    plans = build_plans(config)
    if config.bids_filters and not config.print_plan:
        LOGGER.info("BIDS filters (--bids-filter-file %s):\n%s", config.bids_filter_file,
                    bids_filters.describe_filters(config.bids_filters))
    if config.reports_only:
        return _reports_only(config, plans)
    if config.boilerplate_only:
        return _boilerplate_only(config, plans)
    if not config.print_plan:
        if config.clean_workdir:
            clean_work_dir(config, [plan.participant for plan in plans])
        prepare_outputs(config)
    for plan in plans:
        n_post = len(plan.post_states)
        LOGGER.info("sub-%s: %d session(s), %d post-contrast state(s), baseline ses-%s (%s; "
                    "session order: %s)%s", plan.participant, len(plan.sessions), n_post,
                    plan.baseline_session, plan.baseline_reason, plan.session_order,
                    f", {len(plan.warnings)} warning(s)" if plan.warnings else "")
    if config.print_plan:
        if config.bids_filters:
            print(f"BIDS filters (--bids-filter-file {config.bids_filter_file}):")
            print("\n".join(f"  {line}" for line in
                            bids_filters.describe_filters(config.bids_filters).splitlines()))
        for plan in plans:
            print(format_plan(plan, config.bids_dir))
        return EX_OK
    configure_nipype(config)
    _write_citation(config, plans)
    for plan in plans:
        with _log_file(config, f"sub-{plan.participant}") as (log_path, handler):
            cleanup = _setup_nipype_logging(config.verbose, handler)
            try:
                LOGGER.info("sub-%s: log file %s", plan.participant, log_path)
                text = format_plan(plan, config.bids_dir)
                if config.verbose:
                    LOGGER.info("plan:\n%s", text)
                else:
                    LOGGER.debug("plan:\n%s", text)
                _plan_to_file(handler, text)
                _remove_stale_temp_files(config.output_dir / f"sub-{plan.participant}",
                                         config.output_dir / f"sub-{plan.participant}.html")
                collector = _WarningCollector()
                LOGGER.addHandler(collector)
                try:
                    _run_one(plan, config)
                finally:
                    LOGGER.removeHandler(collector)
                _build_report(plan, config, collector.messages)
            finally:
                cleanup()
    LOGGER.info("done: outputs in %s (work dir %s can be deleted once you are satisfied)",
                config.output_dir, config.work_dir)
    return EX_OK


def _reports_only(config: Config, plans) -> int:
    """``--reports-only``: rebuild each participant's report from OUTPUT_DIR; nothing else is
    written (no log file: the report shows the warnings of the run that made the outputs)."""
    from bids_agquant.reports.participant import build_participant_report, find_maps  # lazy

    missing = [p.participant for p in plans if not find_maps(config.output_dir, p.participant)]
    if missing:
        raise MissingInputError(
            f"--reports-only: no outputs of sub-{', sub-'.join(missing)} in {config.output_dir} "
            f"(no maps under sub-{missing[0]}/)",
            fix="run the participant level first (without --reports-only), or give the "
                "OUTPUT_DIR of that run")
    _ensure_writable_dir(config.output_dir, "OUTPUT_DIR")
    for plan in plans:
        t0 = time.time()
        path = build_participant_report(config.output_dir, plan.participant, plan=plan,
                                        bids_dir=config.bids_dir, nprocs=config.nprocs)
        LOGGER.info("sub-%s: report %s (%.1f s)", plan.participant, path, time.time() - t0)
    return EX_OK


def _boilerplate_only(config: Config, plans) -> int:
    """``--boilerplate-only``: the methods text of the planned run, no workflow."""
    from bids_agquant.reports.citation import write_citation  # lazy: matplotlib

    _ensure_writable_dir(config.log_dir, "OUTPUT_DIR")
    md, bib = write_citation(config.output_dir, config, plans)
    LOGGER.info("methods text %s (references %s); no workflow was run", md, bib)
    return EX_OK


def _remove_stale_temp_files(folder: Path, single: Path | None = None) -> None:
    """Delete the temporary files a killed run left in ``folder`` (and beside ``single``)."""
    found = remove_stale_temporaries(folder, single)
    if found:
        LOGGER.info("removed %d temporary file(s) left by an interrupted run in %s", len(found),
                    folder)


def _plan_to_file(handler: logging.Handler, text: str) -> None:
    record = logging.LogRecord("bids_agquant.plan", logging.INFO, __file__, 0, "plan:\n%s",
                               (text,), None)
    handler.handle(record)


def run_group_level(config: Config) -> int:
    check_paths(config)
    if config.print_plan:
        print(f"group level: reads {config.output_dir}/sub-*/sub-*_desc-lesions_stats.tsv and "
              f"{config.bids_dir}/participants.tsv, writes {config.output_dir}/group/")
        return EX_OK
    try:
        from bids_agquant.group import run_group  # lazy: matplotlib
    except ImportError as exc:
        raise AgquantError(f"the group level (bids_agquant.group) is not available "
                           f"({exc})", fix="reinstall bids_agquant") from exc
    if not config.output_dir.is_dir():
        raise MissingInputError(f"OUTPUT_DIR {config.output_dir} does not exist",
                                fix="run the participant level first")
    _ensure_writable_dir(config.output_dir, "OUTPUT_DIR")
    _ensure_writable_dir(config.log_dir, "OUTPUT_DIR")
    with _log_file(config, "group") as (log_path, _):
        LOGGER.info("bids-agquant %s: group level, log file %s", _version(), log_path)
        _remove_stale_temp_files(config.output_dir / "group")
        run_group(config)
    LOGGER.info("done: group outputs in %s", config.output_dir / "group")
    return EX_OK


def _version() -> str:
    return __version__


# ---------------------------------------------------------------------------------------------
# entry point


def _exit_code_of(exc: BaseException) -> int | None:
    """Exit code of an error the user can act on, by its class; None for anything unexpected.

    Every such error subclasses :class:`~bids_agquant.errors.AgquantError`, which carries it.
    qmri's ``relaxivity.UnknownAgentError`` cannot (qmri imports only the standard library,
    numpy and scipy); ``bids/layout.py`` converts it before any computation, and it is mapped
    here too (bad data, 65) should another caller ever let it through.
    """
    if isinstance(exc, AgquantError):
        return exc.exit_code
    if isinstance(exc, relaxivity.UnknownAgentError):
        return EX_DATAERR
    return None


def _report(exc: BaseException, code: int, verbose: int, message: str | None = None) -> int:
    text = message or " ".join(str(exc).split()) or type(exc).__name__
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    return code


def _peek_verbose(argv) -> int:
    n = 0
    for a in argv:
        if a == "--verbose":
            n += 1
        elif a.startswith("-") and not a.startswith("--") and set(a[1:]) == {"v"}:
            n += len(a) - 1
    return n


class _Terminated(BaseException):
    """SIGTERM (a scheduler's time limit, ``docker stop``): stop and say how to resume."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_handler():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Run the BIDS-App; returns the exit code (interface.md)."""
    os.environ["NIPYPE_NO_ET"] = "1"              # no network version check, no telemetry
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _peek_verbose(argv)
    try:
        args = parse_args(argv)
    except SystemExit as exc:                     # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else 0
    except AgquantError as exc:
        return _report(exc, exc.exit_code, verbose)
    with _console_logging(args.verbose), warnings.catch_warnings(), _sigterm_handler():
        _quiet_third_party(args.verbose)
        try:
            config = build_config(args)
            if config.analysis_level == AnalysisLevel.PARTICIPANT:
                return run_participant_level(config)
            return run_group_level(config)
        except AgquantError as exc:
            LOGGER.debug("exit %d: %s", exc.exit_code, exc)
            return _report(exc, exc.exit_code, args.verbose)
        except KeyboardInterrupt as exc:
            return _report(exc, 130, args.verbose, "interrupted; rerun the same command (same -w) "
                                                    "to resume")
        except _Terminated as exc:
            return _report(exc, 143, args.verbose, "terminated (SIGTERM); rerun the same command "
                                                    "(same -w) to resume")
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            code = _exit_code_of(exc)
            if code is not None:
                return _report(exc, code, args.verbose)
            text = " ".join(str(exc).split())[:300]
            return _report(exc, EX_FAILURE, args.verbose,
                           f"unexpected {type(exc).__name__}: {text}; rerun with -v for the "
                           f"traceback and report it (with the log in OUTPUT_DIR/logs/)")
