"""Integration tests: worker processes crashing and stopping, against a private Redis."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
import redis as syncredis
import redis.asyncio as aioredis

from tests.support.events import KEYS, ingress_streams, payload, user_log_numbers
from tests.support.polling import wait_for
from tests.support.processes import start_streamer
from tests.support.servers import RedisServer, streamer_env

pytestmark = pytest.mark.slow

USERS = 50
# Faster hand-overs than the defaults (a killed worker's partitions move within 3 s), with
# the defaults' margin: a lease outlives 15 heartbeats, so a busy machine delaying a few
# renewals costs no worker its partitions.
OWNERSHIP = {
    "WORKER_HEARTBEAT_MS": "200",
    "WORKER_DEAD_AFTER_MS": "3000",
    "WORKER_LEASE_TTL_MS": "3000",
}


def add_sync(client: syncredis.Redis, first: int, count: int) -> None:
    """Events round-robin over the users, each XADDed to its user's partition stream."""
    pipe = client.pipeline(transaction=False)
    for n in range(first, first + count):
        user = f"u{n % USERS}"
        pipe.xadd(KEYS.ingress(user), {"payload": payload(user, n)})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def groups(client: syncredis.Redis) -> list[dict[str, object]]:
    found = []
    for stream in ingress_streams():
        if client.exists(stream):
            found += client.xinfo_groups(stream)
    return found


def consumer_pending(client: syncredis.Redis, name: str) -> int:
    """Entries ``name`` holds pending, over every ingress stream (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for stream in ingress_streams():
        pipe.xpending(stream, KEYS.group)
    total = 0
    for summary in pipe.execute(raise_on_error=False):
        if isinstance(summary, dict):
            for consumer in summary["consumers"]:
                if consumer["name"] in (name, name.encode()):
                    total += int(consumer["pending"])
    return total


def all_done(client: syncredis.Redis, total: int) -> bool:
    found = groups(client)
    read = sum(int(g["entries-read"] or 0) for g in found)  # type: ignore[call-overload]
    return read >= total and sum(int(g["pending"]) for g in found) == 0  # type: ignore[call-overload]


class Producer(threading.Thread):
    """Adds events in chunks until halted or ``limit`` is reached (bounded), so the workers
    always have something in hand."""

    def __init__(self, url: str, first: int, limit: int) -> None:
        super().__init__(daemon=True)
        self._client = syncredis.Redis.from_url(url)
        self.added = first
        self._limit = limit
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and self.added < self._limit:
            add_sync(self._client, self.added, 250)
            self.added += 250
            self._halt.wait(0.01)

    def halt(self) -> int:
        self._halt.set()
        self.join(30)
        self._client.close()
        return self.added


async def test_killed_worker_is_taken_over_without_loss_duplicate_or_disorder(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two workers share the partitions while events keep coming; one is SIGKILLed holding
    pending entries: once its leases expire the survivor takes its partitions, handles the
    entries it left pending first, and every event is in its user's log exactly once, in
    order."""
    client = syncredis.Redis.from_url(redis_server.url)
    add_sync(client, 0, 5000)
    producer = Producer(redis_server.url, 5000, 30_000)
    env = {
        "READ_COUNT": "500",
        "BLOCK_MS": "100",
        "CLAIM_IDLE_MS": "1000",
        "USER_HISTORY_SIZE": "5000",
    }
    env.update(OWNERSHIP)
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
    producer.start()
    try:

        def frozen_with_pending() -> bool:
            # Freeze the victim and keep it frozen only once it holds pending entries, so the
            # kill is known to leave work behind. It is frozen only once it was seen holding
            # some: freezing it over and over would make it miss its lease renewals and hand
            # its partitions back and forth (each take-over counts as a delivery).
            if consumer_pending(client, "victim") == 0:
                return False
            victim.signal(signal.SIGSTOP)
            if consumer_pending(client, "victim") > 0:
                return True
            victim.signal(signal.SIGCONT)
            return False

        wait_for(frozen_with_pending, timeout=30, interval=0.001, what="victim holding entries")
        orphaned = consumer_pending(client, "victim")
        victim.kill()
        victim.wait()
        total = producer.halt()
        wait_for(
            lambda: all_done(client, total), timeout=90, interval=0.1, what="all entries acked"
        )
        assert consumer_pending(client, "victim") == 0
        assert orphaned > 0
    finally:
        producer.halt()
        survivor.stop()
        if victim.running():
            victim.kill()
    dead = [f for p in KEYS.partitions for _, f in client.xrange(p.dlq)]
    assert not dead, (len(dead), dead[:2])
    for user in range(USERS):
        assert await user_log_numbers(redis, f"u{user}") == list(range(user, total, USERS))
    client.close()


async def test_sigterm_finishes_the_batch_in_flight_and_exits_zero(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGTERM mid-run: the worker acks what it read, gives its partitions back, leaves
    nothing pending and no consumer name behind, exits 0."""
    client = syncredis.Redis.from_url(redis_server.url)
    add_sync(client, 0, 5000)
    worker = start_streamer(
        ["worker"],
        streamer_env(
            redis_server.url, WORKER_ID="graceful", READ_COUNT="100", BLOCK_MS="100", **OWNERSHIP
        ),
        tmp_path / "worker.log",
    )
    try:
        wait_for(
            lambda: sum(int(g["entries-read"] or 0) for g in groups(client)) > 0,  # type: ignore[call-overload]
            timeout=20,
            what="worker started reading",
        )
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        worker.stop()
    found = groups(client)
    assert sum(int(g["pending"]) for g in found) == 0  # type: ignore[call-overload]
    assert client.zscore(KEYS.workers, "graceful") is None
    assert all(client.get(p.lease) in (None, b"") for p in KEYS.partitions)  # handed over
    for stream in ingress_streams():
        if client.exists(stream):
            names = [c["name"] for c in client.xinfo_consumers(stream, KEYS.group)]
            assert b"graceful" not in names and "graceful" not in names
    read = sum(int(g["entries-read"] or 0) for g in found)  # type: ignore[call-overload]
    delivered = sum(client.xlen(KEYS.user_log(f"u{u}")) for u in range(USERS))
    assert delivered == read
    logged = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert not [line for line in logged if line.get("level") == "error"]
    client.close()
