#!/usr/bin/env bash
# The container, built and run the way sites run it (issue 14). Called by .ci/run and by
# `make container-check`; needs root (or sudo) for apt, podman and dockerd.
#
#   1. Debian packages: podman, runc, mmdebstrap, uidmap, docker.io (skipped when present).
#   2. A base image without any image registry: Debian bookworm (Python 3.11) made by mmdebstrap
#      from this machine's own apt sources, imported as localhost/bookworm-py (reused if present).
#   3. podman: the image built from the unedited Dockerfile (the machine's CA bundle mounted
#      read-only for pip during the build, never copied into the image), then the checks
#      (tests/container/, real runs of data/sample_bids): outputs identical to the venv run,
#      /bids read-only and unchanged, the image's user and an Apptainer-like run (arbitrary
#      uid:gid, read-only root, no writable HOME, clean environment), exit codes,
#      GeneratedBy.Container, an unwritable output folder, and, when a Slurm cluster answers
#      (SLURM_CONF, as in .ci/run), the array job of scripts/submit_slurm.sh running the image.
#   4. docker: dockerd started with its own data and exec roots under the state folder and
#      stopped by its PID; the base loaded from podman; the image built from the same Dockerfile
#      by docker's classic builder, which cannot mount the CA bundle, so the build starts from a
#      test-only base that adds it (localhost/bookworm-py-hostca: never published); the same
#      checks but Slurm and, unless DOCKER_CHECKS=all, the Apptainer-like run (CI time).
#
# Environment: CONTAINER_ENGINES (default "podman docker"), DOCKER_CHECKS (ci or all), BIDS_AGQUANT_IMAGE (default
# bids_agquant:<version>), BIDS_AGQUANT_BASE_IMAGE (default localhost/bookworm-py),
# CONTAINER_CHECK_DIR (default /var/tmp/bids_agquant_container).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGE=${BIDS_AGQUANT_IMAGE:-bids_agquant:$VERSION}
BASE=${BIDS_AGQUANT_BASE_IMAGE:-localhost/bookworm-py}
STATE=${CONTAINER_CHECK_DIR:-/var/tmp/bids_agquant_container}
ENGINES=${CONTAINER_ENGINES:-podman docker}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$STATE"
log() { printf '%s container-check: %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- 1. packages ------------------------------------------------------------------------------
need=()
pkgs=(podman runc mmdebstrap uidmap)
case " $ENGINES " in *" docker "*) pkgs+=(docker.io) ;; esac
for pkg in "${pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$STATE/apt.log" 2>&1 \
        || { $SUDO apt-get update -q >>"$STATE/apt.log" 2>&1 \
             && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" \
                >>"$STATE/apt.log" 2>&1; }
fi

# podman settings this machine needs: runc (crun refuses its hybrid cgroups), limits root cannot
# raise, a file events log (no journald)
export CONTAINERS_CONF="$STATE/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
events_logger = "file"
cgroup_manager = "cgroupfs"
EOF

# --- 2. base ----------------------------------------------------------------------------------
if ! $SUDO podman image exists "$BASE"; then
    sources=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [ -n "$sources" ] || { echo "container-check: no deb822 apt sources file" >&2; exit 1; }
    log "making the base $BASE with mmdebstrap from $sources"
    t0=$(date +%s)
    # no manual pages, translations or documentation (but the copyright files): 50 MB less
    $SUDO mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm "$STATE/base.tar" "$sources"
    $SUDO podman import --quiet --change 'CMD ["/bin/bash"]' "$STATE/base.tar" "$BASE" >/dev/null
    $SUDO rm -f "$STATE/base.tar"
    log "base made in $(( $(date +%s) - t0 )) s"
fi

# --- 3. podman ---------------------------------------------------------------------------------
# the venv run that every pass compares with, made once (tests/testkit.py sample_reference_run):
# .ci/run's, shared with its Slurm tests, or one made here
if [ -z "${BIDS_AGQUANT_SAMPLE_REFERENCE:-}" ]; then
    export BIDS_AGQUANT_SAMPLE_REFERENCE="$STATE/reference"
    rm -rf "$BIDS_AGQUANT_SAMPLE_REFERENCE"
fi
vcs_ref=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
status=0

if [[ " $ENGINES " == *" podman "* ]]; then
    log "podman: building $IMAGE from the Dockerfile"
    t0=$(date +%s)
    $SUDO podman build --quiet --build-arg "PYTHON_IMAGE=$BASE" --build-arg "VCS_REF=$vcs_ref" \
        -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
        -t "$IMAGE" . >"$STATE/build.log" 2>&1 || { tail -30 "$STATE/build.log" >&2; exit 1; }
    log "podman: image built in $(( $(date +%s) - t0 )) s:" \
        "$($SUDO podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
    BIDS_AGQUANT_IMAGE="$IMAGE" BIDS_AGQUANT_CONTAINER_ENGINE=podman \
        .venv/bin/python -m pytest -q -s -m container tests/container || status=1
fi

# --- 4. docker ----------------------------------------------------------------------------------
if [[ " $ENGINES " == *" docker "* ]]; then
    DOCKER=/usr/bin/docker                   # Debian's client, the daemon's own version
    export DOCKER_HOST="unix://$STATE/docker.sock"
    pidfile="$STATE/dockerd.pid"
    stop_dockerd() {
        [ -s "$pidfile" ] || return 0
        local pid; pid=$(cat "$pidfile")
        $SUDO kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        rm -f "$pidfile"
    }
    stop_dockerd                             # one left over by an interrupted run
    log "docker: starting dockerd"
    $SUDO dockerd --data-root "$STATE/docker" --exec-root "$STATE/docker-exec" \
        --pidfile "$pidfile" --host "$DOCKER_HOST" --storage-driver overlay2 \
        >"$STATE/dockerd.log" 2>&1 &
    trap 'stop_dockerd' EXIT
    for _ in $(seq 60); do $SUDO $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
    $SUDO $DOCKER info >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; exit 1; }

    if ! $SUDO $DOCKER image inspect "$BASE-hostca" >/dev/null 2>&1; then
        log "docker: loading $BASE and adding the CA bundle for the test build"
        $SUDO podman save --format docker-archive "$BASE" | $SUDO $DOCKER load >/dev/null
        ctx=$(mktemp -d)
        cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
        printf 'FROM %s\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n' \
            "$BASE" >"$ctx/Dockerfile"
        DOCKER_BUILDKIT=0 $SUDO $DOCKER build -q -t "$BASE-hostca" "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
    log "docker: building $IMAGE from the Dockerfile"
    t0=$(date +%s)
    DOCKER_BUILDKIT=0 $SUDO $DOCKER build -q --build-arg "PYTHON_IMAGE=$BASE-hostca" \
        --build-arg "VCS_REF=$vcs_ref" -t "$IMAGE" . >"$STATE/docker-build.log" 2>&1 \
        || { tail -30 "$STATE/docker-build.log" >&2; exit 1; }
    log "docker: image built in $(( $(date +%s) - t0 )) s:" \
        "$($SUDO $DOCKER image inspect "$IMAGE" --format '{{.Size}}') bytes"
    # the Apptainer-like run is a property of the image that the podman pass has shown; it runs
    # under docker too with DOCKER_CHECKS=all (make container-check-all)
    skip=(); [ "${DOCKER_CHECKS:-ci}" = all ] || skip=(-k "not apptainer_like")
    PATH="/usr/bin:$PATH" BIDS_AGQUANT_IMAGE="$IMAGE" BIDS_AGQUANT_CONTAINER_ENGINE=docker \
        .venv/bin/python -m pytest -q -s -m "container and not slurm" "${skip[@]}" tests/container \
        || status=1
    stop_dockerd
    trap - EXIT
fi
exit $status
