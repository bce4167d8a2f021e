"""End to end: RabbitMQ -> bridge -> stream -> worker -> gateway -> WebSocket client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from bridges.rabbitmq import RabbitBridge, dead_letter_queue, declare_queue
from bridges.settings import RabbitSettings
from streamer.infra.redis import connect_sync
from streamer.infra.settings import Env
from streamer.worker.main import Worker
from tests.support.events import worker_settings
from tests.support.gateway import numbers, open_socket, receive, running_gateway
from tests.support.rabbit import (
    InThread,
    channel,
    delete_queues,
    event,
    publish_confirmed,
    unique_queue,
)
from tests.support.servers import RedisServer


@pytest.fixture
def queue() -> Iterator[str]:
    """A declared queue no one else uses; deleted afterwards with its dead-letter queue."""
    name = unique_queue("test_bridge_e2e")
    with channel() as ch:
        declare_queue(ch, name)
    yield name
    delete_queues(name, dead_letter_queue(name))


async def test_rabbitmq_message_reaches_a_connected_websocket_once(
    redis: aioredis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """Messages published to RabbitMQ arrive on the user's open socket, in order, and a
    message published twice with the same message_id arrives once."""
    env = {"REDIS_URL": redis_server.url, "RABBITMQ_QUEUE_NAME_AI_UPDATES": queue}
    settings = RabbitSettings.from_env(Env({**env, "METRICS_PORT": "0"}))
    bridge = InThread(
        RabbitBridge(settings, connect_sync(redis_server.url, client_name="e2e"), "e2e")
    ).start()
    # The bridge writes to alice's ingress partition, which the worker owns.
    worker = Worker(redis, worker_settings(redis_server.url))
    working = asyncio.create_task(worker.run())
    try:
        async with running_gateway(redis_server.url) as gateway:
            conn = await open_socket(gateway.port, "alice")
            bodies = [event(1, "alice"), event(1, "alice"), event(2, "alice")]
            await asyncio.to_thread(publish_confirmed, queue, bodies, ["a-1", "a-1", "a-2"])
            frames = await receive(conn, 2, within_s=10)
            # Order is kept end to end, so the duplicate would have come before n=2.
            assert numbers(frames) == [1, 2]
            assert {f["type"] for f in frames} == {"test"}
            await conn.close()
    finally:
        worker.stop()
        await working
        await asyncio.to_thread(bridge.stop)
