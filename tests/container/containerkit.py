"""The engine and image the container checks use (set by scripts/container_check.sh)."""
import os

ENGINE = os.environ.get("BIDS_AGQUANT_CONTAINER_ENGINE", "podman")
IMAGE = os.environ.get("BIDS_AGQUANT_IMAGE")
