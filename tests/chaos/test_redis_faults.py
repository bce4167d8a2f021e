"""Redis misbehaving under load: restarted, frozen, black-holed, out of memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamer.infra.redis import connect_sync
from tests.chaos.drive import drive, expect_clean, reached
from tests.chaos.stack import TIMINGS, Stack
from tests.support.load import Plan, Produced, PubSubSink, RabbitSink, StreamSink
from tests.support.polling import eventually, wait_for
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

DEAD_AFTER_S = int(TIMINGS["GATEWAY_DEAD_AFTER_MS"]) / 1000
# Longer than any Redis client's reply timeout (its longest BLOCK + 5 s; the bridges' 5 s):
# a command sent before the freeze times out, and the client tries again on a new
# connection while the first one still waits, unanswered, in Redis's socket buffer.
FREEZE_S = 6.0
# Longer than the gateway's dead-after time, so the workers route around it meanwhile. The
# connections it leaves half-open never answer again, however short it is.
PARTITION_S = 5.0


async def test_redis_restarted_with_aof_under_load(stack: Stack) -> None:
    """Redis (appendonly) is restarted, down for 3 s, under load: producers, workers and
    the gateway reconnect; every client gets every event once, in order."""
    redis = stack.start_redis(appendonly=True)
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    plan = Plan(users=40, events_per_user=60, rate_per_s=400)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 3)
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(3.0)  # the outage itself
        await asyncio.to_thread(redis.start)

    await drive(stack, plan, StreamSink(redis.url), lambda: [gateway.port], fault)
    expect_clean(stack)


async def test_redis_frozen_past_gateway_heartbeat_timeout(stack: Stack) -> None:
    """Redis is frozen (SIGSTOP) for longer than the gateway's dead-after time, then thawed:
    the workers judge the gateway dead and route around it, so the gateway must tell its
    sockets 1012; they resume and nothing is lost or doubled."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    plan = Plan(users=40, events_per_user=60, rate_per_s=400)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 3)
        stack.redis.pause()
        await asyncio.sleep(DEAD_AFTER_S + 2)  # the freeze itself
        stack.redis.resume()

    outcome = await drive(stack, plan, StreamSink(stack.redis.url), lambda: [gateway.port], fault)
    expect_clean(stack)
    assert outcome.closes[1012], "sockets were not told to resume (1012) after the freeze"


async def test_redis_black_holed_then_healed_for_new_connections_only(stack: Stack) -> None:
    """The worker's and the gateway's Redis traffic goes through a proxy that drops
    everything for 5 s, then carries new connections only: the old ones stay half-open
    forever. Both must notice (reply timeouts), reconnect, and the gateway must deliver
    again and tell its sockets 1012 (it was dead to the workers meanwhile)."""
    proxy = TcpProxy("127.0.0.1", stack.redis.port)
    stack.on_close(proxy.close)
    behind = f"redis://{proxy.address}/0"
    gateway = await asyncio.to_thread(stack.gateway, "gw-1", redis_url=behind)
    stack.worker("w-1", redis_url=behind)
    plan = Plan(users=40, events_per_user=60, rate_per_s=400)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 4)
        proxy.blackhole()
        await asyncio.sleep(PARTITION_S)  # the partition itself
        proxy.heal()

    outcome = await drive(
        stack, plan, StreamSink(stack.redis.url), lambda: [gateway.port], fault, deliver_s=45
    )
    expect_clean(stack)
    assert outcome.closes[1012], "sockets were not told to resume (1012) after the partition"


async def test_redis_frozen_while_rabbitmq_bridge_writes(stack: Stack, queue: str) -> None:
    """Redis freezes for 6 s while the RabbitMQ bridge drains a queue fed at a steady rate
    (no message_id): the write in flight times out and is retried, and may also have
    happened. Every message must still reach its client exactly once."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    stack.bridge("rabbitmq", "bridge", env=stack.env(RABBITMQ_QUEUE_NAME_AI_UPDATES=queue))
    plan = Plan(users=30, events_per_user=60, rate_per_s=300, producer_ids=False)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 4)
        stack.redis.pause()
        await asyncio.sleep(FREEZE_S)
        stack.redis.resume()

    await drive(stack, plan, RabbitSink(queue), lambda: [gateway.port], fault)
    expect_clean(stack)


async def test_redis_frozen_while_pubsub_bridge_writes(stack: Stack) -> None:
    """The stream's Redis freezes for 6 s while the Pub/Sub bridge writes what is published
    on another Redis: the bridge holds the messages, retries, and writes each exactly once."""
    source = stack.other_redis("pubsub-source")
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    env = stack.env(REDIS_PUBSUB_URL=source.url, REDIS_PUBSUB_CHANNEL_NAME="chaos")
    stack.bridge("pubsub", "bridge", env=env)
    wait_for(lambda: subscribers(source.url, "chaos") >= 1, what="the bridge subscribed")
    plan = Plan(users=30, events_per_user=60, rate_per_s=300, producer_ids=False)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 4)
        stack.redis.pause()
        await asyncio.sleep(FREEZE_S)
        stack.redis.resume()

    await drive(stack, plan, PubSubSink(source.url, "chaos"), lambda: [gateway.port], fault)
    expect_clean(stack)


def info(url: str, section: str) -> dict[str, Any]:
    client = connect_sync(url, client_name="chaos-check")
    try:
        found: dict[str, Any] = client.info(section)  # type: ignore[assignment]
        return found
    finally:
        client.close()


def subscribers(url: str, channel: str) -> int:
    client = connect_sync(url, client_name="chaos-check")
    try:
        counts: list[tuple[bytes, int]] = client.pubsub_numsub(channel)  # type: ignore[assignment]
        return counts[0][1]
    finally:
        client.close()


def oom_errors(url: str) -> int:
    """Commands Redis refused for want of memory, so far."""
    return int(info(url, "errorstats").get("errorstat_OOM", {}).get("count", 0))


def set_maxmemory(url: str, headroom_bytes: int) -> None:
    """noeviction, with ``headroom_bytes`` left above what Redis uses now (0: no limit)."""
    limit = int(info(url, "memory")["used_memory"]) + headroom_bytes if headroom_bytes else 0
    client = connect_sync(url, client_name="chaos-check")
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(limit))
    finally:
        client.close()


async def test_redis_at_maxmemory_on_a_partial_rabbitmq_batch(stack: Stack, queue: str) -> None:
    """The RabbitMQ bridge starts on a backlog of 2 KB messages with Redis close to its
    maxmemory (noeviction): the first writes of its batch succeed, the rest fail with OOM.
    Once memory is freed the bridge retries; nothing may be written twice."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    worker = stack.worker("w-1")
    env = stack.env(RABBITMQ_QUEUE_NAME_AI_UPDATES=queue, RABBITMQ_PREFETCH="500")
    bridge = stack.bridge("rabbitmq", "bridge", env=env)
    plan = Plan(users=30, events_per_user=40, rate_per_s=300, producer_ids=False, pad_bytes=2000)
    url = stack.redis.url

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 5)
        # Quiet the writers, so that Redis's memory moves only with the bridge's batch.
        await asyncio.to_thread(stack.stop, worker)
        await asyncio.to_thread(stack.stop, bridge)
        await reached(produced, produced.total + 400)  # a backlog: one large first batch
        # ~60 of the backlog's writes fit (each ~2.3 KB with its marker), the rest do not.
        await asyncio.to_thread(set_maxmemory, url, 128 * 1024)
        oom_before = await asyncio.to_thread(oom_errors, url)
        bridge.start()

        def partial() -> bool:
            if oom_errors(url) <= oom_before:
                return False
            lag = (stack.status().get("stream") or {}).get("lag")
            return bool(lag)

        await eventually(lambda: asyncio.to_thread(partial), what="a batch written in part")
        await asyncio.to_thread(set_maxmemory, url, 0)
        worker.start()

    await drive(stack, plan, RabbitSink(queue), lambda: [gateway.port], fault)
    expect_clean(stack)
