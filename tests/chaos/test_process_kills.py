"""kill -9 of each process kind under load: worker, gateway, RabbitMQ bridge."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.drive import drive, expect_clean, reached
from tests.chaos.stack import Stack
from tests.support.load import Plan, Produced, RabbitSink, StreamSink
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def holds_pending(stack: Stack, name: str) -> bool:
    consumers = stack.status().get("consumers") or []
    return any(c["name"] == name and c["pending"] > 0 for c in consumers)


def kill_while_holding_entries(stack: Stack, victim: StreamerProcess, name: str) -> None:
    """SIGKILL the worker at a moment it holds read-but-unacked entries, so the kill leaves
    work behind: stopped, it still receives entries its blocked XREADGROUP asked for."""

    def stopped_holding() -> bool:
        stack.pause(victim)
        if holds_pending(stack, name):
            return True
        stack.resume(victim)
        return False

    wait_for(stopped_holding, timeout=30, interval=0.05, what=f"{name} holding entries")
    stack.kill(victim)


async def test_worker_kill9_under_load(stack: Stack) -> None:
    """Two workers under load; one is SIGKILLed while it holds pending entries. The other
    reclaims them: every client gets every event once, in log order."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    victim = stack.worker("w-victim")
    stack.worker("w-survivor")
    plan = Plan(users=40, events_per_user=75, rate_per_s=500)

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 3)
        await asyncio.to_thread(kill_while_holding_entries, stack, victim, "w-victim")

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
