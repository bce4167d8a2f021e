# syntax=docker/dockerfile:1
# One image for every streamer process; the command picks the kind:
#   docker run IMAGE worker | gateway | bridge rabbitmq | bridge pubsub | status --json
# Build from the repository root: docker build -t streamer .
# Without Docker or a registry, `just image` builds this same file with buildah on a Debian
# bookworm base bootstrapped on the machine (--build-arg BASE_IMAGE=…; see README).

# The official slim Python image, pinned by the digest of its multi-platform index
# (python:3.12-slim-bookworm, Python 3.12.14, published 2026-08-25, as recorded by
# docker-library/repo-info). Move tag and digest together, deliberately.
ARG BASE_IMAGE=python:3.12-slim-bookworm@sha256:0f5b26b9518d002b6173fd61daad821fa340635ebfec5bba471013f9ca114579

# --- build: a virtualenv with streamer and its dependencies ------------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Compilers live in this stage only, for a dependency without a wheel for the platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/streamer
ENV PATH=/opt/streamer/bin:$PATH
# Dependencies first, from empty packages in a throw-away directory, so a source or README
# change reuses this layer (and no stale build output can shadow the real sources below).
# The constraints pin the versions the test suite ran with (`just lock`).
COPY pyproject.toml constraints.txt /stub/
RUN mkdir /stub/streamer /stub/bridges \
    && touch /stub/README.md /stub/streamer/__init__.py /stub/bridges/__init__.py \
    && pip install --constraint /stub/constraints.txt /stub \
    && pip uninstall -y streamer && rm -rf /stub
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
COPY bridges ./bridges
RUN pip install --no-deps . && python -m compileall -q /opt/streamer

# --- users: the base's accounts plus the unprivileged one the processes run as -------------
# A stage of its own so the runtime stage has no RUN step: a build that bind-mounts files
# into RUN steps (`just image` mounts the machine's pip configuration) leaves their empty
# mount points behind in that stage.
FROM ${BASE_IMAGE} AS users
RUN groupadd --system --gid 10001 streamer \
    && useradd --system --uid 10001 --gid streamer --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin streamer

# --- runtime: the virtualenv on a clean base, as an unprivileged user ----------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="streamer" \
      org.opencontainers.image.description="CreativeFlow notification delivery: worker, gateway, bridges"
COPY --from=users /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/
COPY --from=build /opt/streamer /opt/streamer
ENV PATH=/opt/streamer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
# 8765: gateway WebSockets + its /metrics and /healthz; 9100: worker /metrics and /healthz;
# 9102 and 9103: the RabbitMQ and Pub/Sub bridges' /metrics and /healthz; 8780: the HTTP
# publish API (`streamer api`, with API_HOST=0.0.0.0 to be reachable from outside).
EXPOSE 8765 8780 9100 9102 9103
# Every process drains in-flight work on SIGTERM and exits 0.
STOPSIGNAL SIGTERM
# `streamer healthcheck`, run as a module so it imports one settings reader, not the whole
# CLI: it finds the kind PID 1 runs and probes /healthz on the port that kind serves
# (HEALTHCHECK_URL overrides). An HTTP error (503: Redis or broker unreachable) fails it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "streamer.ops.healthcheck"]
ENTRYPOINT ["streamer"]
CMD ["worker"]
