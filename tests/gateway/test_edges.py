"""Integration tests of the gateway's edges: handshakes, races, several gateways, slow clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer.gateway.ownership import users_key
from streamer.worker.main import Worker
from tests.support.events import KEYS, add_events, payload, worker_settings
from tests.support.gateway import (
    SECRET,
    last_seen_then_offline,
    numbers,
    open_socket,
    owner_count,
    publish,
    receive,
    receive_until_recovery,
    running_gateway,
    token,
    ws_url,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer


async def _status(port: int, user: str, headers: dict[str, str] | None = None, **query: str) -> int:
    """The HTTP status of a handshake (101 when the socket opened)."""
    try:
        async with connect(ws_url(port, user, **query), additional_headers=headers, open_timeout=5):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_handshake_rejects_bad_tokens_with_401_and_other_users_with_403(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Missing, malformed, expired, badly signed, alg:none tokens: 401; another user's: 403."""
    unsigned = token("u1").rsplit(".", 1)[0].split(".", 1)[1]
    alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + unsigned + "."
    async with running_gateway(redis_server.url) as gateway:
        port = gateway.port
        assert await _status(port, "u1") == 401
        assert await _status(port, "u1", token="garbage") == 401
        assert await _status(port, "u1", token=token("u1", ttl_s=-10)) == 401
        assert await _status(port, "u1", token=token("u1", secret=SECRET + "-other")) == 401
        assert await _status(port, "u1", token=alg_none) == 401
        assert await _status(port, "u1", token=token("u2")) == 403
        assert await _status(port, "u1", {"Authorization": f"Bearer {token('u1')}"}) == 101
        assert await _status(port, "u1", token=token("u1")) == 101
    rejected = REGISTRY.get_sample_value(
        "streamer_gateway_handshakes_rejected_total", {"status": "401"}
    )
    assert rejected is not None and rejected >= 5


async def test_subprotocol_token_is_accepted_and_selected(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A token sent as subprotocol bearer.<token> authenticates and is echoed back (browsers)."""
    async with running_gateway(redis_server.url) as gateway:
        offered = f"bearer.{token('u1')}"
        async with connect(ws_url(gateway.port, "u1"), subprotocols=[offered]) as conn:  # type: ignore[list-item]
            assert conn.subprotocol == offered


async def test_origin_allowlist_and_socket_limit(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A foreign Origin gets 403; sockets beyond WS_MAX_SOCKETS_PER_USER get 429."""
    settings = {"WS_ALLOWED_ORIGINS": "https://app.example", "WS_MAX_SOCKETS_PER_USER": "2"}
    async with running_gateway(redis_server.url, **settings) as gateway:
        evil = {"Origin": "https://evil.example"}
        assert await _status(gateway.port, "u1", evil, token=token("u1")) == 403
        good = {"Origin": "https://app.example"}
        held = [
            await connect(ws_url(gateway.port, "u1", token=token("u1")), additional_headers=good)
            for _ in range(2)
        ]
        assert await _status(gateway.port, "u1", good, token=token("u1")) == 429
        for conn in held:
            await conn.close()


async def test_token_expiry_closes_open_socket(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """An open socket is closed with 4001 when its token's exp passes."""
    async with running_gateway(redis_server.url) as gateway:
        # Long enough to survive a slow handshake on a loaded machine (JWT exp is in seconds).
        conn = await open_socket(gateway.port, "u1", token=token("u1", ttl_s=3))
        async with asyncio.timeout(10):
            await conn.wait_closed()
        assert conn.close_code == 4001


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_http_routes(redis: aioredis.Redis, redis_server: RedisServer) -> None:
    """/healthz and /metrics answer; /demo exists only in demo mode; unknown paths are 404."""
    async with running_gateway(redis_server.url) as gateway:
        port = gateway.port
        assert await asyncio.to_thread(_get, port, "/healthz") == (200, b"ok\n")
        status, body = await asyncio.to_thread(_get, port, "/metrics")
        assert status == 200 and b"streamer_gateway_inbox_entries_total" in body
        assert (await asyncio.to_thread(_get, port, "/demo"))[0] == 404
        assert (await asyncio.to_thread(_get, port, "/nope"))[0] == 404
        shipped = resources.files("streamer").joinpath("static", "notify-client.js").is_file()
        assert (await asyncio.to_thread(_get, port, "/client.js"))[0] == (200 if shipped else 404)


async def test_events_arriving_during_replay_have_no_gap_and_no_duplicate(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Events appended just before and after the replay read arrive once each, in order."""
    async with running_gateway(redis_server.url) as gateway:
        seen_id = await last_seen_then_offline(redis, redis_server.url, gateway.port, "gina")
        await publish(redis, redis_server.url, "gina", range(1, 11))
        inbox = KEYS.inbox(gateway.gateway_id)
        real_read = gateway.logs.read_from

        async def inbox_consumed() -> bool:
            return await redis.xlen(inbox) == 0

        async def racing_read(kind: str, user: str, start: str, count: int):  # type: ignore[no-untyped-def]
            # Owned already: these reach the log and the inbox before the replay reads the log...
            await publish(redis, redis_server.url, "gina", range(11, 16))
            await eventually(inbox_consumed, what="inbox consumed before the read")
            frames = await real_read(kind, user, start, count)
            # ...and these only the inbox, after the read.
            await publish(redis, redis_server.url, "gina", range(16, 21))
            await eventually(inbox_consumed, what="inbox consumed after the read")
            return frames

        gateway.logs.read_from = racing_read  # type: ignore[method-assign]
        conn = await open_socket(gateway.port, "gina", last_event_id=seen_id)
        caught_up, recovery = await receive_until_recovery(conn, within_s=10)
        assert numbers(caught_up) == list(range(1, 21))
        assert recovery["recovered"] is True
        await publish(redis, redis_server.url, "gina", range(21, 23))
        assert numbers(await receive(conn, 2)) == [21, 22]
        await conn.close()


async def test_user_on_two_gateways_gets_every_event_on_both(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """One user with a socket on each of two gateways receives every event on both."""
    async with (
        running_gateway(redis_server.url, GATEWAY_ID="gw-a") as a,
        running_gateway(redis_server.url, GATEWAY_ID="gw-b") as b,
    ):
        on_a = await open_socket(a.port, "hana")
        on_b = await open_socket(b.port, "hana")
        assert await owner_count(redis, "hana", "gw-a") == 1
        assert await owner_count(redis, "hana", "gw-b") == 1
        await publish(redis, redis_server.url, "hana", range(25))
        assert numbers(await receive(on_a, 25)) == list(range(25))
        assert numbers(await receive(on_b, 25)) == list(range(25))


async def test_restart_with_same_id_removes_stale_ownership(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A gateway starting with an id that left ownership entries behind removes them first."""
    await redis.hset(KEYS.owners("ivan"), mapping={"gw-test": 3, "gw-other": 1})
    await redis.sadd(users_key(KEYS, "gw-test"), "ivan")
    await redis.xadd(
        KEYS.inbox("gw-test"), {"uid": "ivan", "id": "1-0", "type": "t", "content": "{}"}
    )
    async with running_gateway(redis_server.url, GATEWAY_ID="gw-test"):
        assert await redis.hgetall(KEYS.owners("ivan")) == {b"gw-other": b"1"}
        assert await redis.xlen(KEYS.inbox("gw-test")) == 0


def _slow_closes() -> float:
    return REGISTRY.get_sample_value("streamer_gateway_slow_client_closes_total") or 0.0


async def _stalled_socket(port: int, user: str) -> ClientConnection:
    """A socket with a tiny receive buffer, so a client that stops reading backs up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await connect(ws_url(port, user, token=token(user)), sock=sock, max_queue=4)


@pytest.mark.slow
async def test_slow_client_is_closed_4008_while_others_keep_receiving(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A socket that stops reading is closed 4008; its sibling gets every event promptly."""
    settings = {"WS_SEND_BUFFER_BYTES": str(1 << 20), "WS_CLOSE_TIMEOUT_S": "20"}
    pad, batch = "x" * 16000, 48  # a batch (770 KB) fits the bound: a reading client keeps up
    before = _slow_closes()
    worker = Worker(redis, worker_settings(redis_server.url))
    async with running_gateway(redis_server.url, **settings) as gateway:
        slow = await _stalled_socket(gateway.port, "kim")  # calls recv() only at the end
        fast = await open_socket(gateway.port, "kim")
        sent = 0
        while _slow_closes() == before:
            assert sent < 960, "the slow socket was never closed"
            events = [
                payload("kim", n, data={"n": n, "pad": pad}) for n in range(sent, sent + batch)
            ]
            await add_events(redis, events)
            await worker.drain()
            started = time.monotonic()
            assert numbers(await receive(fast, batch)) == list(range(sent, sent + batch))
            assert time.monotonic() - started < 2.0
            sent += batch
        got = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    got.append(json.loads(await slow.recv())["content"]["n"])
        assert slow.close_code == 4008
        assert got == list(range(len(got)))  # what it did get was in order, without gaps
        await fast.close()


async def test_redis_outage_refuses_handshakes_then_asks_sockets_to_resume(
    tmp_path: Path,
) -> None:
    """Without Redis handshakes get 503 and /healthz 503; after the outage sockets get 1012."""
    server = RedisServer(tmp_path / "redis").start()
    fast = {"GATEWAY_HEARTBEAT_MS": "100", "GATEWAY_DEAD_AFTER_MS": "500"}
    try:
        async with running_gateway(server.url, **fast) as gateway:
            conn = await open_socket(gateway.port, "olga")
            server.stop()
            assert await _status(gateway.port, "olga", token=token("olga")) == 503

            async def unhealthy() -> bool:
                return (await asyncio.to_thread(_get, gateway.port, "/healthz"))[0] == 503

            await eventually(unhealthy, what="/healthz 503 during the outage")
            server = RedisServer(tmp_path / "redis", port=server.port).start()
            async with asyncio.timeout(10):
                await conn.wait_closed()
            assert conn.close_code == 1012
            conn = await open_socket(gateway.port, "olga")
            await conn.close()
    finally:
        server.stop()
