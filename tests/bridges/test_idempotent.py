"""Integration tests: the bridges' idempotent stream writer against a private Redis."""

from __future__ import annotations

import socket

import pytest
import redis

from bridges.core import StreamWrite, marker_key
from bridges.idempotent import IdempotentWriter
from streamer.infra.errors import RetryableError
from streamer.infra.redis import connect_sync
from tests.support.events import KEYS
from tests.support.servers import free_port


def writes(*markers: str) -> list[StreamWrite]:
    return [StreamWrite(KEYS.stream, m, {"payload": m.encode(), "extra": "x"}) for m in markers]


def test_second_write_of_a_marker_is_skipped(sync_redis: redis.Redis) -> None:
    """A write whose marker was already written adds nothing and reports None."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    first = writer.write(writes("a", "b"))
    assert all(first)
    second = writer.write(writes("b", "c", "a"))
    assert second == [None, writer_id(sync_redis, "c"), None]
    assert [f[b"payload"] for _, f in sync_redis.xrange(KEYS.stream)] == [b"a", b"b", b"c"]
    assert sync_redis.xrange(KEYS.stream)[0][1][b"extra"] == b"x"
    assert 0 < sync_redis.ttl(marker_key(KEYS, KEYS.stream, "a")) <= 600
    assert sync_redis.get(marker_key(KEYS, KEYS.stream, "a")) == b"1"  # one byte, not the entry id


def test_unchecked_write_always_appends_and_still_sets_the_marker(sync_redis: redis.Redis) -> None:
    """A write with check=False is appended even when its marker exists (a first delivery
    cannot be a duplicate), and sets the marker for a later redelivery to find."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    first = StreamWrite(KEYS.stream, "same", {"payload": b"1"}, check=False)
    again = StreamWrite(KEYS.stream, "same", {"payload": b"2"}, check=False)
    assert all(writer.write([first, again]))
    assert writer.write([StreamWrite(KEYS.stream, "same", {"payload": b"3"})]) == [None]
    assert [f[b"payload"] for _, f in sync_redis.xrange(KEYS.stream)] == [b"1", b"2"]


def writer_id(sync_redis: redis.Redis, payload: str) -> str:
    for entry_id, fields in sync_redis.xrange(KEYS.stream):
        if fields[b"payload"] == payload.encode():
            return str(entry_id.decode())
    raise AssertionError(payload)


def test_lost_script_cache_is_reloaded(sync_redis: redis.Redis) -> None:
    """After Redis forgets its scripts (restart), the writer reloads and still dedupes."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    writer.write(writes("a"))
    sync_redis.script_flush()
    assert writer.write(writes("a", "b"))[0] is None
    assert sync_redis.xlen(KEYS.stream) == 2


def test_unreachable_redis_is_a_retryable_error() -> None:
    """A Redis that cannot be reached maps to RetryableError, quickly."""
    c = connect_sync(f"redis://127.0.0.1:{free_port()}/0", client_name="test")
    with pytest.raises(RetryableError, match="redis"):
        IdempotentWriter(c, KEYS, 600).write(writes("a"))


def test_connections_probe_a_silent_peer_with_tcp_keepalive(sync_redis: redis.Redis) -> None:
    """Bridge connections enable TCP keepalive after 10 s idle (not Linux's two hours)."""
    sync_redis.ping()
    conn = sync_redis.connection_pool.get_connection()
    try:
        sock = conn._sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
    finally:
        sync_redis.connection_pool.release(conn)
