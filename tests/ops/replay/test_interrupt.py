"""Integration test: Ctrl-C on a running `streamer replay` process, then resume."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from collections import Counter

import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from tests.support.events import KEYS, add_events, ingress_streams, payload
from tests.support.polling import wait_for
from tests.support.servers import RedisServer, streamer_env

ENTRIES = 300


def run_streamer(url: str, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", *argv],
        env=streamer_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_interrupted_replay_resumes_from_printed_id_without_loss_or_double(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """SIGINT mid-replay prints a resume command; running it replays each entry exactly once."""
    ids = await add_events(redis, [payload(f"u{n % 7}", n) for n in range(ENTRIES)])
    probe = SyncRedis.from_url(redis_server.url)
    try:
        slow = run_streamer(
            redis_server.url, ["replay", "--from", "-", "--to", "+", "--rate", "100"]
        )
        wait_for(lambda: probe.xlen(KEYS.stream) >= ENTRIES + 30, timeout=20, what="some writes")
        slow.send_signal(signal.SIGINT)
        out, err = slow.communicate(timeout=20)
    finally:
        probe.close()
    assert slow.returncode == 130, err
    assert "interrupted: replayed" in out
    written_first = await redis.xlen(KEYS.stream) - ENTRIES
    assert 30 <= written_first < ENTRIES
    resume = re.search(r"^resume with: (.+)$", out, re.MULTILINE)
    assert resume is not None, out
    argv = shlex.split(resume.group(1))
    assert argv[:2] == ["streamer", "replay"] and "--rate" in argv
    rest = run_streamer(redis_server.url, [*argv[1:], "--rate", "100000"])
    out, err = rest.communicate(timeout=30)
    assert rest.returncode == 0, err
    assert f"replayed {ENTRIES - written_first} of" in out
    origins = [
        f[b"replay_of"].decode() for _, f in await redis.xrange(KEYS.stream) if b"replay_of" in f
    ]
    assert Counter(origins) == Counter(ids)
    assert origins == ids


def _replay_origins(client: SyncRedis) -> list[str]:
    """The replay_of of every replayed entry, over every ingress stream."""
    return [
        f[b"replay_of"].decode()
        for stream in ingress_streams()
        for _, f in client.xrange(stream)
        if b"replay_of" in f
    ]


async def test_interrupted_replay_of_every_partition_resumes_from_one_printed_bound(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """SIGINT mid-replay of entries spread over the partitions and the compatibility stream:
    the one printed resume command finishes every stream, each entry replayed exactly once."""
    events = [payload(f"u{n % 7}", n) for n in range(ENTRIES)]
    ids = await add_events(redis, events[::2], direct=True)
    ids += await add_events(redis, events[1::2])
    probe = SyncRedis.from_url(redis_server.url)
    try:
        slow = run_streamer(
            redis_server.url, ["replay", "--from", "-", "--to", "+", "--rate", "100"]
        )
        wait_for(lambda: len(_replay_origins(probe)) >= 30, timeout=20, what="some writes")
        slow.send_signal(signal.SIGINT)
        out, err = slow.communicate(timeout=20)
        assert slow.returncode == 130, err
        written_first = len(_replay_origins(probe))
        assert 30 <= written_first < ENTRIES
        resume = re.search(r"^resume with: (.+)$", out, re.MULTILINE)
        assert resume is not None, out
        rest = run_streamer(redis_server.url, [*shlex.split(resume.group(1))[1:], "--rate", "1e5"])
        out, err = rest.communicate(timeout=30)
        assert rest.returncode == 0, err
        assert f"replayed {ENTRIES - written_first} of" in out
        assert Counter(_replay_origins(probe)) == Counter(ids)
    finally:
        probe.close()
