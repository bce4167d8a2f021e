"""Both bridges on a real Redis Cluster (three masters), as processes, with a worker behind
them: what they take in reaches the users' logs once each."""

from __future__ import annotations

import json
import uuid

import pytest
import redis.asyncio as aioredis

from bridges.rabbitmq import declare_queue
from streamer.contract.keys import Keys
from tests.support.cluster import ClusterStack
from tests.support.events import payload
from tests.support.polling import eventually
from tests.support.processes import StreamerProcess
from tests.support.rabbit import channel, delete_queues, publish_confirmed, unique_queue

pytestmark = pytest.mark.timeout(90)
USERS = [f"bridged-{i}" for i in range(8)]


def bridge(stack: ClusterStack, kind: str, **extra: str) -> StreamerProcess:
    env = {**stack.env, "BRIDGE_BACKOFF_BASE_MS": "50", **extra}
    process = StreamerProcess(["bridge", kind], env, stack.workdir / f"{kind}.log").start()
    return stack._track(process)


async def delivered_once(client: aioredis.Redis, keys: Keys, count: int) -> None:
    async def every_log_complete() -> bool:
        for user in USERS:
            entries = await client.xrange(keys.user_log(user))
            if [json.loads(f[b"content"])["n"] for _, f in entries] != list(range(count)):
                return False
        return True

    await eventually(every_log_complete, within_s=30, what="every bridged event in its log")


@pytest.mark.parametrize("sharded", [False, True])
async def test_pubsub_bridge(
    stack: ClusterStack,
    cluster_env: tuple[dict[str, str], Keys],
    client: aioredis.Redis,
    sharded: bool,
) -> None:
    """Messages on several channels (sharded: SSUBSCRIBE, the channels on several masters)
    are bridged into the partitions and delivered once each."""
    _, keys = cluster_env
    channels = [f"ch-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    stack.worker("w1")
    process = bridge(
        stack,
        "pubsub",
        ENABLE_REDIS_CONSUMER="true",
        REDIS_PUBSUB_CHANNEL_NAME=channels[0],
        REDIS_PUBSUB_CHANNELS=",".join(channels[1:]),
        REDIS_PUBSUB_SHARDED=str(sharded).lower(),
    )
    await eventually(lambda: "subscribed to" in process.output(), within_s=20, what="subscribed")
    command = "SPUBLISH" if sharded else "PUBLISH"
    for n in range(3):
        for i, user in enumerate(USERS):
            channel = channels[i % len(channels)]
            await client.execute_command(command, channel, payload(user, n))
    await delivered_once(client, keys, 3)
    assert not stack.crashes(), stack.crashes()


async def test_rabbitmq_bridge(
    stack: ClusterStack, cluster_env: tuple[dict[str, str], Keys], client: aioredis.Redis
) -> None:
    """Messages of a RabbitMQ queue are bridged into the partitions, delivered once each."""
    _, keys = cluster_env
    queue = unique_queue("cluster")
    with channel() as ch:
        declare_queue(ch, queue)
    try:
        publish_confirmed(queue, [payload(u, n) for n in range(3) for u in USERS])
        stack.worker("w1")
        bridge(
            stack,
            "rabbitmq",
            ENABLE_RABBITMQ_CONSUMER="true",
            RABBITMQ_QUEUE_NAME_AI_UPDATES=queue,
            RABBITMQ_QUEUES="",
        )
        await delivered_once(client, keys, 3)
        assert not stack.crashes(), stack.crashes()
    finally:
        delete_queues(queue)
