"""Integration tests: `?history=N` on a first open sends the newest N log entries, then the
socket is live with no gap and no duplicate (the gateway, in-process, on a private Redis)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import InvalidStatus

from tests.support.gateway import (
    last_seen_then_offline,
    numbers,
    open_socket,
    publish,
    receive,
    receive_until_recovery,
    running_gateway,
)
from tests.support.servers import RedisServer


async def test_history_sends_the_newest_entries_then_goes_live(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Events published before the socket opened: the newest N arrive first, oldest first,
    then `_recovery` (recovered, replayed N), then live events, each once."""
    async with running_gateway(redis_server.url) as gateway:
        await publish(redis, redis_server.url, "hana", range(5))
        conn = await open_socket(gateway.port, "hana", history="3")
        events, recovery = await receive_until_recovery(conn)
        assert numbers(events) == [2, 3, 4]
        assert recovery == {"type": "_recovery", "recovered": True, "replayed": 3}
        await publish(redis, redis_server.url, "hana", range(5, 8))
        assert numbers(await receive(conn, 3)) == [5, 6, 7]
        await conn.close()


async def test_history_of_an_empty_log_is_an_empty_recovery(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """No log yet: `_recovery` with replayed 0, then live."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await open_socket(gateway.port, "ivan", history="10")
        events, recovery = await receive_until_recovery(conn)
        assert events == [] and recovery["replayed"] == 0 and recovery["recovered"] is True
        await publish(redis, redis_server.url, "ivan", range(1))
        assert numbers(await receive(conn, 1)) == [0]
        await conn.close()


async def test_history_racing_live_deliveries_has_no_gap_and_no_duplicate(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Events delivered while the socket opens and reads its history: every event exactly
    once, in log order (ownership is registered before the history is read)."""
    async with running_gateway(redis_server.url) as gateway:
        await publish(redis, redis_server.url, "jack", range(20))
        publishing = asyncio.create_task(publish(redis, redis_server.url, "jack", range(20, 60)))
        conn = await open_socket(gateway.port, "jack", history="1000")
        events, recovery = await receive_until_recovery(conn)
        await publishing
        seen = numbers(events)
        seen += numbers(await receive(conn, 60 - len(seen), within_s=15))
        assert seen == list(range(60))
        assert recovery["recovered"] is True and recovery["replayed"] >= 20
        await conn.close()


async def test_last_event_id_wins_over_history(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """With a last id the socket resumes after it; history is for first opens only."""
    async with running_gateway(redis_server.url) as gateway:
        last_id = await last_seen_then_offline(redis, redis_server.url, gateway.port, "kate")
        await publish(redis, redis_server.url, "kate", range(1, 4))
        conn = await open_socket(gateway.port, "kate", last_event_id=last_id, history="1")
        events, recovery = await receive_until_recovery(conn)
        assert numbers(events) == [1, 2, 3]
        assert recovery == {"type": "_recovery", "recovered": True, "replayed": 3}
        await conn.close()


@pytest.mark.parametrize("value", ["0", "1001", "-1", "ten"])
async def test_history_out_of_range_is_refused_with_400(
    redis_server: RedisServer, value: str
) -> None:
    """`history` must be an integer from 1 to WS_MAX_REPLAY (1000 here): else HTTP 400."""
    async with running_gateway(redis_server.url) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            await open_socket(gateway.port, "lena", history=value)
        assert refused.value.response.status_code == 400
