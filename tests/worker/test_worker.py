"""Integration tests: the worker against a private real Redis, run in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import redis.asyncio as aioredis

from streamer.contract.inbox import BATCH_FIELD, decode_batch
from streamer.core.policy import ChannelResult, Outcome
from streamer.push.base import PushRequest
from streamer.worker.main import Worker
from tests.fakes.harness import metric
from tests.support.events import (
    KEYS,
    add_events,
    dead_letters,
    dlq_reasons,
    entries_read,
    payload,
    pending_count,
    user_log_numbers,
    worker_settings,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer

POISON = {
    "missing_payload": {b"body": b"{}"},
    "invalid_utf8": {b"payload": b"\xff\xfe"},
    "invalid_json": {b"payload": b"{nope"},
    "schema": {b"payload": b'{"event_type":"no user"}'},
    "too_large": {
        b"payload": json.dumps(
            {"user_id": "u", "event_type": "x", "data": {"p": "a" * 70000}}
        ).encode()
    },
}


async def test_valid_events_land_once_and_poison_is_dead_lettered(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """2,000 events over 50 users reach their logs once, in order; poison goes to the DLQ."""
    payloads = [payload(f"u{n % 50}", n) for n in range(2000)]
    await add_events(redis, payloads[:1000])
    for fields in POISON.values():
        await redis.xadd(KEYS.stream, fields)  # type: ignore[arg-type]
    await add_events(redis, payloads[1000:])
    await Worker(redis, worker_settings(redis_server.url)).drain()
    for user in range(50):
        assert await user_log_numbers(redis, f"u{user}") == list(range(user, 2000, 50))
    assert sorted(await dlq_reasons(redis)) == sorted(POISON)
    dead = await dead_letters(redis)
    assert all(f[b"source_id"] and f[b"error"] for _, f in dead)
    assert await pending_count(redis) == 0


async def test_redelivered_event_is_not_appended_twice(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """The same producer id twice (a redelivery) appears once in the log."""
    raw = payload("u1", 1, id="evt-1")
    await add_events(redis, [raw, raw, payload("u1", 2)])
    await Worker(redis, worker_settings(redis_server.url)).drain()
    assert await user_log_numbers(redis, "u1") == [1, 2]


async def test_user_log_is_bounded_and_expires(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """The user log keeps the newest USER_HISTORY_SIZE entries or a little more (trimming is
    approximate: whole stream nodes of 100 entries) and carries the idle TTL."""
    await add_events(redis, [payload("u1", n) for n in range(450)])
    settings = worker_settings(redis_server.url, USER_HISTORY_SIZE="120", USER_HISTORY_TTL_S="500")
    await Worker(redis, settings).drain()
    kept = await user_log_numbers(redis, "u1")
    assert 120 <= len(kept) <= 220
    assert kept == list(range(450 - len(kept), 450))
    assert 0 < await redis.ttl(KEYS.user_log("u1")) <= 500


async def test_live_gateway_inbox_gets_deliveries_and_dead_owner_is_cleaned(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Owners with a fresh heartbeat get inbox entries; a dead gateway's ownership is removed."""
    now_ms = int(time.time() * 1000)
    await redis.zadd(
        KEYS.gateways,
        {"gw-live": now_ms, "gw-dead": now_ms - 60_000, "gw-ancient": now_ms - 2 * 86_400_000},
    )
    await redis.hset(KEYS.owners("u1"), mapping={"gw-live": 1, "gw-dead": 2})
    await add_events(redis, [payload("u1", 1), payload("u2", 2)])
    await Worker(redis, worker_settings(redis_server.url)).drain()
    inbox = await redis.xrange(KEYS.inbox("gw-live"))
    assert len(inbox) == 1
    batch = decode_batch(inbox[0][1][BATCH_FIELD])
    log_id = (await redis.xrange(KEYS.user_log("u1")))[0][0].decode()
    assert batch is not None and len(batch) == 1
    (delivery,) = batch
    assert (delivery.kind, delivery.target, delivery.id) == ("u", "u1", log_id)
    assert json.loads(delivery.frame) == {"id": log_id, "type": "test", "content": {"n": 1}}
    assert await redis.exists(KEYS.inbox("gw-dead")) == 0
    assert await redis.hkeys(KEYS.owners("u1")) == [b"gw-live"]
    assert 0 < await redis.ttl(KEYS.inbox("gw-live")) <= 86_400
    assert await redis.zscore(KEYS.gateways, "gw-ancient") is None


class FlakySender:
    """A push sender that fails `failures` times, then succeeds."""

    channel = "push_ios"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def send(self, request: PushRequest) -> ChannelResult:
        self.calls += 1
        if self.calls <= self.failures:
            return ChannelResult("push_ios", Outcome.RETRY, "unavailable", "503")
        return ChannelResult("push_ios", Outcome.DELIVERED)

    async def close(self) -> None:
        pass


async def test_transient_failure_is_retried_then_acked(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A sender failing twice then succeeding is retried and acked; websocket delivered once."""
    sender = FlakySender(failures=2)
    await add_events(
        redis, [payload("u1", 1, target_channels=["websocket", "push_ios"], device_token="t" * 64)]
    )
    settings = worker_settings(redis_server.url, CLAIM_IDLE_MS="100", RETRY_BASE_MS="10")
    await Worker(redis, settings, {"push_ios": sender}).drain()  # type: ignore[dict-item]
    assert sender.calls == 3
    assert await pending_count(redis) == 0
    assert await dead_letters(redis) == []
    assert await user_log_numbers(redis, "u1") == [1]


async def test_persistent_failure_ends_in_dlq_after_max_deliveries(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A sender that always fails: MAX_DELIVERIES attempts, then the DLQ with max_deliveries."""
    sender = FlakySender(failures=10**6)
    await add_events(redis, [payload("u1", 1, target_channels=["push_ios"], device_token="t" * 64)])
    settings = worker_settings(
        redis_server.url, CLAIM_IDLE_MS="50", RETRY_BASE_MS="5", MAX_DELIVERIES="3"
    )
    await Worker(redis, settings, {"push_ios": sender}).drain()  # type: ignore[dict-item]
    assert sender.calls == 3
    dead = await dead_letters(redis)
    assert [f[b"reason"] for _, f in dead] == [b"max_deliveries"]
    assert dead[0][1][b"deliveries"] == b"3"
    assert await pending_count(redis) == 0


async def test_push_disabled_is_skipped_and_acked(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """With no sender for a push channel the push is skipped, websocket still delivered."""
    await add_events(
        redis, [payload("u1", 1, target_channels=["websocket", "push_android"], device_token="x")]
    )
    await Worker(redis, worker_settings(redis_server.url)).drain()
    assert await user_log_numbers(redis, "u1") == [1]
    assert await pending_count(redis) == 0 and await dead_letters(redis) == []


async def test_group_is_recreated_after_flushall(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """After Redis loses everything (groups and leases), a running worker recreates the
    groups, takes its partitions again and keeps delivering."""
    settings = worker_settings(
        redis_server.url, WORKER_HEARTBEAT_MS="50", WORKER_LEASE_TTL_MS="500"
    )
    worker = Worker(redis, settings)
    task = asyncio.create_task(worker.run())
    await add_events(redis, [payload("u1", 1)])
    await eventually(lambda: _logged(redis, [1]), what="the first event delivered")
    recreated = metric("streamer_worker_group_recreated_total")
    await redis.flushall()
    await eventually(lambda: redis.exists(KEYS.stream), what="the groups recreated")
    assert await redis.xinfo_groups(KEYS.stream)
    await add_events(redis, [payload("u1", 2)])
    await eventually(lambda: _logged(redis, [2]), what="delivery after the loss")
    worker.stop()
    await task
    assert metric("streamer_worker_group_recreated_total") > recreated


async def _logged(redis: aioredis.Redis, numbers: list[int]) -> bool:
    return await user_log_numbers(redis, "u1") == numbers


async def test_trimmed_pending_entries_are_acked(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Entries trimmed from the stream while pending are acked, not retried forever."""
    await add_events(redis, [payload("u1", n) for n in range(5)])
    await redis.xgroup_create(KEYS.stream, KEYS.group, "0")
    await redis.xreadgroup(KEYS.group, "crashed", {KEYS.stream: ">"}, count=5)
    await redis.xtrim(KEYS.stream, maxlen=0)
    settings = worker_settings(redis_server.url, CLAIM_IDLE_MS="10")
    await Worker(redis, settings).drain()
    assert await pending_count(redis) == 0


async def test_delivery_counts_are_exact_despite_other_pending_entries(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Reclaimed entries far apart, with this consumer's other entries pending between them,
    each get their own delivery count: both over-delivered ones are dead-lettered."""
    ids = await add_events(redis, [payload("u1", n) for n in range(100)])
    await redis.xgroup_create(KEYS.stream, KEYS.group, "0")
    await redis.xreadgroup(KEYS.group, "w-test", {KEYS.stream: ">"}, count=100)
    for entry_id in (ids[0], ids[-1]):
        await redis.xclaim(
            KEYS.stream,
            KEYS.group,
            "w-test",
            0,
            [entry_id],
            idle=120_000,
            retrycount=5,
            justid=True,
        )
    settings = worker_settings(redis_server.url, CLAIM_IDLE_MS="60000", MAX_DELIVERIES="5")
    worker = Worker(redis, settings)
    await worker.manage()  # takes every unit; the compatibility stream's pending come first
    assert await worker.step() == 100
    dead = await dead_letters(redis)
    assert sorted(f[b"source_id"].decode() for _, f in dead) == sorted([ids[0], ids[-1]])
    assert {f[b"reason"] for _, f in dead} == {b"max_deliveries"}
    await worker.drain()
    assert await user_log_numbers(redis, "u1") == list(range(1, 99))


async def test_redis_errors_are_survived_and_reported_by_health(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """An out-of-memory Redis makes the worker unhealthy, not dead: once memory is back it
    dead-letters the entry it could not, delivers the next one and stops cleanly."""
    settings = worker_settings(redis_server.url, HEALTH_THRESHOLD_S="0.1")
    worker = Worker(redis, settings)
    await worker.manage()  # holds every unit, their groups exist
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.xadd(KEYS.stream, {"payload": b"{broken"})
    await redis.config_set("maxmemory", "1")
    task = asyncio.create_task(worker.run())
    try:
        await eventually(
            lambda: not worker.health()[0], what="health failing while Redis is out of memory"
        )
        assert not task.done()
    finally:
        await redis.config_set("maxmemory", "0")
    await add_events(redis, [payload("u1", 1)])
    await eventually(lambda: _delivered(redis), what="delivery after memory returned")
    assert await dlq_reasons(redis) == ["invalid_json"]
    assert worker.health()[0]
    worker.stop()
    await asyncio.wait_for(task, 10)


async def _delivered(redis: aioredis.Redis) -> bool:
    return await redis.xlen(KEYS.user_log("u1")) == 1 and await pending_count(redis) == 0


class GatedSender:
    """A push sender that holds every push until the gate opens, counting pushes per event."""

    channel = "push_ios"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: dict[str, int] = {}

    async def send(self, request: PushRequest) -> ChannelResult:
        self.calls[request.event_key] = self.calls.get(request.event_key, 0) + 1
        await self.gate.wait()
        return ChannelResult("push_ios", Outcome.DELIVERED)

    async def close(self) -> None:
        pass


async def test_entries_waiting_for_push_capacity_are_not_pushed_twice(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """With pushes slower than the claim timeout and more entries than push slots, the worker
    reads only what it has room for and keeps what it holds from being reclaimed: nothing is
    pushed twice."""
    sender = GatedSender()
    await add_events(
        redis,
        [payload("u1", n, target_channels=["push_ios"], device_token="t" * 64) for n in range(40)],
    )
    worker = Worker(
        redis,
        worker_settings(redis_server.url, READ_COUNT="40", CLAIM_IDLE_MS="150"),
        {"push_ios": sender},  # type: ignore[dict-item]
        push_concurrency=1,  # 16 entries in flight at most
    )
    task = asyncio.create_task(worker.run())
    await eventually(lambda: sum(sender.calls.values()) >= 16, what="a full set in flight")
    # Let several claim timeouts pass while every push is stuck: nothing may be reclaimed.
    await asyncio.sleep(0.6)
    assert sum(sender.calls.values()) == 16
    sender.gate.set()
    await eventually(lambda: _all_acked(redis, 40), what="every entry acked")
    worker.stop()
    await task
    assert sorted(sender.calls.values()) == [1] * 40
    assert await dead_letters(redis) == []


async def _all_acked(redis: aioredis.Redis, total: int) -> bool:
    """Every entry read from the partitions (after routing) and none pending anywhere."""
    partitions_read = await entries_read(redis) - await redis.xlen(KEYS.stream)
    return partitions_read >= total and await pending_count(redis) == 0


class SlowSender:
    """A push provider that takes ``delay_s`` per push and counts each event it sends."""

    channel = "push_ios"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: dict[int, int] = {}

    async def send(self, request: PushRequest) -> ChannelResult:
        await asyncio.sleep(self.delay_s)
        n = int(request.content.custom["n"])
        self.calls[n] = self.calls.get(n, 0) + 1
        return ChannelResult("push_ios", Outcome.DELIVERED)

    async def close(self) -> None:
        pass


async def test_a_drain_longer_than_the_lease_ttl_keeps_its_partitions(
    redis: aioredis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """drain() renews its leases like a running worker: a batch job that outlasts
    WORKER_LEASE_TTL_MS loses no partition and pushes every event once."""
    sender = SlowSender(0.4)
    await add_events(
        redis,
        [payload("u1", n, target_channels=["push_ios"], device_token="t" * 64) for n in range(40)],
        direct=True,
    )
    settings = worker_settings(
        redis_server.url, WORKER_HEARTBEAT_MS="50", WORKER_LEASE_TTL_MS="300"
    )
    worker = Worker(
        redis,
        settings,
        {"push_ios": sender},  # type: ignore[dict-item]
        push_concurrency=1,  # 16 in flight: three rounds of 0.4 s
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streamer.worker.main"):
        await worker.drain()
    assert time.monotonic() - started > 1.0  # several lease lifetimes
    assert not [r for r in caplog.records if "lease gone" in r.getMessage()]
    assert sorted(sender.calls) == list(range(40)) and set(sender.calls.values()) == {1}
