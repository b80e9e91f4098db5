# bids_agquant BIDS-App image. Built and run for real by scripts/container_check.sh (in CI:
# podman, a base image made without any registry, the sample dataset run in the image). The
# install step is exactly the one the tests replay (tests/hpc/test_container_recipes.py): the
# pinned set in constraints.txt, nothing else. Keep apptainer/bids_agquant.def in step.
#
#   docker build -t bids_agquant:0.1.0 .
#   docker run --rm -v /data/bids:/bids:ro -v /data/out:/out -v /scratch/work:/work \
#       bids_agquant:0.1.0 /bids /out participant --participant-label 01 -w /work
#
# PYTHON_IMAGE: any Debian-based image with Python 3.11 and its venv module (python3 on PATH),
# e.g. python:3.11-slim-bookworm, or Debian bookworm itself (scripts/container_check.sh).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build stage: the virtual environment (pip and its cache stay here) ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/bids_agquant
COPY pyproject.toml README.md constraints.txt ./
COPY bids_agquant ./bids_agquant

# install: begin
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install -c constraints.txt . \
 && /opt/venv/bin/bids-agquant --version
# install: end

# what only installs or tests is not shipped (pip, build tools, caches, the packages' own test
# folders: 190 MB); the rest is compiled to
# bytecode now, because the image is read-only at run time (Apptainer, --read-only)
RUN /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null; \
    find /opt/venv -depth -type d \( -name __pycache__ -o -name tests \) -exec rm -rf {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib >/dev/null \
 && /opt/venv/bin/bids-agquant --version

# ---- run stage ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG VCS_REF=unknown
# the published name, recorded in dataset_description.json GeneratedBy.Container.Tag
ARG IMAGE_NAME=bids_agquant
LABEL org.opencontainers.image.title="bids_agquant" \
      org.opencontainers.image.description="BIDS-App: quantitative MRI of gadolinium nanoparticles (AGuIX) in brain metastases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/bids-agquant/bids_agquant" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_AGQUANT_CONTAINER_TAG=${IMAGE_NAME}:${VERSION}

COPY --from=build /opt/venv /opt/venv

# an unprivileged user; bind-mounted outputs must be writable by it (or run with --user)
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin agquant \
 && mkdir -p /bids /out /work && chown agquant /out /work
USER agquant
WORKDIR /home/agquant

ENTRYPOINT ["bids-agquant"]
CMD ["--help"]
