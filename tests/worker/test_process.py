"""Integration tests: worker processes crashing and stopping, against a private Redis."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis as syncredis
import redis.asyncio as aioredis

from tests.support.events import KEYS, payload, user_log_numbers
from tests.support.polling import wait_for
from tests.support.processes import start_streamer
from tests.support.servers import RedisServer, streamer_env

pytestmark = pytest.mark.slow

USERS = 50


def add_sync(client: syncredis.Redis, first: int, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(first, first + count):
        pipe.xadd(KEYS.stream, {"payload": payload(f"u{n % USERS}", n)})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def consumer_pending(client: syncredis.Redis, name: str) -> int:
    for c in client.xinfo_consumers(KEYS.stream, KEYS.group):
        if c["name"] in (name, name.encode()):
            return int(c["pending"])
    return 0


def group_done(client: syncredis.Redis, total: int) -> bool:
    group = client.xinfo_groups(KEYS.stream)[0]
    return int(group["entries-read"] or 0) >= total and int(group["pending"]) == 0


async def test_killed_worker_is_reclaimed_without_loss_or_duplicate(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two workers, one SIGKILLed holding pending entries mid-run of 20,000: the survivor
    reclaims them and every event is in its user's log exactly once."""
    total = 20_000
    client = syncredis.Redis.from_url(redis_server.url)
    add_sync(client, 0, total)
    env = {"READ_COUNT": "500", "BLOCK_MS": "100", "CLAIM_IDLE_MS": "1000"}
    victim = start_streamer(
        ["worker"],
        streamer_env(redis_server.url, WORKER_ID="victim", **env),
        tmp_path / "victim.log",
    )
    survivor = start_streamer(
        ["worker"],
        streamer_env(redis_server.url, WORKER_ID="survivor", **env),
        tmp_path / "survivor.log",
    )
    try:

        def frozen_with_pending() -> bool:
            # Freeze the victim and keep it frozen only once it holds pending entries,
            # so the kill is known to leave work behind for the survivor.
            victim.signal(signal.SIGSTOP)
            if consumer_pending(client, "victim") > 0:
                return True
            victim.signal(signal.SIGCONT)
            return False

        wait_for(
            lambda: client.exists(KEYS.stream) and client.xinfo_groups(KEYS.stream),
            10,
            what="group",
        )
        wait_for(frozen_with_pending, timeout=30, interval=0.001, what="victim holding entries")
        orphaned = consumer_pending(client, "victim")
        victim.kill()
        victim.wait()
        wait_for(
            lambda: group_done(client, total), timeout=90, interval=0.1, what="all entries acked"
        )
        assert consumer_pending(client, "victim") == 0
        assert orphaned > 0
    finally:
        survivor.stop()
        if victim.running():
            victim.kill()
    for user in range(USERS):
        # Reclaimed entries arrive after later ones: exactly once is the promise, not order.
        numbers = await user_log_numbers(redis, f"u{user}")
        assert len(numbers) == len(set(numbers))
        assert sorted(numbers) == list(range(user, total, USERS))
    assert client.xlen(KEYS.dlq) == 0
    client.close()


async def test_sigterm_finishes_the_batch_in_flight_and_exits_zero(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGTERM mid-run: the worker acks what it read, leaves nothing pending, exits 0."""
    client = syncredis.Redis.from_url(redis_server.url)
    add_sync(client, 0, 5000)
    worker = start_streamer(
        ["worker"],
        streamer_env(redis_server.url, WORKER_ID="graceful", READ_COUNT="100", BLOCK_MS="100"),
        tmp_path / "worker.log",
    )
    try:
        wait_for(
            lambda: (
                client.exists(KEYS.stream)
                and client.xinfo_groups(KEYS.stream)
                and int(client.xinfo_groups(KEYS.stream)[0]["entries-read"] or 0) > 0
            ),
            timeout=20,
            what="worker started reading",
        )
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        worker.stop()
    assert int(client.xpending(KEYS.stream, KEYS.group)["pending"]) == 0
    assert client.zscore(KEYS.workers, "graceful") is None
    consumers = [c["name"] for c in client.xinfo_consumers(KEYS.stream, KEYS.group)]
    assert b"graceful" not in consumers and "graceful" not in consumers
    read = int(client.xinfo_groups(KEYS.stream)[0]["entries-read"])
    delivered = sum(client.xlen(KEYS.user_log(f"u{u}")) for u in range(USERS))
    assert delivered == read
    client.close()
