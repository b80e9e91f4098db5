"""Execution backends: nipype's MultiProc (default), Linear, SLURM and SLURMGraph plugins.

``--use-plugin FILE`` takes a YAML file in the fMRIPrep style::

    plugin: SLURM
    plugin_args:
      sbatch_args: "--partition=short --mem=4G --time=01:00:00"

Defaults (``bids_agquant/data/plugin_defaults.yaml``) are merged under the file's
``plugin_args``. Typical use from the command line code::

    plugin, plugin_args = load_plugin_settings(opts.use_plugin, nprocs, work_dir)
    ...
    run_workflow(workflow, plugin, plugin_args, work_dir)

Every problem with the settings raises :class:`PluginSettingsError` (exit code 64, a message
naming the file, the key and the fix).
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from copy import deepcopy
from importlib import resources
from pathlib import Path

import yaml

from bids_agquant.errors import UsageError

LOGGER = logging.getLogger("bids_agquant.plugin")

#: Plugins bids_agquant supports, by their nipype name.
PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph")
#: Plugins that submit jobs with sbatch.
SLURM_PLUGINS = ("SLURM", "SLURMGraph")

#: plugin_args each plugin understands (nipype silently ignores others, so a typo such as
#: ``sbatch_arg`` would be lost without this check). ``poll_sleep_duration`` (s) is ours.
ALLOWED_ARGS = {
    "MultiProc": {"n_procs", "memory_gb", "raise_insufficient", "scheduler", "mp_context",
                  "n_gpu_procs", "max_jobs", "poll_sleep_duration"},
    "Linear": set(),
    "SLURM": {"sbatch_args", "template", "retry_timeout", "max_tries", "jobid_re", "max_jobs",
              "poll_sleep_duration"},
    "SLURMGraph": {"sbatch_args", "template", "retry_timeout", "max_tries",
                   "dont_resubmit_completed_jobs", "poll_sleep_duration"},
}


class PluginSettingsError(UsageError, ValueError):
    """Bad ``--use-plugin`` file or a plugin that cannot run here; ``exit_code`` is 64 (usage).

    Still a ValueError, as it always was, for code that catches that.
    """


def plugin_defaults() -> dict[str, dict]:
    """The packaged defaults per plugin (a fresh copy)."""
    text = resources.files("bids_agquant").joinpath("data/plugin_defaults.yaml").read_text()
    return yaml.safe_load(text)


def load_plugin_settings(path: Path | str | None, nprocs: int,
                         work_dir: Path | str) -> tuple[str, dict]:
    """Plugin name and plugin_args for ``Workflow.run`` from a ``--use-plugin`` YAML file.

    path: the YAML file, or None for MultiProc with ``n_procs=nprocs``.
    nprocs: ``--nprocs``; the MultiProc default for ``n_procs`` (an ``n_procs`` in the file wins).
    work_dir: the nipype work directory (relative ``template`` paths in the file are resolved
        against the file's folder, not this one; it is accepted for symmetry with
        :func:`run_workflow` and checked to be a path).

    For the Slurm plugins this checks that ``sbatch`` and ``squeue`` are on PATH and sets
    ``LOGNAME`` when it is missing (nipype's SLURM plugin needs it).
    Raises PluginSettingsError (exit code 64) with a message naming the file and the fix.
    """
    Path(work_dir)  # a str or Path; nothing is created here
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise PluginSettingsError(f"--nprocs must be a positive integer, got {nprocs!r}")
    if path is None:
        name, user_args, where = "MultiProc", {}, "the default plugin"
    else:
        name, user_args = _read_plugin_file(Path(path))
        where = f"--use-plugin {path}"

    args = deepcopy(plugin_defaults().get(name) or {})
    if name == "MultiProc":
        args["n_procs"] = nprocs
    if name == "SLURMGraph" and "sbatch_args" in user_args:
        # keep the cancel-on-failed-dependency default unless the user decided otherwise
        user = _as_sbatch_args(user_args["sbatch_args"], where)
        if "kill-on-invalid-dep" not in user:
            user = f"{user} {args.get('sbatch_args', '')}".strip()
        user_args = {**user_args, "sbatch_args": user}
    args.update(user_args)
    _check_args(name, args, where, base=Path(path).parent if path is not None else Path.cwd())

    if name in SLURM_PLUGINS:
        missing = [cmd for cmd in ("sbatch", "squeue") if shutil.which(cmd) is None]
        if missing:
            raise PluginSettingsError(
                f"{where}: plugin {name} needs the Slurm commands {' and '.join(missing)} on "
                f"PATH, which were not found; run on a Slurm login node (or `module load slurm`), "
                f"or use a plugin file with `plugin: MultiProc`")
        ensure_logname()
    return name, args


def ensure_logname() -> str:
    """Set ``LOGNAME`` from the user database (or the uid) when missing; return it.

    nipype's SLURM plugin names jobs with ``os.environ["LOGNAME"]`` and fails with a KeyError
    without it (containers, cron, some batch environments).
    """
    if not os.environ.get("LOGNAME"):
        try:
            os.environ["LOGNAME"] = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # a uid without a passwd entry (containers run with --user)
            os.environ["LOGNAME"] = str(os.getuid())
    return os.environ["LOGNAME"]


def _read_plugin_file(path: Path) -> tuple[str, dict]:
    where = f"--use-plugin {path}"
    if not path.is_file():
        raise PluginSettingsError(f"{where}: no such file; give a YAML file with `plugin: "
                                  f"<{'|'.join(PLUGINS)}>` and optional `plugin_args:`")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise PluginSettingsError(f"{where}: not valid YAML{at}; expected e.g. "
                                  f"`plugin: SLURM` and `plugin_args: {{sbatch_args: ...}}`") from exc
    except OSError as exc:
        raise PluginSettingsError(f"{where}: cannot read the file ({exc.strerror})") from exc
    if not isinstance(data, dict) or "plugin" not in data:
        raise PluginSettingsError(f"{where}: needs a top-level key `plugin: "
                                  f"<{'|'.join(PLUGINS)}>` (and optionally `plugin_args:`)")
    unknown = set(data) - {"plugin", "plugin_args"}
    if unknown:
        raise PluginSettingsError(f"{where}: unknown top-level key(s) {sorted(unknown)}; only "
                                  f"`plugin` and `plugin_args` are allowed")
    given = data["plugin"]
    by_lower = {p.lower(): p for p in PLUGINS}
    name = by_lower.get(str(given).strip().lower()) if isinstance(given, str) else None
    if name is None:
        raise PluginSettingsError(f"{where}: plugin {given!r} is not supported; use one of "
                                  f"{', '.join(PLUGINS)}")
    args = data.get("plugin_args") or {}
    if not isinstance(args, dict):
        raise PluginSettingsError(f"{where}: `plugin_args` must be a mapping (key: value "
                                  f"lines), got {type(args).__name__}")
    return name, dict(args)


def _as_sbatch_args(value, where: str) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return " ".join(str(v) for v in value)
    raise PluginSettingsError(f"{where}: plugin_args.sbatch_args must be a string such as "
                              f"\"--partition=short --mem=4G\" (or a list of such words)")


def _check_args(name: str, args: dict, where: str, base: Path) -> None:
    """Validate (and normalise in place) plugin_args of plugin ``name``."""
    unknown = set(args) - ALLOWED_ARGS[name]
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_ARGS[name])) or "none"
        raise PluginSettingsError(f"{where}: plugin_args {sorted(unknown)} are not understood by "
                                  f"{name} (allowed: {allowed})")

    def number(key, minimum, integer=False):
        if key not in args:
            return
        value = args[key]
        ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
              and value >= minimum)
        if not ok:
            kind = "an integer" if integer else "a number"
            raise PluginSettingsError(f"{where}: plugin_args.{key} must be {kind} >= {minimum}, "
                                      f"got {value!r}")

    number("n_procs", 1, integer=True)
    number("n_gpu_procs", 0, integer=True)
    number("max_jobs", 1, integer=True)
    number("max_tries", 1, integer=True)
    number("memory_gb", 0.01)
    number("retry_timeout", 0)
    number("poll_sleep_duration", 0)
    for key in ("raise_insufficient", "dont_resubmit_completed_jobs"):
        if key in args and not isinstance(args[key], bool):
            raise PluginSettingsError(f"{where}: plugin_args.{key} must be true or false, "
                                      f"got {args[key]!r}")
    if "sbatch_args" in args:
        args["sbatch_args"] = _as_sbatch_args(args["sbatch_args"], where)
    if "template" in args:
        template = args["template"]
        if not isinstance(template, str) or not template.strip():
            raise PluginSettingsError(f"{where}: plugin_args.template must be the text of a job "
                                      f"script header or the path of a file holding it")
        # nipype takes a template that is not an existing file as literal script text, so a
        # mistyped path would silently become the first line of every job: refuse it here.
        if "\n" not in template and not template.startswith("#"):
            file = Path(template).expanduser()
            file = file if file.is_absolute() else base / file
            if not file.is_file():
                raise PluginSettingsError(f"{where}: plugin_args.template file {file} does not "
                                          f"exist; give an existing file or the script text "
                                          f"itself (starting with #!)")
            args["template"] = str(file.resolve())


# --------------------------------------------------------------------------------------------
# running a workflow


def configure_workflow(workflow, plugin: str, plugin_args: dict, work_dir: Path | str,
                       crash_dir: Path | str | None = None, *,
                       execution: dict | None = None) -> dict:
    """Set nipype's execution config on ``workflow`` and all its nodes; return nipype's args.

    - ``crashdump_dir`` = ``crash_dir`` (default ``WORK_DIR/crash``), text crash files;
    - ``poll_sleep_duration`` from ``plugin_args`` (taken out of the returned args);
    - ``execution``: more nipype config sections (``{"execution": {...}, "monitoring":
      {...}}``), e.g. ``stop_on_first_crash`` and the resource monitor, which the jobs of the
      Slurm plugins read from the nodes' config, not from this process's;
    - ``workflow.base_dir`` = ``work_dir`` when not set yet.

    Nodes keep a copy of the global nipype config from when they were created, and that copy
    wins over the workflow's at run time, so the keys are written into every node as well.
    """
    work_dir = Path(work_dir).absolute()
    crash_dir = Path(crash_dir).absolute() if crash_dir else work_dir / "crash"
    args = dict(plugin_args)
    poll = args.pop("poll_sleep_duration", None)
    sections = {key: dict(value) for key, value in (execution or {}).items()}
    sections.setdefault("execution", {}).update(crashdump_dir=str(crash_dir),
                                                crashfile_format="txt")
    for key, value in sections.items():
        workflow.config.setdefault(key, {}).update(value)
    if poll is not None:
        workflow.config["execution"]["poll_sleep_duration"] = str(poll)
    for node in workflow._get_all_nodes():
        node.config = node.config or {}
        for key, value in sections.items():
            node.config.setdefault(key, {}).update(value)
    if workflow.base_dir is None:
        workflow.base_dir = str(work_dir)
    return args


def run_workflow(workflow, plugin: str, plugin_args: dict, work_dir: Path | str,
                 crash_dir: Path | str | None = None, *, execution: dict | None = None):
    """Run ``workflow`` with the plugin; return nipype's execution graph.

    SLURMGraph submits the whole graph with afterok dependencies and returns at once; here we
    then wait until its jobs have left the queue (``squeue``) and check that every node has
    finished, so the caller sees the outcome as with the other plugins.
    Raises RuntimeError when nodes failed (crash files are in ``crash_dir``). ``execution``:
    see :func:`configure_workflow`.
    """
    args = configure_workflow(workflow, plugin, plugin_args, work_dir, crash_dir,
                              execution=execution)
    if plugin == "MultiProc":
        return workflow.run(plugin=guarded_multiproc(args))
    if plugin != "SLURMGraph":
        return workflow.run(plugin=plugin, plugin_args=args)

    poll = float(plugin_args.get("poll_sleep_duration", 2.0))
    token = f"bids_agquant:{uuid.uuid4().hex[:12]}"
    args["sbatch_args"] = f"{args.get('sbatch_args', '')} --comment={token}".strip()
    started = time.time()
    execgraph = workflow.run(plugin=plugin, plugin_args=args)
    wait_for_slurm_jobs(token, poll_s=poll)
    failed = [node.fullname for node in execgraph.nodes() if not _node_done(node)]
    if failed:
        crash = Path(workflow.config["execution"]["crashdump_dir"])
        crashes = sorted(str(p) for p in crash.glob("crash-*")
                         if p.stat().st_mtime >= started - 1) if crash.is_dir() else []
        raise RuntimeError(
            f"SLURMGraph: {len(failed)} of {execgraph.number_of_nodes()} nodes did not finish "
            f"({', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}); crash files: "
            f"{', '.join(crashes) or 'none, see the batch/*.e files in the work dir'}")
    return execgraph


def _guarded_call(fn, *args, **kwargs):
    """Run ``fn`` in a MultiProc worker; a failure of nipype's own ``run_node`` becomes a failed
    task instead of an exception lost in the pool (see :func:`guarded_multiproc`)."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        if getattr(fn, "__name__", "") != "run_node" or len(args) < 3:
            raise
        return {"result": None, "taskid": args[2],
                "traceback": traceback.format_exception(*sys.exc_info())}


class _GuardedPool:
    """The process pool of a MultiProc run, submitting every call through :func:`_guarded_call`."""

    def __init__(self, pool):
        self._pool = pool

    def submit(self, fn, *args, **kwargs):
        return self._pool.submit(_guarded_call, fn, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pool, name)


def downstream_counts(graph, nodes) -> list[int]:
    """How many nodes depend, directly or not, on each of ``nodes`` of the nipype ``graph``
    (a directed graph with ``successors``)."""
    counts = []
    for node in nodes:
        seen, todo = set(), list(graph.successors(node))
        while todo:
            nxt = todo.pop()
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(graph.successors(nxt))
        counts.append(len(seen))
    return counts


def guarded_multiproc(plugin_args: dict):
    """nipype's MultiProc plugin, made to end when a worker cannot report a node's result, and
    to start the nodes that most others wait for first.

    * nipype's worker function re-reads a failed node's result file; when the disk is full (or
      the quota exhausted) that file was never written, the worker raises, the pool's callback
      raises in turn and the task is never marked done: MultiProc then waits for ever.  Here
      such a worker returns a failed task with the error, so nipype reports the node as crashed
      (or raises the OSError of the full disk) and the command line ends with its exit code.
    * Of the nodes ready to run, nipype's default ("tsort") takes them in topological order:
      every registration of every session before the first resampling, so the baseline's brain
      extraction, which every quantification waits for, starts only once all registrations are
      done and then runs alone.  Here ready nodes are taken by decreasing number of nodes
      downstream of them (:func:`downstream_counts`; ties in topological order), so that chain
      runs beside the other sessions' registrations.  Only the order changes, never a result.
      ``scheduler: mem_thread`` in a plugin file keeps nipype's own order by memory.
    """
    from nipype.pipeline.plugins.multiproc import MultiProcPlugin  # nipype: slow to import

    class _MultiProc(MultiProcPlugin):
        def _generate_dependency_list(self, graph):
            super()._generate_dependency_list(graph)
            self._downstream = downstream_counts(graph, self.procs)

        def _sort_jobs(self, jobids, scheduler="tsort"):
            if scheduler == "mem_thread":
                return super()._sort_jobs(jobids, scheduler=scheduler)
            count = self._downstream
            return sorted(jobids, key=lambda j: -count[j] if j < len(count) else 0)

    runner = _MultiProc(plugin_args=dict(plugin_args))
    runner.pool = _GuardedPool(runner.pool)
    return runner


def _node_done(node) -> bool:
    try:
        return bool(node.hash_exists()[0])
    except Exception:  # inputs from a failed upstream node cannot be hashed
        return False


def slurm_jobs_with_comment(token: str) -> list[str]:
    """IDs of this user's queued or running jobs whose comment is ``token``."""
    out = subprocess.run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i|%k"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|", 1)[0] for line in out.splitlines()
            if line.split("|", 1)[-1].strip() == token]


def wait_for_slurm_jobs(token: str, poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Block until no job with comment ``token`` is in the Slurm queue.

    squeue errors (a busy controller) are retried; ``timeout_s`` None waits for ever.
    """
    t0 = time.monotonic()
    last_report = t0
    errors = 0
    while True:
        try:
            jobs = slurm_jobs_with_comment(token)
            errors = 0
        except (subprocess.CalledProcessError, OSError) as exc:
            errors += 1
            if errors > 30:
                raise RuntimeError(f"squeue keeps failing ({exc}); cannot follow the "
                                   f"SLURMGraph jobs (comment {token})") from exc
            jobs = ["?"]
        if not jobs:
            return
        now = time.monotonic()
        if timeout_s is not None and now - t0 > timeout_s:
            raise TimeoutError(f"Slurm jobs {jobs} (comment {token}) still queued after "
                               f"{timeout_s:.0f} s")
        if now - last_report > 300:
            LOGGER.info("waiting for %d Slurm job(s) of this run (comment %s)", len(jobs), token)
            last_report = now
        time.sleep(poll_s)
