"""Integration test: `streamer up` runs the stack on an embedded real Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import redis as syncredis

from tests.support.events import KEYS
from tests.support.polling import wait_for
from tests.support.servers import free_port, streamer_env


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
