"""The network between the RabbitMQ bridge and the broker failing under load."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.drive import drive, expect_clean, reached
from tests.chaos.stack import Stack
from tests.support.load import Plan, Produced, RabbitSink
from tests.support.polling import eventually
from tests.support.proxy import TcpProxy
from tests.support.rabbit import proxied_url

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

HEARTBEAT_S = 2  # AMQP heartbeat the bridge asks for: a silent broker is noticed in seconds


async def test_rabbitmq_connections_cut_then_black_holed(stack: Stack, queue: str) -> None:
    """The bridge reaches RabbitMQ through a proxy. Under load its connection is cut three
    times, then black-holed for 5 s and healed for new connections only (the old one stays
    half-open): heartbeats expose the dead connection, the bridge reconnects, RabbitMQ
    redelivers what was not acked, and every message reaches its client exactly once."""
    proxy = TcpProxy("127.0.0.1", 5672)
    stack.on_close(proxy.close)
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    env = stack.env(
        RABBITMQ_URL=f"{proxied_url(proxy)}?heartbeat={HEARTBEAT_S}",
        RABBITMQ_QUEUE_NAME_AI_UPDATES=queue,
        RABBITMQ_PREFETCH="100",
    )
    stack.bridge("rabbitmq", "bridge", env=env)
    plan = Plan(users=30, events_per_user=70, rate_per_s=350, producer_ids=False)

    async def fault(produced: Produced) -> None:
        for cut in range(3):
            await reached(produced, plan.total * (cut + 1) // 7)
            # The bridge has connected again since the last cut: there is one to cut.
            await eventually(lambda n=cut: proxy.accepted > n, what="the bridge connected")
            proxy.cut()
        await reached(produced, plan.total * 4 // 7)
        proxy.blackhole()
        await asyncio.sleep(5.0)  # the partition itself
        proxy.heal()

    await drive(stack, plan, RabbitSink(queue), lambda: [gateway.port], fault)
    stack.notes.append(f"{proxy.accepted} broker connections")
    expect_clean(stack)
