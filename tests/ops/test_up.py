"""`streamer up`: the stack on an embedded real Redis, the truth about its start, and how
other commands find it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis as syncredis

from streamer.infra.errors import StartupError
from streamer.ops import stack
from streamer.ops.embedded_redis import EmbeddedRedis
from streamer.ops.up import local_environment
from tests.support.events import KEYS
from tests.support.polling import wait_for
from tests.support.servers import RedisServer, free_port, streamer_env


def test_up_runs_the_stack_on_an_embedded_redis(tmp_path: Path) -> None:
    """With REDIS_URL unset, `streamer up` starts its own redis-server and a worker that
    delivers a published event; SIGTERM stops everything and exits 0."""
    port = free_port()
    env = streamer_env("unused", EMBEDDED_REDIS_PORT=str(port), GATEWAY_PORT=str(free_port()))
    del env["REDIS_URL"]
    up = subprocess.Popen(
        [sys.executable, "-m", "streamer", "up", "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=(tmp_path / "up.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = syncredis.Redis.from_url(url)
    try:
        wait_for(lambda: _workers_live(client), timeout=30, what="embedded redis and a live worker")
        published = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamer",
                "publish",
                "--user",
                "demo",
                "--type",
                "hello",
                "--data",
                '{"n": 1}',
            ],
            env=streamer_env(url),
            capture_output=True,
            check=True,
        )
        assert b"published 1" in published.stdout
        wait_for(lambda: client.xlen(KEYS.user_log("demo")) == 1, timeout=20, what="delivery")
        entry = client.xrange(KEYS.user_log("demo"))[0][1]
        assert json.loads(entry[b"content"]) == {"n": 1}
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
        client.close()
    assert (tmp_path / "data" / "redis" / "redis.log").exists()


def _workers_live(client: syncredis.Redis) -> bool:
    try:
        return bool(client.zcard(KEYS.workers))
    except syncredis.ConnectionError:
        return False


def test_a_child_that_dies_at_start_fails_up_with_its_last_lines(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The gateway cannot bind its port: `streamer up` never says "stack is up", stops the
    rest, exits 1 and prints the gateway's own last lines (which name the port)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        env = streamer_env(redis_server.url, GATEWAY_PORT=port, STREAMER_DATA_DIR=str(tmp_path))
        result = subprocess.run(
            [sys.executable, "-m", "streamer", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stack is up" not in result.stdout
    assert "streamer up: gateway exited with 1; stopping the stack" in result.stderr
    assert f"GATEWAY_PORT: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stack.json").exists()


def test_embedded_redis_that_cannot_start_shows_its_own_error(tmp_path: Path) -> None:
    """redis-server's own message (here: its port is taken) reaches the user, from a relative
    data directory, instead of a pointer to a log file that does not exist."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        redis = EmbeddedRedis(Path(os.path.relpath(tmp_path / "data")), port=port)
        with pytest.raises(StartupError) as failed:
            redis.start(timeout_s=20)
    message = str(failed.value)
    assert message.startswith("redis-server exited with 1; the end of ")
    assert "Address already in use" in message
    assert str((tmp_path / "data" / "redis.log").resolve()) in message


def test_commands_find_the_stack_that_up_started(tmp_path: Path) -> None:
    """With REDIS_URL unset a command uses the Redis of a live `streamer up` found in the data
    directory and says so; with no live stack (none, or its process gone) the default."""
    env = {"STREAMER_DATA_DIR": str(tmp_path)}
    url, note = stack.choose_redis(env) or ("", "")
    assert url == stack.DEFAULT_REDIS_URL and "using the default" in note
    stack.write(tmp_path, stack.StackState("redis://127.0.0.1:4242/0", "ws://x", os.getpid()))
    url, note = stack.choose_redis(env) or ("", "")
    assert url == "redis://127.0.0.1:4242/0" and "stack of `streamer up`" in note
    assert stack.choose_redis({**env, "REDIS_URL": "redis://elsewhere:1/0"}) is None
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stack.write(
        tmp_path, stack.StackState("redis://127.0.0.1:4242/0", "ws://x", int(finished.stdout))
    )
    assert (stack.choose_redis(env) or ("",))[0] == stack.DEFAULT_REDIS_URL
    stack.remove(tmp_path, os.getpid())  # not ours any more: kept
    assert (tmp_path / stack.STATE_FILE).exists()


def test_local_children_bind_to_loopback_unless_told_otherwise() -> None:
    """`streamer up` gives its children 127.0.0.1 and the demo page unless set (an empty
    value counts as unset)."""
    env = local_environment({"GATEWAY_HOST": "", "DEMO_MODE": "0"})
    assert env["GATEWAY_HOST"] == "127.0.0.1" and env["METRICS_HOST"] == "127.0.0.1"
    assert env["DEMO_MODE"] == "0"
    assert local_environment({"GATEWAY_HOST": "0.0.0.0"})["GATEWAY_HOST"] == "0.0.0.0"
