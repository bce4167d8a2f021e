"""kill -9 of each process kind under load: worker, gateway, RabbitMQ bridge."""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.chaos.drive import drive, expect_clean, reached
from tests.chaos.stack import Stack
from tests.support.events import KEYS, ingress_streams
from tests.support.load import Plan, Produced, RabbitSink, StreamSink
from tests.support.processes import StreamerProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def pending_of(stack: Stack, name: str) -> int:
    """Entries the consumer ``name`` holds read but unacked, over every ingress stream (the
    partitions and the compatibility stream), in one round trip."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        pipe = client.pipeline(transaction=False)
        for stream in ingress_streams():
            pipe.xpending(stream, KEYS.group)
        held = 0
        for summary in pipe.execute(raise_on_error=False):
            if isinstance(summary, dict):
                held += sum(
                    int(c["pending"])
                    for c in summary["consumers"]
                    if c["name"] in (name, name.encode())
                )
        return held
    finally:
        client.close()


async def kill_while_holding_entries(
    stack: Stack, victim: StreamerProcess, name: str, produced: Produced, plan: Plan
) -> None:
    """SIGKILL the worker at a moment it holds read-but-unacked entries, so that the kill
    leaves work behind. Stopped (SIGSTOP), it still receives what its blocked XREADGROUP
    asked for once more events arrive; if it got none, it runs on a little and is tried
    again."""
    step = plan.users
    attempts = 0
    while produced.total + 2 * step <= plan.total:
        attempts += 1
        stack.pause(victim)
        await reached(produced, produced.total + step)
        held = await asyncio.to_thread(pending_of, stack, name)
        if held:
            stack.kill(victim)
            stack.notes.append(f"{name} killed holding {held} entries (attempt {attempts})")
            return
        stack.resume(victim)
        await reached(produced, min(produced.total + step, plan.total))  # let it read again
    raise AssertionError(f"{name} held no entries in {attempts} tries before the load ended")


async def test_worker_kill9_under_load(stack: Stack) -> None:
    """Two workers under load; one is SIGKILLed while it holds pending entries. The other
    reclaims them: every client gets every event once, in log order."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    victim = stack.worker("w-victim")
    stack.worker("w-survivor")
    plan = Plan(users=40, events_per_user=75, rate_per_s=500)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 5)
        await kill_while_holding_entries(stack, victim, "w-victim", produced, plan)

    await drive(stack, plan, StreamSink(stack.redis.url), lambda: [gateway.port], fault)
    expect_clean(stack)


async def test_gateway_kill9_under_load(stack: Stack) -> None:
    """The gateway is SIGKILLed under load and restarted on its port while events keep
    coming: every client reconnects with last_event_id and resumes, missing nothing and
    getting nothing twice."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    plan = Plan(users=40, events_per_user=75, rate_per_s=500)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 3)
        stack.kill(gateway)
        await reached(produced, plan.total // 2)  # events flow while it is down
        await asyncio.to_thread(gateway.start)

    outcome = await drive(stack, plan, StreamSink(stack.redis.url), lambda: [gateway.port], fault)
    expect_clean(stack)
    assert outcome.closes[1006] >= plan.users, "every client should have lost its socket"


async def test_rabbitmq_bridge_kill9_under_load(stack: Stack, queue: str) -> None:
    """The RabbitMQ bridge is SIGKILLed three times while it drains a queue fed at a steady
    rate (messages without message_id), and restarted each time: every message reaches its
    client exactly once (RabbitMQ redelivers what was not acked; nothing is written twice)."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    env = stack.env(RABBITMQ_QUEUE_NAME_AI_UPDATES=queue, RABBITMQ_PREFETCH="100")
    bridge = stack.bridge("rabbitmq", "bridge", env=env)
    plan = Plan(users=30, events_per_user=80, rate_per_s=400, producer_ids=False)

    async def fault(produced: Produced) -> None:
        for kill in range(3):
            await reached(produced, plan.total * (kill + 1) // 5)
            stack.kill(bridge)
            bridge.start()

    await drive(stack, plan, RabbitSink(queue), lambda: [gateway.port], fault)
    stack.notes.append("bridge killed 3 times")
    expect_clean(stack)
