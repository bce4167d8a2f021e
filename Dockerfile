# syntax=docker/dockerfile:1
# One image for every streamer process; the command picks the kind:
#   docker run IMAGE worker | gateway | bridge rabbitmq | bridge pubsub | status --json
# Build from the repository root: docker build -t streamer .

# --- build: a virtualenv with streamer and its dependencies ------------------------------
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Compilers live in this stage only, for a dependency without a wheel for the platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/streamer
ENV PATH=/opt/streamer/bin:$PATH
# Dependencies first, from empty packages in a throw-away directory, so a source change
# reuses this layer (and no stale build output can shadow the real sources below).
COPY pyproject.toml README.md /stub/
RUN mkdir /stub/streamer /stub/bridges \
    && touch /stub/streamer/__init__.py /stub/bridges/__init__.py \
    && pip install /stub && pip uninstall -y streamer && rm -rf /stub
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
COPY bridges ./bridges
RUN pip install --no-deps . && python -m compileall -q /opt/streamer

# --- runtime: the virtualenv on a clean slim image, as an unprivileged user -----------------
FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="streamer" \
      org.opencontainers.image.description="CreativeFlow notification delivery: worker, gateway, bridges"
RUN groupadd --system --gid 10001 streamer \
    && useradd --system --uid 10001 --gid streamer --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin streamer
COPY --from=build /opt/streamer /opt/streamer
ENV PATH=/opt/streamer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
# 8765: gateway WebSockets + its /metrics and /healthz; 9100: worker /metrics and /healthz.
EXPOSE 8765 9100
# Every process drains in-flight work on SIGTERM and exits 0.
STOPSIGNAL SIGTERM
# The worker and bridges answer /healthz on METRICS_PORT; the gateway sets HEALTHCHECK_URL
# to its own port. An HTTP error (503: Redis or broker unreachable) fails the check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; url = os.environ.get('HEALTHCHECK_URL') or 'http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9100'); r.build_opener(r.ProxyHandler({})).open(url, timeout=4)"]
ENTRYPOINT ["streamer"]
CMD ["worker"]
