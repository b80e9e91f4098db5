#!/usr/bin/env bash
# The container, built and run the way sites run it (issue 14). Called by .ci/run and by
# `make container-check`; needs root (or sudo) for apt and podman.
#
#   1. Debian packages: podman, runc, mmdebstrap (skipped when present).
#   2. A base image without any image registry: Debian bookworm (Python 3.11) made by mmdebstrap
#      from this machine's own apt sources, imported as localhost/bookworm-py (reused if present).
#   3. The image, built from the unedited Dockerfile with podman (the machine's CA bundle mounted
#      read-only for pip during the build, never copied into the image).
#   4. Checks (tests/container/test_container.py, real podman, real runs of data/sample_bids):
#      outputs identical to the venv run, /bids read-only and unchanged, the image's user and an
#      Apptainer-like run (arbitrary uid:gid, read-only root, no writable HOME, clean environment),
#      exit codes, GeneratedBy.Container, an unwritable output folder.
#
# Environment: BIDS_AGQUANT_IMAGE (default bids_agquant:<version>), BIDS_AGQUANT_BASE_IMAGE
# (default localhost/bookworm-py), CONTAINER_CHECK_DIR (default /var/tmp/bids_agquant_container).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGE=${BIDS_AGQUANT_IMAGE:-bids_agquant:$VERSION}
BASE=${BIDS_AGQUANT_BASE_IMAGE:-localhost/bookworm-py}
STATE=${CONTAINER_CHECK_DIR:-/var/tmp/bids_agquant_container}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$STATE"
log() { printf '%s container-check: %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- 1. packages ------------------------------------------------------------------------------
need=()
for pkg in podman runc mmdebstrap uidmap; do
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
    $SUDO podman import --change 'CMD ["/bin/bash"]' "$STATE/base.tar" "$BASE" >/dev/null
    $SUDO rm -f "$STATE/base.tar"
    log "base made in $(( $(date +%s) - t0 )) s"
fi

# --- 3. image ---------------------------------------------------------------------------------
log "building $IMAGE from the Dockerfile"
t0=$(date +%s)
$SUDO podman build --quiet --build-arg "PYTHON_IMAGE=$BASE" \
    --build-arg "VCS_REF=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
    -t "$IMAGE" . >"$STATE/build.log" 2>&1 || { tail -30 "$STATE/build.log" >&2; exit 1; }
log "image built in $(( $(date +%s) - t0 )) s: $($SUDO podman image inspect "$IMAGE" --format '{{.Size}}') bytes"

# --- 4. checks --------------------------------------------------------------------------------
export BIDS_AGQUANT_IMAGE="$IMAGE" BIDS_AGQUANT_CONTAINER_ENGINE=podman
.venv/bin/python -m pytest -q -s -m container tests/container
