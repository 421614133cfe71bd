# syntax=docker/dockerfile:1
# One image for every deepscan service: migrate, worker, beat and flower (see docker-compose.yml).
#
# PyPI's Linux torch wheels bundle the CUDA runtime, so a plain Python base image runs on the GPU
# once the host's NVIDIA Container Toolkit injects the driver; no CUDA base image is needed.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deepscan ./deepscan
COPY scanner ./scanner
COPY workers ./workers
COPY training ./training
COPY migrations ./migrations
# The `monitoring` extra is Flower, the Celery monitor the flower service runs.
RUN pip install ".[monitoring]"

FROM ${PYTHON_IMAGE}
# libglib2.0-0: OpenCV's video decoding links it even in the headless wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --create-home --home-dir /home/deepscan deepscan \
    && install -d -o deepscan -g deepscan /var/lib/deepscan /run/deepscan-gpus /checkpoints /media
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/claim-gpu.sh /usr/local/bin/claim-gpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEEPSCAN_HOME=/var/lib/deepscan
USER deepscan
WORKDIR /var/lib/deepscan
CMD ["deepscan", "--help"]
