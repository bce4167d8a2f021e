"""Integration tests: partitions change hands between workers without loss, duplicate or
disorder; a worker that lost a partition cannot write for it; the compatibility stream is
routed exactly once."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from streamer.worker.main import Worker
from streamer.worker.processor import RetryBatch
from tests.support.events import (
    KEYS,
    add_events,
    dead_letters,
    payload,
    pending_count,
    user_log_numbers,
    worker_settings,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer

USERS = 40
FAST = {"WORKER_HEARTBEAT_MS": "100", "WORKER_DEAD_AFTER_MS": "1000", "WORKER_LEASE_TTL_MS": "1000"}


def worker(redis: aioredis.Redis, url: str, name: str, **extra: str) -> Worker:
    return Worker(redis, worker_settings(url, WORKER_ID=name, READ_COUNT="50", **FAST, **extra))


async def all_delivered(redis: aioredis.Redis, total: int) -> bool:
    logged = 0
    for user in range(USERS):
        logged += len(await user_log_numbers(redis, f"u{user}"))
    return logged >= total and await pending_count(redis) == 0


@pytest.mark.parametrize("direct", [True, False], ids=["partition-streams", "compat-stream"])
async def test_partitions_move_as_workers_join_and_leave_without_disorder(
    redis: aioredis.Redis, redis_server: RedisServer, direct: bool
) -> None:
    """Events stream in while a second worker joins (partitions are rebalanced onto it), then
    the first stops (its partitions move to the second): each user's log holds every event
    once, in order, and both workers owned partitions on the way. (Order holds per ingress
    path: a producer mixing partition streams and the compatibility stream for one user gets
    the two interleaved by arrival.)"""
    total = 4000
    first = worker(redis, redis_server.url, "w-first")
    second = worker(redis, redis_server.url, "w-second")
    seen: dict[str, set[str]] = {"w-first": set(), "w-second": set()}

    async def watch() -> None:
        while True:
            for w in (first, second):
                seen[w.name].update(w.units_held)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    running = [asyncio.create_task(first.run())]
    await eventually(lambda: len(first.units_held) == 17, what="the first worker owns all")
    for part in range(4):
        events = [payload(f"u{n % USERS}", n) for n in range(part * 1000, (part + 1) * 1000)]
        await add_events(redis, events, direct=direct)
        if part == 1:
            running.append(asyncio.create_task(second.run()))
            await eventually(lambda: len(first.units_held) < 17, what="a rebalance")
        if part == 2:
            first.stop()
            await running[0]
    await eventually(lambda: all_delivered(redis, total), within_s=30, what="every event")
    second.stop()
    await running[1]
    watcher.cancel()
    for user in range(USERS):
        assert await user_log_numbers(redis, f"u{user}") == list(range(user, total, USERS))
    assert seen["w-first"] and seen["w-second"], seen
    assert await dead_letters(redis) == []


async def test_a_worker_that_lost_its_lease_writes_nothing(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Another holder's token on a partition's lease (this worker was frozen past its TTL):
    the next batch appends nothing there, the partition is dropped, and its entries stay
    pending for the new owner."""
    w = worker(redis, redis_server.url, "w-frozen")
    await w.manage()
    home = KEYS.of_user("u1")
    await redis.set(home.lease, "w-other:abcd")
    await add_events(redis, [payload("u1", 1)], direct=True)
    assert await w.step() == 1
    assert "p" + str(home.index) not in w.units_held
    assert await user_log_numbers(redis, "u1") == []
    assert await pending_count(redis) == 1


async def test_routing_the_compatibility_stream_again_doubles_nothing(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Entries forwarded from the compatibility stream, then processed again (a router that
    crashed before its ack), reach each partition once."""
    await add_events(redis, [payload(f"u{n % 5}", n) for n in range(50)])
    w = worker(redis, redis_server.url, "w-router", CLAIM_IDLE_MS="100")
    await w.manage()
    batch = await w._next_batch([w._held[16]], 50)  # the compatibility stream's unit
    assert len(batch) == 50
    await w._processor.process(batch)  # forwarded, not acked
    await w._processor.process(batch)  # and again
    partition_entries = sum([await redis.xlen(p.stream) for p in KEYS.partitions])
    assert partition_entries == 50
    await w.drain()
    for user in range(5):
        assert await user_log_numbers(redis, f"u{user}") == list(range(user, 50, 5))


async def test_a_batch_that_cannot_be_written_is_retried_whole(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A Redis failure in the middle of delivery raises RetryBatch; processing the same
    batch again appends each event once."""
    w = worker(redis, redis_server.url, "w-retry")
    await w.manage()
    await add_events(redis, [payload("u1", n) for n in range(10)], direct=True)
    home = KEYS.of_user("u1").index
    batch = await w._next_batch([w._held[home]], 10)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        try:
            await w._processor.process(batch)
            raise AssertionError("expected RetryBatch")
        except RetryBatch:
            pass
    finally:
        await redis.config_set("maxmemory", "0")
    await w._processor.process(batch)
    await w._processor.process(batch)
    assert await user_log_numbers(redis, "u1") == list(range(10))


@pytest.mark.parametrize(("handed_over", "counted"), [(True, 1), (False, 2)])
async def test_take_over_counts_a_delivery_only_when_the_owner_was_lost(
    redis: aioredis.Redis, redis_server: RedisServer, handed_over: bool, counted: int
) -> None:
    """Entries an owner held when it handed its partition over keep their delivery count;
    entries of an owner whose lease ran out (it died) count one more delivery, so an entry
    that kills every owner ends in the DLQ after MAX_DELIVERIES instead of stalling it."""
    await add_events(redis, [payload("u1", n) for n in range(3)], direct=True)
    home = KEYS.of_user("u1")
    first = worker(redis, redis_server.url, "w-old")
    await first.manage()
    position = home.index
    entries = await first._next_batch([first._held[position]], 10)  # read, never acked
    assert len(entries) == 3
    if handed_over:
        await first._leases.release([home.lease])
    else:
        await redis.delete(home.lease)  # as if it expired
    second = worker(redis, redis_server.url, "w-new")
    await second.manage()
    taken, complete = await second._held[position].take_over(10)
    assert complete and [e.entry_id for e in taken] == [e.entry_id for e in entries]
    assert {e.deliveries for e in taken} == {counted}
