"""Integration tests: `streamer publish` validates before it XADDs."""

from __future__ import annotations

import json
import subprocess
import sys

import redis.asyncio as aioredis

from tests.support.events import KEYS
from tests.support.servers import RedisServer, streamer_env


def run_publish(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", "publish", *args],
        env=streamer_env(url),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_publish_from_flags(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    """Flags build one well-formed payload, published --count times to the user's
    partition stream."""
    result = run_publish(
        redis_server.url,
        "--user",
        "u1",
        "--type",
        "hi",
        "--data",
        '{"a": 1}',
        "--channels",
        "websocket,push_ios",
        "--device-token",
        "tok",
        "--count",
        "3",
    )
    assert result.returncode == 0, result.stderr
    entries = await redis.xrange(KEYS.ingress("u1"))  # its partition: no routing hop
    assert len(entries) == 3 and await redis.xlen(KEYS.stream) == 0
    body = json.loads(entries[0][1][b"payload"])
    assert body == {
        "user_id": "u1",
        "event_type": "hi",
        "data": {"a": 1},
        "target_channels": ["websocket", "push_ios"],
        "device_token": "tok",
    }


async def test_publish_stdin_rejects_invalid_lines(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """JSON lines: valid ones are published, invalid ones are reported and exit 1."""
    lines = "\n".join(
        [
            json.dumps({"user_id": "u1", "event_type": "a"}),
            "{broken",
            json.dumps({"event_type": "no user"}),
            json.dumps({"user_id": "u2", "event_type": "b"}),
        ]
    )
    result = run_publish(redis_server.url, "--stdin", stdin=lines)
    assert result.returncode == 1
    assert "line 2: rejected (invalid_json)" in result.stderr
    assert "line 3: rejected (schema)" in result.stderr
    published = [await redis.xrange(KEYS.ingress(u)) for u in ("u1", "u2")]
    assert [json.loads(e[0][1][b"payload"])["event_type"] for e in published] == ["a", "b"]
