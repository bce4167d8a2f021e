"""Integration tests: the bridges' batch writer against private redis-servers. A batch is
written once however its writes are retried: after a lost reply, a failure midway, a full
Redis; redeliveries are recognised by their recorded digest."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridges.batching import BUCKET_S, digest_buckets, marker_key
from bridges.core import StreamWrite
from bridges.idempotent import IdempotentWriter
from streamer.infra.errors import RetryableError
from streamer.infra.redis import connect_sync
from tests.support.events import KEYS
from tests.support.servers import RedisServer, free_port

A, B, C = (KEYS.partitions[i].stream for i in (0, 5, 11))


def entry(stream: str, name: str, digest: bytes | None = None, check: bool = False) -> StreamWrite:
    return StreamWrite(stream, {"payload": name.encode(), "extra": "x"}, digest, check)


def payloads(client: redis.Redis, stream: str) -> list[bytes]:
    return [f[b"payload"] for _, f in client.xrange(stream)]


def test_writing_a_batch_again_adds_nothing(sync_redis: redis.Redis) -> None:
    """The same batch written again (a reply that was lost) appends nothing, with or
    without digests, and reports every write as appended; a new batch writes again."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    batch = writer.batch([entry(A, "a"), entry(B, "b"), entry(A, "c", digest=b"dc")])
    assert writer.write(batch) == [True, True, True]
    assert writer.write(batch) == [True, True, True]
    assert (payloads(sync_redis, A), payloads(sync_redis, B)) == ([b"a", b"c"], [b"b"])
    assert sync_redis.xrange(A)[0][1][b"extra"] == b"x"
    writer.write(writer.batch([entry(A, "a")]))  # a first delivery is never skipped
    assert payloads(sync_redis, A) == [b"a", b"c", b"a"]


def test_a_late_try_of_an_older_batch_adds_nothing(sync_redis: redis.Redis) -> None:
    """A try of a batch that arrives after a later batch was written (its request held by a
    frozen Redis or the network) appends nothing and fails, whatever the first try did;
    another bridge process's batches are not affected."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    older, newer = writer.batch([entry(A, "old")]), writer.batch([entry(A, "new")])
    writer.write(newer)
    with pytest.raises(RetryableError, match="STALE"):
        writer.write(older)
    assert payloads(sync_redis, A) == [b"new"]
    other = IdempotentWriter(sync_redis, KEYS, 600)
    assert other.write(other.batch([entry(A, "other")])) == [True]
    assert payloads(sync_redis, A) == [b"new", b"other"]


def test_a_call_that_failed_midway_is_resumed_after_what_it_wrote(sync_redis: redis.Redis) -> None:
    """Redis keeps what a script wrote before it failed; writing the batch again continues
    after it (here the third entry is one Redis refuses: XADD without fields)."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    writes = [entry(A, "a"), entry(A, "b"), StreamWrite(A, {}), entry(A, "d")]
    batch = writer.batch(writes)
    with pytest.raises(RetryableError, match="Wrong number of args"):
        writer.write(batch)
    assert payloads(sync_redis, A) == [b"a", b"b"]
    writes[2] = entry(A, "c")  # the same batch, its third entry now one Redis accepts
    assert writer.write(batch) == [True] * 4
    assert payloads(sync_redis, A) == [b"a", b"b", b"c", b"d"]


def test_a_checked_write_is_skipped_when_its_digest_was_recorded(sync_redis: redis.Redis) -> None:
    """A digest recorded by any earlier write (even an unchecked one, by another process)
    skips a checked write of it, in that stream's buckets; within one batch the first copy
    is written once. Digests cost a hash field each, not a key each."""
    IdempotentWriter(sync_redis, KEYS, 600).write(
        IdempotentWriter(sync_redis, KEYS, 600).batch([entry(A, "first", digest=b"d1")])
    )
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    redelivered = [
        entry(A, "first again", digest=b"d1", check=True),
        entry(A, "new", digest=b"d2", check=True),
        entry(A, "new, repeated", digest=b"d2", check=True),
        entry(A, "same digest, unchecked", digest=b"d1"),
    ]
    assert writer.write(writer.batch(redelivered)) == [False, True, False, True]
    assert payloads(sync_redis, A) == [b"first", b"new", b"same digest, unchecked"]
    bucket = digest_buckets(KEYS, A, 0, 600)[0][0].rsplit(":", 1)[0]
    [key] = sync_redis.keys(f"{bucket}:*")
    assert sync_redis.hkeys(key) == [b"d1", b"d2"]
    assert 600 <= sync_redis.ttl(key) <= 600 + BUCKET_S


def test_bookkeeping_is_a_few_records_per_process_not_one_per_batch(
    sync_redis: redis.Redis,
) -> None:
    """Without digests (Pub/Sub), a hundred batches leave one progress record per stream
    the process wrote to, living the marker TTL."""
    writer = IdempotentWriter(sync_redis, KEYS, 60, instance="inst")
    for n in range(100):
        writer.write(writer.batch([entry(A, str(n)), entry(B, str(n)), entry(A, "+")]))
    records = sorted(k.decode() for k in sync_redis.scan_iter(match="*bridged*", count=1000))
    assert records == sorted(marker_key(KEYS, s, "p:inst:0") for s in (A, B))
    assert all(0 < sync_redis.ttl(r) <= 60 for r in records)
    assert sync_redis.get(records[0]) in (b"100:WW", b"100:W")


@pytest.fixture
def private(tmp_path: Path) -> Iterator[redis.Redis]:
    """A client on a redis-server of this test's own (its memory settings are changed)."""
    server = RedisServer(tmp_path / "redis").start()
    client = connect_sync(server.url, client_name="test")
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_redis_full_on_the_third_call_of_a_batch_then_the_retry_writes_each_once(
    private: redis.Redis,
) -> None:
    """maxmemory reached on the third of three calls (three partitions): the first two are
    written, the third refused; once there is room, the retry writes the third only."""
    writer = IdempotentWriter(private, KEYS, 600)
    writer.write(writer.batch([entry(A, "w")]))  # the script is loaded, the stream exists
    used = int(private.info("memory")["used_memory"])
    private.config_set("maxmemory-policy", "noeviction")
    private.config_set("maxmemory", used + 1_000_000)
    # Redis checks memory as each call starts: the two small calls run on what it has read
    # so far, the third needs its 2 MB argument in memory first, over the limit.
    writes = [entry(A, "a"), entry(B, "b"), StreamWrite(C, {"payload": b"c" * 2_000_000})]
    batch = writer.batch(writes)
    with pytest.raises(RetryableError, match="maxmemory"):
        writer.write(batch)
    assert [private.xlen(s) for s in (A, B, C)] == [2, 1, 0]
    private.config_set("maxmemory", 0)
    assert writer.write(batch) == [True, True, True]
    assert [private.xlen(s) for s in (A, B, C)] == [2, 1, 1]


def test_lost_script_cache_is_reloaded(sync_redis: redis.Redis) -> None:
    """After Redis forgets its scripts (restart), the writer reloads and still dedupes."""
    writer = IdempotentWriter(sync_redis, KEYS, 600)
    writer.write(writer.batch([entry(A, "a", digest=b"da")]))
    sync_redis.script_flush()
    again = writer.batch([entry(A, "a", b"da", True), entry(A, "b")])
    assert writer.write(again) == [False, True]
    assert sync_redis.xlen(A) == 2


def test_unreachable_redis_is_a_retryable_error() -> None:
    """A Redis that cannot be reached maps to RetryableError, quickly."""
    c = connect_sync(f"redis://127.0.0.1:{free_port()}/0", client_name="test")
    with pytest.raises(RetryableError, match="redis"):
        writer = IdempotentWriter(c, KEYS, 600)
        writer.write(writer.batch([entry(A, "a")]))


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
