"""Integration tests: the gateway in-process, against a private real Redis and real sockets."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from streamer.gateway.ownership import users_key
from tests.support.events import KEYS
from tests.support.gateway import (
    last_seen_then_offline,
    numbers,
    open_socket,
    owner_count,
    publish,
    receive,
    receive_until_recovery,
    running_gateway,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer


async def test_live_delivery_in_order(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    """Events published after the socket opened arrive live, once each, in order."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await open_socket(gateway.port, "alice")
        await publish(redis, redis_server.url, "alice", range(20))
        frames = await receive(conn, 20)
        assert numbers(frames) == list(range(20))
        assert all(f["type"] == "test" for f in frames)
        log_ids = [i.decode() for i, _ in await redis.xrange(KEYS.user_log("alice"))]
        assert [f["id"] for f in frames] == log_ids
        await conn.close()


async def test_ownership_counts_sockets_and_is_removed_at_zero(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """owners:{uid} holds this gateway's socket count while open; the field goes at zero."""
    async with running_gateway(redis_server.url) as gateway:
        first = await open_socket(gateway.port, "bob")
        assert await owner_count(redis, "bob", gateway.gateway_id) == 1
        second = await open_socket(gateway.port, "bob")
        assert await owner_count(redis, "bob", gateway.gateway_id) == 2
        await first.close()

        async def one_left() -> bool:
            return await owner_count(redis, "bob", gateway.gateway_id) == 1

        await eventually(one_left, what="owner count 1")
        await second.close()

        async def gone() -> bool:
            return not await redis.hexists(KEYS.owners("bob"), gateway.gateway_id)

        await eventually(gone, what="ownership removed")
        assert not await redis.sismember(users_key(KEYS, gateway.gateway_id), "bob")


async def test_resume_after_50_offline_events(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Reconnecting with last_event_id gets exactly the 50 missed events, recovered, then live."""
    async with running_gateway(redis_server.url) as gateway:
        seen_id = await last_seen_then_offline(redis, redis_server.url, gateway.port, "carol")
        await publish(redis, redis_server.url, "carol", range(1, 51))
        conn = await open_socket(gateway.port, "carol", last_event_id=seen_id)
        replayed, recovery = await receive_until_recovery(conn)
        assert numbers(replayed) == list(range(1, 51))
        assert recovery == {"type": "_recovery", "recovered": True, "replayed": 50}
        await publish(redis, redis_server.url, "carol", range(51, 56))
        assert numbers(await receive(conn, 5)) == list(range(51, 56))
        await conn.close()


async def test_resume_from_trimmed_id_is_not_recovered(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """An id older than the kept history gives recovered:false and no partial replay."""
    async with running_gateway(redis_server.url) as gateway:
        seen_id = await last_seen_then_offline(
            redis, redis_server.url, gateway.port, "dave", USER_HISTORY_SIZE="10"
        )
        # Trimming is approximate (whole stream nodes of 100 entries): 250 more trim it.
        await publish(redis, redis_server.url, "dave", range(1, 250), USER_HISTORY_SIZE="10")
        conn = await open_socket(gateway.port, "dave", last_event_id=seen_id)
        replayed, recovery = await receive_until_recovery(conn)
        assert replayed == []
        assert recovery == {"type": "_recovery", "recovered": False, "replayed": 0}
        await publish(redis, redis_server.url, "dave", range(250, 253), USER_HISTORY_SIZE="10")
        assert numbers(await receive(conn, 3)) == [250, 251, 252]
        await conn.close()


async def test_resume_frame_and_ping(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    """A first frame {"type":"resume"} resumes like the query; {"type":"ping"} gets a pong."""
    async with running_gateway(redis_server.url, WS_RESUME_WAIT_MS="5000") as gateway:
        await publish(redis, redis_server.url, "erin", range(5))
        first_id = (await redis.xrange(KEYS.user_log("erin"), count=1))[0][0].decode()
        conn = await open_socket(gateway.port, "erin")
        await conn.send(json.dumps({"type": "resume", "last_event_id": first_id}))
        replayed, recovery = await receive_until_recovery(conn)
        assert numbers(replayed) == [1, 2, 3, 4]
        assert recovery["recovered"] is True
        await conn.send('{"type":"ping"}')
        assert await receive(conn, 1) == [{"type": "pong"}]
        await conn.close()


async def test_oversized_client_frame_closes_1009(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A client frame over WS_MAX_CLIENT_FRAME closes the socket with 1009."""
    async with running_gateway(redis_server.url, WS_MAX_CLIENT_FRAME="128") as gateway:
        conn = await open_socket(gateway.port, "frank")
        await conn.send("x" * 1000)
        async with asyncio.timeout(5):
            await conn.wait_closed()
        assert conn.close_code == 1009
