"""Two workers racing to a gateway inbox must not leave a live socket with a gap."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from streamer.gateway.resume import Frame, has_gap
from tests.support.events import KEYS
from tests.support.gateway import (
    append_to_log,
    deliver_to_inbox,
    numbers,
    open_socket,
    publish,
    receive,
    running_gateway,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer


def test_has_gap_only_when_prev_is_beyond_what_was_sent() -> None:
    """A frame whose predecessor is newer than the last id sent reveals a missed entry."""
    frame = Frame((5, 0), b"", prev=(4, 0))
    assert has_gap(frame, (3, 0))
    assert not has_gap(frame, (4, 0))
    assert not has_gap(frame, None)
    assert not has_gap(Frame((5, 0), b""), (3, 0))


async def test_overtaking_delivery_is_preceded_by_the_one_it_overtook(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Inbox entries arriving in the reverse of log order still reach the socket in log
    order, each once: the later one carries its predecessor and the gap is filled."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await open_socket(gateway.port, "dave")
        await publish(redis, redis_server.url, "dave", range(1))
        assert numbers(await receive(conn, 1)) == [0]
        first, second = [await append_to_log(redis, "dave", n) for n in (1, 2)]
        # The worker holding the later event reaches the inbox first (a hand-over).
        await deliver_to_inbox(redis, gateway.gateway_id, [second])
        await deliver_to_inbox(redis, gateway.gateway_id, [first])
        frames = await receive(conn, 2)
        assert numbers(frames) == [1, 2]
        assert [f["id"] for f in frames] == [first.log_id, second.log_id]
        await publish(redis, redis_server.url, "dave", range(3, 4))
        assert numbers(await receive(conn, 1)) == [3]  # and nothing doubled in between
        await conn.close()


async def test_first_live_frame_on_a_fresh_socket_is_gap_checked(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A socket that has sent nothing yet still gets an overtaken entry before the one that
    overtook it (its floor is the log's end when it registered)."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await open_socket(gateway.port, "erin")
        await _await_owner(redis, "erin", gateway.gateway_id)
        await conn.send('{"type":"ping"}')  # answered once the socket is live, not buffering
        assert json.loads(await conn.recv()) == {"type": "pong"}
        first, second = [await append_to_log(redis, "erin", n) for n in (1, 2)]
        await deliver_to_inbox(redis, gateway.gateway_id, [second, first])
        frames = await receive(conn, 2)
        assert [f["id"] for f in frames] == [first.log_id, second.log_id]
        await conn.close()


async def test_unfillable_gap_closes_with_resync(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """If the overtaken entry is no longer in the log, the socket is closed with 1012 (so the
    client resumes and hears recovered:false) rather than living on with a silent gap."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await open_socket(gateway.port, "fred")
        await publish(redis, redis_server.url, "fred", range(1))
        assert numbers(await receive(conn, 1)) == [0]
        first, second = [await append_to_log(redis, "fred", n) for n in (1, 2)]
        await redis.xdel(KEYS.user_log("fred"), first.log_id)  # trimmed before it was sent
        await deliver_to_inbox(redis, gateway.gateway_id, [second])
        with pytest.raises(ConnectionClosed) as closed:
            await receive(conn, 1)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


async def test_vanished_ownership_is_restored_and_its_sockets_resume(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """When a worker (or lost Redis data) removes a live gateway's ownership entry, the next
    heartbeat writes it back and closes that user's sockets with 1012 so they resume."""
    async with running_gateway(redis_server.url, GATEWAY_HEARTBEAT_MS="100") as gateway:
        conn = await open_socket(gateway.port, "gail")
        other = await open_socket(gateway.port, "hank")
        await _await_owner(redis, "gail", gateway.gateway_id)
        await _await_owner(redis, "hank", gateway.gateway_id)
        await redis.hdel(KEYS.owners("gail"), gateway.gateway_id)
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        await _await_owner(redis, "hank", gateway.gateway_id)
        await publish(redis, redis_server.url, "hank", range(1))
        assert numbers(await receive(other, 1)) == [0]  # other users' sockets are untouched
        await other.close()


async def _await_owner(redis: aioredis.Redis, user: str, gateway_id: str) -> None:
    async def registered() -> bool:
        return bool(await redis.hexists(KEYS.owners(user), gateway_id))

    await eventually(registered, what=f"ownership of {user}")
