# bids_agquant BIDS-App image. Built and pushed by GitHub Actions (.github/workflows/container.yml);
# no container engine is needed to develop the app. The install step is exactly the one the tests
# use (tests/hpc/test_container_recipes.py runs it in a fresh venv): the pinned set in
# constraints.txt, nothing else. Keep apptainer/bids_agquant.def in step with this file.
#
#   docker build -t bids_agquant:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out -v /scratch/work:/work \
#       bids_agquant:0.1.0 /data /out participant --participant-label 01 -w /work
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG VCS_REF=unknown
# the published name, recorded in dataset_description.json GeneratedBy.Container.Tag
ARG IMAGE_NAME=bids_agquant
LABEL org.opencontainers.image.title="bids_agquant" \
      org.opencontainers.image.description="BIDS-App: quantitative MRI of gadolinium nanoparticles (AGuIX) in brain metastases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_AGQUANT_CONTAINER_TAG=${IMAGE_NAME}:${VERSION}

WORKDIR /opt/bids_agquant
COPY pyproject.toml README.md constraints.txt ./
COPY bids_agquant ./bids_agquant

# install: begin
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install -c constraints.txt . \
 && /opt/venv/bin/bids-agquant --version
# install: end

# an unprivileged user; bind-mounted outputs must be writable by it (or run with --user)
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin agquant \
 && mkdir -p /data /out /work && chown agquant /out /work
USER agquant
WORKDIR /home/agquant

ENTRYPOINT ["bids-agquant"]
CMD ["--help"]
