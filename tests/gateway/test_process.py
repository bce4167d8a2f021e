"""The gateway as a real process: SIGKILL failover with resume, SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from tests.support.events import KEYS
from tests.support.gateway import (
    GatewayProcess,
    numbers,
    open_socket,
    owner_count,
    publish,
    receive,
    receive_until_recovery,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer

Spawn = Callable[[str], GatewayProcess]


@pytest.fixture
def spawn(redis_server: RedisServer, tmp_path: Path) -> Iterator[Spawn]:
    """Start gateway processes; every one is killed at the end of the test."""
    started: list[GatewayProcess] = []

    def start(gateway_id: str) -> GatewayProcess:
        started.append(GatewayProcess(redis_server.url, gateway_id, tmp_path))
        return started[-1].start()

    yield start
    for process in started:
        process.stop()


async def test_sigkill_failover_resumes_on_other_gateway_with_nothing_lost(
    redis: aioredis.Redis, redis_server: RedisServer, spawn: Spawn
) -> None:
    """After SIGKILL of its gateway a client resumes on another one and misses nothing."""
    a, b = await asyncio.to_thread(spawn, "gw-a"), await asyncio.to_thread(spawn, "gw-b")
    conn = await open_socket(a.port, "lena")
    await publish(redis, redis_server.url, "lena", range(5))
    seen = await receive(conn, 5)
    a.signal(signal.SIGKILL)
    await asyncio.to_thread(a.wait)
    with pytest.raises(ConnectionClosed):
        await receive(conn, 1)
    await publish(redis, redis_server.url, "lena", range(5, 15))  # while the client is away
    conn = await open_socket(b.port, "lena", last_event_id=seen[-1]["id"])
    replayed, recovery = await receive_until_recovery(conn)
    assert numbers(replayed) == list(range(5, 15))
    assert recovery == {"type": "_recovery", "recovered": True, "replayed": 10}
    await publish(redis, redis_server.url, "lena", range(15, 18))
    assert numbers(await receive(conn, 3)) == [15, 16, 17]
    assert await owner_count(redis, "lena", "gw-a") == 1  # stale: gw-a never cleaned up
    await asyncio.to_thread(spawn, "gw-a")  # the same id again removes its stale entry

    async def stale_gone() -> bool:
        return await owner_count(redis, "lena", "gw-a") == 0

    await eventually(stale_gone, what="stale gw-a ownership removed on restart")
    assert await owner_count(redis, "lena", "gw-b") == 1
    await conn.close()


async def test_sigterm_closes_sockets_1001_and_removes_ownership(
    redis: aioredis.Redis, redis_server: RedisServer, spawn: Spawn
) -> None:
    """SIGTERM closes sockets with 1001, removes ownership and presence, and exits 0."""
    gateway = await asyncio.to_thread(spawn, "gw-term")
    conn = await open_socket(gateway.port, "mona")
    assert await owner_count(redis, "mona", "gw-term") == 1
    assert await redis.zscore(KEYS.gateways, "gw-term") is not None
    gateway.signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        await conn.wait_closed()
    assert conn.close_code == 1001
    assert await asyncio.to_thread(gateway.wait) == 0
    assert await owner_count(redis, "mona", "gw-term") == 0
    assert await redis.zscore(KEYS.gateways, "gw-term") is None
