"""The container recipes install exactly the pinned set, and agree with each other.

No container engine runs on the development machines, so the Dockerfile's install step (the
RUN between ``# install: begin`` and ``# install: end``) is replayed here in a fresh venv of the
same Python minor version, from a copy of exactly the files the Dockerfile COPYs. The images
themselves are built in GitHub Actions (.github/workflows/container.yml).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
APPTAINER_DEF = REPO / "apptainer" / "bids_agquant.def"
CONSTRAINTS = REPO / "constraints.txt"
VENV_IN_IMAGE = "/opt/venv"


# ------------------------------------------------------------------------------------ parsing

def docker_instructions(text: str) -> list[tuple[str, str, bool]]:
    """(INSTRUCTION, arguments, inside the install markers) with continuation lines joined."""
    out, buf, inside, buf_inside = [], "", False, False
    for raw in text.splitlines():
        line = raw.strip()
        if line == "# install: begin":
            inside = True
            continue
        if line == "# install: end":
            inside = False
            continue
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            buf_inside = inside
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip(), buf_inside))
        buf = ""
    return out


def dockerfile_recipe() -> dict:
    inst = docker_instructions(DOCKERFILE.read_text())
    args = {}
    for word, rest, _ in inst:
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args.setdefault(key, value)
    base = next(rest for word, rest, _ in inst if word == "FROM").split(" AS ")[0].strip()
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    workdir = next(rest for word, rest, _ in inst if word == "WORKDIR")
    copies = []
    for word, rest, _ in inst:
        if word == "COPY" and not rest.startswith("--from"):   # not a copy between stages
            *sources, dest = shlex.split(rest)
            copies += [(s, str(Path(workdir, dest, Path(s).name) if dest.endswith("/") or
                                   dest == "." or len(sources) > 1 else Path(workdir, dest)))
                       for s in sources]
    install = [rest for word, rest, inside in inst if word == "RUN" and inside]
    commands = [c.strip() for run in install for c in run.split("&&")]
    labels = dict(re.findall(r'([\w.]+)="([^"]*)"',
                             " ".join(rest for word, rest, _ in inst if word == "LABEL")))
    labels = {k: re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], v) for k, v in labels.items()}
    entrypoint = next(rest for word, rest, _ in inst if word == "ENTRYPOINT")
    users = [rest for word, rest, _ in inst if word == "USER"]
    return dict(base=base, workdir=workdir, copies=sorted(copies), install=commands,
                labels=labels, entrypoint=entrypoint, users=users)


def apptainer_recipe() -> dict:
    sections, current = {}, "header"
    for raw in APPTAINER_DEF.read_text().splitlines():
        if raw.startswith("%"):
            current = raw.split()[0][1:]
            continue
        sections.setdefault(current, []).append(raw)
    header = dict(line.split(":", 1) for line in sections["header"]
                  if ":" in line and not line.lstrip().startswith("#"))
    labels = dict(line.split(None, 1) for line in (x.strip() for x in sections["labels"]) if line)
    return dict(base=header["From"].strip(), bootstrap=header["Bootstrap"].strip(),
                labels=labels, sections=sections)


def pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def pinned() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------ tests

def test_apptainer_image_is_made_from_the_docker_image():
    """One recipe: the definition file converts the saved OCI image (no second install)."""
    docker, appt = dockerfile_recipe(), apptainer_recipe()
    assert appt["bootstrap"] == "docker-archive" and appt["base"].endswith(".tar")
    assert not appt["sections"].get("post"), "the image is built by the Dockerfile only"
    assert "exec /opt/venv/bin/bids-agquant" in "\n".join(appt["sections"]["runscript"])
    version = pyproject_version()
    assert docker["labels"]["org.opencontainers.image.version"] == version
    assert appt["labels"]["org.opencontainers.image.version"] == version
    assert f"BIDS_AGQUANT_CONTAINER_TAG=bids_agquant:{version}" in "\n".join(
        appt["sections"]["environment"])


def test_dockerfile_is_a_bids_app_image():
    docker = dockerfile_recipe()
    # slim Python base of the minor version the project (and this test run) uses
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", docker["base"])
    assert match, docker["base"]
    assert (int(match[1]), int(match[2])) == sys.version_info[:2]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={match[1]}.{match[2]}"
    # installs the package with the pinned constraints and nothing else
    pip = [c for c in docker["install"] if " pip install" in c]
    assert pip == [f"{VENV_IN_IMAGE}/bin/python -m pip install -c constraints.txt ."]
    assert docker["entrypoint"] == '["bids-agquant"]'
    assert docker["users"] and docker["users"][-1] not in ("root", "0")
    assert {"constraints.txt", "pyproject.toml", "bids_agquant"} <= {s for s, _ in docker["copies"]}


def test_makefile_installs_with_the_same_constraints():
    makefile = (REPO / "Makefile").read_text()
    assert "-c constraints.txt" in makefile


@pytest.mark.slow
def test_dockerfile_install_step_in_fresh_venv(tmp_path):
    """Replay the Dockerfile's COPY + install RUN in a fresh venv: a working bids-agquant with
    exactly the pinned versions (the image gets the same set)."""
    docker = dockerfile_recipe()
    context = tmp_path / "image"
    for source, dest in docker["copies"]:
        target = context / Path(dest).relative_to(docker["workdir"])
        target.parent.mkdir(parents=True, exist_ok=True)
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, target)
    venv = tmp_path / "venv"
    script = " && ".join(docker["install"]).replace(VENV_IN_IMAGE, str(venv))
    # the image's `python` is the base image's interpreter; here: this interpreter's minor version
    script = re.sub(r"^python3? ", f"{shlex.quote(sys_python())} ", script)
    proc = subprocess.run(["bash", "-c", script], cwd=context, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    version = subprocess.run([str(venv / "bin" / "bids-agquant"), "--version"],
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert pyproject_version() in version.stdout + version.stderr

    freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                             "--format=freeze"], capture_output=True, text=True, check=True)
    installed = {}
    for line in freeze.stdout.split():
        if "==" in line:
            name, version = line.split("==", 1)
            installed[canonical(name)] = version
    pins = pinned()
    own = {"bids-agquant", "pip", "setuptools", "wheel"}
    unpinned = sorted(set(installed) - set(pins) - own)
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    wrong = {n: (v, pins[n]) for n, v in installed.items() if n in pins and v != pins[n]}
    assert not wrong, f"installed != pinned: {wrong}"
    # the runtime dependencies are all there
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in runtime:
        assert canonical(re.split(r"[<>=!~ \[]", requirement)[0]) in installed


def sys_python() -> str:
    """An interpreter of this minor version that is not inside a venv (like the base image's)."""
    return getattr(sys, "_base_executable", None) or sys.executable
