# syntax=docker/dockerfile:1
#
# catapush-dispatcher container image.
#
#   docker build -t catapush-dispatcher:0.1.0 .
#   docker run --rm -e DISPATCHER_REDIS_URL=redis://redis:6379/0 catapush-dispatcher:0.1.0          # worker, metrics on 9090
#   docker run --rm -p 8000:8000 catapush-dispatcher:0.1.0 serve --host 0.0.0.0 --port 8000         # HTTP intake
#
# Pin the base image by digest for a reproducible build:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
#
# Runtime dependencies are pinned by requirements.lock; the image holds nothing but the
# Python runtime and a virtualenv with the dispatcher installed in it (no demo extras: the
# embedded Redis of `dispatcher demo` is not production code).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# build: install the project and its pinned dependencies into /opt/venv
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
COPY requirements.lock pyproject.toml README.md LICENSE ./
COPY dispatcher ./dispatcher
RUN pip install --no-cache-dir -c requirements.lock . \
 && dispatcher --help > /dev/null

# ---------------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG IMAGE_VERSION=0.1.0
ARG IMAGE_SOURCE=""
ARG IMAGE_REVISION=""

LABEL org.opencontainers.image.title="catapush-dispatcher" \
      org.opencontainers.image.description="Delivers push notifications through Catapush: producers enqueue intents in Redis, workers send them with one shared rate limit, backoff and dead letters." \
      org.opencontainers.image.version="${IMAGE_VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.revision="${IMAGE_REVISION}" \
      org.opencontainers.image.licenses="MIT"

# Fixed numeric ids, so that Kubernetes' runAsNonRoot can check them.
RUN groupadd --system --gid 10001 dispatcher \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin dispatcher

COPY --from=build /opt/venv /opt/venv

ENV VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DISPATCHER_LOG_FORMAT=json

# An empty working directory: settings come from the environment (a .env file here would be read too).
WORKDIR /app

USER 10001:10001

# `dispatcher serve --port 8000`, and the default command's `--metrics-port 9090` (the
# worker's /healthz, /readyz and /metrics; process i of --processes N listens on 9090 + i).
EXPOSE 8000 9090

# The worker stops taking messages and drains in-flight sends on SIGTERM.
STOPSIGNAL SIGTERM

ENTRYPOINT ["dispatcher"]
CMD ["worker", "--metrics-port", "9090"]
