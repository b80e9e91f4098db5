"""The image, run the way sites run it (issue 14): real podman or docker, the real sample dataset.

- the image's own user, ``/bids`` mounted read-only: participant and group level give the same
  maps (array-identical) and tables as the venv run of the same commit, and ``/bids`` is unchanged;
- the way Apptainer runs: an arbitrary host uid:gid, a read-only root filesystem, a HOME that
  does not exist, only the variables Apptainer sets; the same outputs;
- exit codes pass through; ``GeneratedBy.Container`` names the engine and the image;
- an output folder the container user cannot write: exit 73 and how to fix it for containers;
- the image itself: non-root, entrypoint, OCI labels, no pip, no compilers, no test folders.

Times of the runs are printed (``-s``) for the notes; nothing is timed in an assertion.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from containerkit import (ENGINE, TIMES, checksums, engine_run, ok, run, same_outputs, timed,
                          writable_mode)
from evaldata import REPO, SAMPLE_BIDS

pytestmark = pytest.mark.container

APPTAINER_UID = 12345


@pytest.fixture(scope="module")
def image_outputs(image, tmp_path_factory, bids_copy) -> tuple[Path, dict, dict]:
    """Participant and group level as the image's user; outputs and work on bind mounts
    the image's user can write (podman's :U, a chown for docker), /bids read-only."""
    before = checksums(bids_copy)
    root = tmp_path_factory.mktemp("image")
    out, work = root / "out", root / "work"
    out.mkdir()
    work.mkdir()
    mounts = [(bids_copy, "/bids", "ro"), (out, "/out", writable_mode(out)),
              (work, "/work", writable_mode(work))]
    timed("image participant", lambda: ok(engine_run(
        image, "/bids", "/out", "participant", "-w", "/work", "--nprocs", "2", mounts=mounts),
        "participant in the image"))
    ok(engine_run(image, "/bids", "/out", "group", mounts=mounts), "group in the image")
    return out, before, checksums(bids_copy)


def test_version_and_help_need_no_mount(image):
    version = ok(engine_run(image, "--version"), "--version")
    assert "bids-agquant" in version.stdout + version.stderr
    assert "participant" in ok(engine_run(image, "--help"), "--help").stdout
    assert "usage" in ok(engine_run(image), "no arguments (CMD --help)").stdout.lower()


def test_image_is_slim_non_root_and_labelled(image):
    info = json.loads(ok(run([ENGINE, "image", "inspect", image]), "inspect").stdout)[0]
    config = info["Config"]
    assert config["User"] not in ("", "root", "0")
    assert config["Entrypoint"] == ["bids-agquant"]
    labels = config["Labels"]
    version = REPO.joinpath("pyproject.toml").read_text().split('version = "')[1].split('"')[0]
    assert labels["org.opencontainers.image.version"] == version
    for key in ("source", "licenses", "revision", "title"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    print(f"\n[container size] {image}: {info['Size'] / 1e6:.0f} MB")
    probe = ok(engine_run(image, "-c", "command -v gcc cc pip pip3 || true; "
                          "find /opt/venv -type d -name tests | head -3; "
                          "ls /root/.cache /home/agquant/.cache 2>/dev/null | head -3",
                          options=["--entrypoint", "sh"]), "probe")
    assert probe.stdout.strip() == "", f"compilers, pip, tests or caches in the image: {probe.stdout}"


def test_image_user_run_equals_the_venv_run(image_outputs, venv_outputs, bids_copy):
    out, before, after = image_outputs
    assert after == before, "the container changed the read-only input dataset"
    print(f"\n[container compare] image user vs venv: {same_outputs(venv_outputs, out, bids_copy)}")
    desc = json.loads((out / "dataset_description.json").read_text())
    container = desc["GeneratedBy"][0]["Container"]
    assert container["Type"] == Path(ENGINE).name
    assert container["Tag"].startswith("bids_agquant:")
    assert (out / "group").is_dir() and (out / "sub-01.html").is_file()
    if "venv participant" in TIMES and "image participant" in TIMES:
        ratio = TIMES["image participant"] / TIMES["venv participant"]
        print(f"\n[container timing] image / venv participant: {ratio:.2f}")


def test_apptainer_like_run(image, tmp_path, bids_copy, venv_outputs):
    """As Apptainer runs an image: the host user's uid:gid (no passwd entry), the image
    read-only, HOME absent, only the variables Apptainer itself sets (APPTAINER_CONTAINER), a
    writable /tmp (Apptainer binds the host's; podman --read-only has one, docker needs
    --tmpfs); work and outputs on bind mounts owned by that user. Participant 01."""
    out, work = tmp_path / "out", tmp_path / "work"
    for d in (out, work):
        d.mkdir()
        os.chown(d, APPTAINER_UID, APPTAINER_UID)
    sif = "/images/bids_agquant.sif"
    options = ["--user", f"{APPTAINER_UID}:{APPTAINER_UID}", "--read-only", "--tmpfs", "/tmp",
               "--env", "HOME=/home/nobody", "--env", f"APPTAINER_CONTAINER={sif}",
               "--env", "BIDS_AGQUANT_CONTAINER_TAG="]
    mounts = [(bids_copy, "/bids", "ro"), (out, "/out", None), (work, "/work", None)]
    timed("apptainer-like participant 01", lambda: ok(engine_run(
        image, "/bids", "/out", "participant", "--participant-label", "01", "-w", "/work",
        "--nprocs", "2", mounts=mounts, options=options), "Apptainer-like participant"))
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Container"] == {"Type": "apptainer",
                                                   "Tag": "bids_agquant.sif"}
    assert all(p.stat().st_uid == APPTAINER_UID for p in out.rglob("*"))
    # the same files as the venv run for this participant
    theirs = tmp_path / "venv_sub-01"
    shutil.copytree(venv_outputs / "sub-01", theirs / "sub-01")
    mine = tmp_path / "image_sub-01"
    shutil.copytree(out / "sub-01", mine / "sub-01")
    print(f"\n[container compare] Apptainer-like vs venv, sub-01: {same_outputs(theirs, mine, bids_copy)}")


def test_bad_input_exit_code_passes_through(image, tmp_path):
    bids = Path(shutil.copytree(SAMPLE_BIDS, tmp_path / "bids"))
    sidecar = bids / "sub-01/ses-D0/anat/sub-01_ses-D0_flip-2_VFA.json"
    meta = json.loads(sidecar.read_text())
    del meta["FlipAngle"]
    sidecar.write_text(json.dumps(meta))
    proc = engine_run(image, "/bids", "/out", "participant", "--print-plan",
                      mounts=[(bids, "/bids", "ro")])
    assert proc.returncode == 65, proc.stderr[-2000:]
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("bids-agquant: error: ") and "FlipAngle is missing" in first
    assert "Traceback" not in proc.stderr


def test_unwritable_output_folder_says_how_to_fix_it_for_containers(image, tmp_path):
    out = tmp_path / "root_owned"
    out.mkdir(mode=0o755)                      # owned by the host's root, not the image's user
    proc = engine_run(image, "/bids", "/out", "participant", "--participant-label", "01",
                      mounts=[(SAMPLE_BIDS, "/bids", "ro"), (out, "/out", None)])
    assert proc.returncode == 73, proc.stderr[-2000:]
    first = proc.stderr.strip().splitlines()[0]
    assert "OUTPUT_DIR /out cannot be created or written" in first
    for advice in ("--user $(id -u):$(id -g)", ":U", "chown 1000"):
        assert advice in first, advice
    assert not any(out.iterdir())
