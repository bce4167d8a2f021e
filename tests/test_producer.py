"""streamer.producer against a private Redis: partitioning the workers agree with, batches in
one round trip and in order, schema errors that write nothing, the idempotency window."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from streamer.contract.event import payload_decoder
from streamer.infra.errors import InvalidEvent, RetryableError
from streamer.infra.settings import Env, RedisSettings
from streamer.producer import Producer, ProducerSettings, SyncProducer, prepare
from streamer.worker.main import Worker
from tests.support.events import KEYS, ingress_streams, payload, worker_settings
from tests.support.gateway import numbers, open_socket, receive, running_gateway
from tests.support.servers import RedisServer, free_port


async def stream_lengths(redis: aioredis.Redis) -> int:
    return sum([await redis.xlen(s) for s in ingress_streams()])


def with_dedupe(url: str, ttl_s: int = 60) -> ProducerSettings:
    return ProducerSettings(RedisSettings.from_env(Env({"REDIS_URL": url})), dedupe_ttl_s=ttl_s)


@pytest.fixture
async def producer(redis: aioredis.Redis, redis_server: RedisServer) -> Producer:
    return Producer.connect(redis_server.url, {})


async def test_published_events_reach_a_socket_through_a_real_worker(
    redis: aioredis.Redis, redis_server: RedisServer, producer: Producer
) -> None:
    """Events of several users land on their partitions; a worker delivers each to its
    user's socket, in order, with no routing hop."""
    async with running_gateway(redis_server.url) as gateway:
        sockets = {u: await open_socket(gateway.port, u) for u in ("alice", "bob", "carol")}
        events = [json.loads(payload(u, n)) for n in range(3) for u in sockets]
        await producer.publish_many(events)
        await Worker(redis, worker_settings(redis_server.url)).drain()
        for conn in sockets.values():
            assert numbers(await receive(conn, 3)) == [0, 1, 2]
            await conn.close()
    assert await redis.xlen(KEYS.stream) == 0  # the compatibility stream was not used
    await producer.aclose()


async def test_each_event_goes_to_the_partition_ingress_for_names(
    redis: aioredis.Redis, producer: Producer
) -> None:
    """User, first of user_ids, topic, broadcast: the stream Keys.ingress_for names, and the
    returned ids are those entries', in the order of the events."""
    events = [
        {"user_id": "u1", "event_type": "a"},
        {"user_ids": ["u7", "u1"], "event_type": "b"},
        {"topic": "project:1", "event_type": "c"},
        {"broadcast": True, "event_type": "d"},
        {"user_id": "u1", "event_type": "e"},
    ]
    ids = await producer.publish_many(events)
    for event, stream_id in zip(events, ids, strict=True):
        stream = KEYS.ingress_for(payload_decoder.decode(json.dumps(event)))
        [(_, fields)] = await redis.xrange(stream, stream_id, stream_id)
        assert json.loads(fields[b"payload"]) == event
    same_user = [ids[0], ids[4]]
    assert same_user == sorted(same_user, key=lambda i: tuple(map(int, i.split("-"))))
    await producer.aclose()


async def test_a_schema_error_names_the_field_and_writes_nothing_of_the_batch(
    redis: aioredis.Redis, producer: Producer
) -> None:
    """One bad event in a batch: InvalidEvent with its index and field, no entry written."""
    good = {"user_id": "u1", "event_type": "a"}
    with pytest.raises(InvalidEvent) as caught:
        await producer.publish_many([good, {"user_id": 42, "event_type": "b"}])
    assert caught.value.index == 1 and caught.value.reason == "schema"
    assert "$.user_id" in str(caught.value)
    with pytest.raises(InvalidEvent, match="exactly one of"):
        await producer.publish({"event_type": "nobody"})
    with pytest.raises(InvalidEvent) as too_large:
        await producer.publish({**good, "data": {"x": "y" * 70000}})
    assert too_large.value.reason == "too_large"
    assert await stream_lengths(redis) == 0
    await producer.aclose()


async def test_with_dedupe_an_id_is_appended_once_and_answers_its_first_stream_id(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Same id twice (in one batch and again later): one entry; every answer is its id."""
    producer = Producer.from_settings(with_dedupe(redis_server.url), client_name="test")
    event = {"user_id": "u1", "event_type": "a", "id": "evt-1"}
    first, again = await producer.append(producer.prepare_many([event, event]))
    later = await producer.publish(event)
    other = await producer.publish({"user_id": "u1", "event_type": "a"})  # no id: no dedupe
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.stream_id == later == first.stream_id != other
    assert await redis.xlen(KEYS.ingress("u1")) == 2
    marker = KEYS.of_user("u1").published("evt-1")
    assert 0 < await redis.ttl(marker) <= 60
    await producer.aclose()


async def test_redis_down_raises_retryable_error() -> None:
    """Nothing listening: RetryableError, from the producer's one mapping of Redis errors."""
    producer = Producer.connect(f"redis://127.0.0.1:{free_port()}/0", {})
    with pytest.raises(RetryableError):
        await producer.publish({"user_id": "u1", "event_type": "a"})
    await producer.aclose()


async def test_the_sync_producer_publishes_the_same_way(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """SyncProducer: same partitions, ids in order, same errors, same dedupe."""
    producer = SyncProducer.connect(redis_server.url, {})
    ids = producer.publish_many(
        [{"user_id": "u1", "event_type": "t", "data": {"n": n}} for n in range(3)]
    )
    entries = await redis.xrange(KEYS.ingress("u1"))
    assert [e[0].decode() for e in entries] == ids
    with pytest.raises(InvalidEvent):
        producer.publish(b"{not json")
    producer.close()
    producer = SyncProducer.from_settings(with_dedupe(redis_server.url), client_name="test")
    twice = [producer.publish({"user_id": "u2", "event_type": "t", "id": "k"}) for _ in range(2)]
    assert twice[0] == twice[1] and await redis.xlen(KEYS.ingress("u2")) == 1
    producer.close()


def test_the_dedupe_marker_shares_the_partition_hash_tag() -> None:
    """Stream and marker of an event carry the same (first) hash tag, even when the id has
    braces of its own: the dedupe script stays in one slot on Redis Cluster."""
    for event in (
        {"user_id": "u1", "event_type": "a", "id": "plain"},
        {"topic": "project:1", "event_type": "a", "id": "{other}-tag"},
        {"broadcast": True, "event_type": "a", "id": "b"},
    ):
        entry = prepare(event, KEYS, 65536, dedupe=True)
        assert entry.marker is not None
        assert (
            hash_tag(entry.marker)
            == hash_tag(entry.stream)
            == KEYS.partition_for(payload_decoder.decode(json.dumps(event))).tag
        )


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the first non-empty {...} of the key."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]
