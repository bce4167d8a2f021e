"""Topics, many users and broadcasts: one event, many sockets, across two gateways, with
per-topic resume and an honest recovered flag."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from streamer.worker.main import Worker
from tests.fakes.harness import metric
from tests.support.events import KEYS, add_events, dead_letters, user_log_numbers, worker_settings
from tests.support.gateway import numbers, open_socket, receive, running_gateway, token
from tests.support.servers import RedisServer

TOPIC = "project:42"


def topic_event(n: int, topic: str = TOPIC) -> bytes:
    return json.dumps({"topic": topic, "event_type": "edit", "data": {"n": n}}).encode()


async def publish_raw(redis: aioredis.Redis, url: str, payloads: list[bytes], **extra: str) -> None:
    await add_events(redis, payloads, direct=True)
    await Worker(redis, worker_settings(url, **extra)).drain()


async def subscribe(
    conn: ClientConnection, topic: str, last_event_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send a subscribe frame; the replayed frames and the answer."""
    frame: dict[str, Any] = {"type": "subscribe", "topic": topic}
    if last_event_id is not None:
        frame["last_event_id"] = last_event_id
    await conn.send(json.dumps(frame))
    replayed = []
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await conn.recv())
            if message.get("type") in ("subscribed", "subscribe_refused"):
                return replayed, message
            replayed.append(message)


async def socket_for(port: int, user: str, allowed: list[str], **query: str) -> ClientConnection:
    """A socket whose token's ``topics`` claim is ``allowed``."""
    return await open_socket(port, user, token=token(user, topics=allowed), **query)


async def test_a_topic_event_reaches_subscribers_on_two_gateways_in_order(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Subscribed by frame on one gateway and by ?topics= on another: both sockets get every
    topic event once, in order, tagged with the topic; a socket not subscribed gets none."""
    async with (
        running_gateway(redis_server.url, GATEWAY_ID="gw-a") as a,
        running_gateway(redis_server.url, GATEWAY_ID="gw-b") as b,
    ):
        alice = await socket_for(a.port, "alice", ["project:*"])
        assert (await subscribe(alice, TOPIC))[1] == {
            "type": "subscribed",
            "topic": TOPIC,
            "recovered": True,
            "replayed": 0,
        }
        bob = await socket_for(b.port, "bob", [TOPIC], topics=TOPIC)
        carol = await socket_for(a.port, "carol", [TOPIC])
        assert (await receive(bob, 1))[0]["type"] == "subscribed"
        await publish_raw(redis, redis_server.url, [topic_event(n) for n in range(5)])
        for conn in (alice, bob):
            frames = await receive(conn, 5)
            assert numbers(frames) == list(range(5))
            assert {f["topic"] for f in frames} == {TOPIC}
        await carol.send('{"type":"ping"}')
        assert json.loads(await carol.recv()) == {"type": "pong"}  # and no topic frame before
        for conn in (alice, bob, carol):
            await conn.close()


async def test_a_topic_resumes_from_its_last_id_or_says_it_cannot(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Subscribing again with the last id seen replays exactly what was missed
    (recovered:true); with an id the topic's log no longer has, nothing is replayed and
    recovered is false."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await socket_for(gateway.port, "dana", [TOPIC])
        await subscribe(conn, TOPIC)
        await publish_raw(redis, redis_server.url, [topic_event(0)])
        [seen] = await receive(conn, 1)
        await conn.close()
        await publish_raw(redis, redis_server.url, [topic_event(n) for n in range(1, 6)])
        conn = await socket_for(gateway.port, "dana", [TOPIC])
        replayed, answer = await subscribe(conn, TOPIC, seen["id"])
        assert numbers(replayed) == [1, 2, 3, 4, 5]
        assert answer == {"type": "subscribed", "topic": TOPIC, "recovered": True, "replayed": 5}
        await publish_raw(redis, redis_server.url, [topic_event(6)])
        assert numbers(await receive(conn, 1)) == [6]
        await conn.close()
        # Trimming is approximate (whole nodes of 100 entries): 250 more trim the old id away.
        more = [topic_event(n) for n in range(7, 257)]
        await publish_raw(redis, redis_server.url, more, TOPIC_HISTORY_SIZE="10")
        conn = await socket_for(gateway.port, "dana", [TOPIC])
        replayed, answer = await subscribe(conn, TOPIC, seen["id"])
        assert replayed == []
        assert (answer["recovered"], answer["replayed"]) == (False, 0)
        await conn.close()


async def test_topics_the_token_does_not_allow_are_refused(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A topic outside the token's claim, an invalid name, or one subscription too many: a
    subscribe_refused frame with the reason, counted; the socket stays open."""
    refused = metric("streamer_gateway_topic_refusals_total", reason="forbidden")
    async with running_gateway(redis_server.url, WS_MAX_TOPICS_PER_SOCKET="2") as gateway:
        conn = await socket_for(gateway.port, "erin", ["project:*"])
        assert (await subscribe(conn, "session:9"))[1]["reason"] == "forbidden"
        assert (await subscribe(conn, "bad topic"))[1]["reason"] == "invalid"
        await subscribe(conn, "project:1")
        await subscribe(conn, "project:2")
        assert (await subscribe(conn, "project:3"))[1]["reason"] == "too_many"
        plain = await open_socket(gateway.port, "fred")  # a token without a topics claim
        assert (await subscribe(plain, "project:1"))[1]["reason"] == "forbidden"
        await conn.send('{"type":"ping"}')
        assert json.loads(await conn.recv()) == {"type": "pong"}
        assert metric("streamer_gateway_topic_refusals_total", reason="forbidden") == refused + 2
        for c in (conn, plain):
            await c.close()


async def test_unsubscribing_stops_delivery_and_releases_ownership(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """After unsubscribe, topic events no longer arrive and the gateway's entry in the
    topic's owners is gone once no socket holds the topic."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await socket_for(gateway.port, "gail", [TOPIC])
        await subscribe(conn, TOPIC)
        assert await redis.hexists(KEYS.topic_owners(TOPIC), gateway.gateway_id)
        await conn.send(json.dumps({"type": "unsubscribe", "topic": TOPIC}))
        assert json.loads(await conn.recv()) == {"type": "unsubscribed", "topic": TOPIC}
        await publish_raw(redis, redis_server.url, [topic_event(1)])
        await conn.send('{"type":"ping"}')
        assert json.loads(await conn.recv()) == {"type": "pong"}
        await gateway._topics.flushed()
        assert not await redis.hexists(KEYS.topic_owners(TOPIC), gateway.gateway_id)
        await conn.close()


async def test_a_broadcast_reaches_every_socket_on_two_gateways_within_its_rate(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """broadcast:true goes to every connected socket on every gateway (no id: not logged);
    beyond BROADCASTS_PER_S the extra ones are dead-lettered, not silently dropped."""
    async with (
        running_gateway(redis_server.url, GATEWAY_ID="gw-a") as a,
        running_gateway(redis_server.url, GATEWAY_ID="gw-b") as b,
    ):
        sockets = [await open_socket(gw.port, f"u{n}") for n, gw in enumerate((a, b, a, b))]
        body = {"broadcast": True, "event_type": "maintenance", "data": {"n": 1}}
        payloads = [json.dumps(body).encode()] * 3
        await publish_raw(redis, redis_server.url, payloads, BROADCASTS_PER_S="1")
        for conn in sockets:
            [frame] = await receive(conn, 1)
            assert frame == {"type": "maintenance", "broadcast": True, "content": {"n": 1}}
        reasons = [f[b"reason"] for _, f in await dead_letters(redis)]
        assert reasons == [b"broadcast_rate_limited"] * 2
        for conn in sockets:
            await conn.close()


@pytest.mark.slow
async def test_an_event_for_1000_users_reaches_each_once_even_when_redelivered(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """user_ids with 1,000 users over every partition: each user's log holds it once, the
    connected sockets get it once, and delivering the same entries again doubles nothing."""
    users = [f"member-{n}" for n in range(1000)]
    body = {"user_ids": users, "event_type": "shared", "data": {"n": 7}}
    async with running_gateway(redis_server.url) as gateway:
        sockets = [await open_socket(gateway.port, u) for u in users[::20]]
        await publish_raw(redis, redis_server.url, [json.dumps(body).encode()])
        for conn in sockets:
            assert numbers(await receive(conn, 1)) == [7]
        for part in KEYS.partitions:  # every partition handles its share again
            await redis.xgroup_setid(part.stream, KEYS.group, "0")
        await Worker(redis, worker_settings(redis_server.url)).drain()
        for user in users:
            assert await user_log_numbers(redis, user) == [7]
        for conn in sockets:
            await conn.send('{"type":"ping"}')
            assert json.loads(await conn.recv()) == {"type": "pong"}  # nothing doubled
            await conn.close()


async def test_too_many_users_are_dead_lettered_with_a_reason(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """More than 1,000 user_ids: dead-lettered as too_many_users, delivered to nobody."""
    body = {"user_ids": [f"x{n}" for n in range(1001)], "event_type": "x"}
    await publish_raw(redis, redis_server.url, [json.dumps(body).encode()])
    assert [f[b"reason"] for _, f in await dead_letters(redis)] == [b"too_many_users"]
    assert await user_log_numbers(redis, "x0") == []
