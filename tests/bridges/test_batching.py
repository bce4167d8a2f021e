"""Unit tests for how a batch is split into script calls and where its markers live (no I/O)."""

from __future__ import annotations

import pytest

from bridges.batching import (
    BUCKET_S,
    MAX_CALL_ENTRIES,
    ScriptCall,
    digest_buckets,
    hash_tag,
    marker_key,
    outcomes,
    plan_calls,
)
from bridges.core import StreamWrite
from streamer.contract.partitions import key_slot
from tests.support.events import KEYS


def write(stream: str, n: int = 0) -> StreamWrite:
    return StreamWrite(stream, {"payload": str(n)})


A, B = KEYS.partitions[3].stream, KEYS.partitions[9].stream


def test_one_call_per_stream_in_batch_order_with_a_record_per_instance_and_stream() -> None:
    """Writes are grouped by stream (first appearance first), keep their order within a
    stream, and each call's progress record names the instance and the stream's chunk."""
    calls = plan_calls([write(A), write(B), write(A), write(B), write(A)], KEYS, "inst")
    assert [(c.stream, c.positions) for c in calls] == [(A, (0, 2, 4)), (B, (1, 3))]
    assert calls[0].progress == marker_key(KEYS, A, "p:inst:0")
    assert calls[1].progress == marker_key(KEYS, B, "p:inst:0")


def test_same_writes_give_the_same_calls_and_other_instances_other_records() -> None:
    """A retry plans exactly the calls of the first try: that is what makes it resume
    rather than write again; another bridge process keeps its own records."""
    writes = [write(B if n % 3 else A, n) for n in range(50)]
    assert plan_calls(writes, KEYS, "i") == plan_calls(list(writes), KEYS, "i")
    other = {c.progress for c in plan_calls(writes, KEYS, "j")}
    assert other.isdisjoint(c.progress for c in plan_calls(writes, KEYS, "i"))


def test_a_large_batch_to_one_stream_is_split_into_bounded_calls() -> None:
    """No call carries more than MAX_CALL_ENTRIES entries; together they carry all, in order."""
    calls = plan_calls([write(A, n) for n in range(2 * MAX_CALL_ENTRIES + 1)], KEYS, "i:0")
    assert [len(c.positions) for c in calls] == [MAX_CALL_ENTRIES, MAX_CALL_ENTRIES, 1]
    assert [p for c in calls for p in c.positions] == list(range(2 * MAX_CALL_ENTRIES + 1))
    assert len({c.progress for c in calls}) == 3


def test_markers_and_digest_buckets_share_their_streams_cluster_slot() -> None:
    """Every key a call touches is in its stream's slot, so it runs in Redis Cluster."""
    for part in KEYS.partitions:
        (call,) = plan_calls([write(part.stream)], KEYS, "i")
        buckets, _ = digest_buckets(KEYS, part.stream, 1_700_000_000.0, 3600)
        slots = {key_slot(k) for k in (call.progress, *buckets)}
        assert slots == {key_slot(part.stream)}


@pytest.mark.parametrize(
    ("key", "tag"),
    [("notify:events", "notify:events"), ("{app}:events", "app"), ("a{b}c{d}", "b")],
)
def test_marker_key_carries_the_streams_hash_tag(key: str, tag: str) -> None:
    """A marker of a stream without a hash tag is tagged with the whole stream name."""
    assert hash_tag(marker_key(KEYS, key, "mid:{x}")) == tag


@pytest.mark.parametrize("ttl_s", [60, 1799, 1800, 3600, 7201])
def test_a_digest_is_found_for_at_least_its_ttl_and_kept_at_most_a_bucket_longer(
    ttl_s: int,
) -> None:
    """A digest recorded at t is in a bucket looked up at every moment until t + TTL, by a
    bridge with the same TTL, another TTL, or a clock up to a bucket behind; that bucket
    lives until then, and is gone by t + TTL + BUCKET_S."""
    start = 1_700_000_000.0
    for t in (start + step * 97.3 for step in range(200)):
        written_to, ttl = digest_buckets(KEYS, A, t, ttl_s)
        assert ttl_s <= ttl <= ttl_s + BUCKET_S
        for later in (t + ttl_s * f / 10 for f in range(11)):
            for reader_ttl_s in (ttl_s, 60, 3600):
                assert written_to[0] in digest_buckets(KEYS, A, later, max(ttl_s, reader_ttl_s))[0]
            assert written_to[0] in digest_buckets(KEYS, A, later - BUCKET_S + 1, ttl_s)[0]


def test_outcomes_map_each_calls_letters_back_to_batch_positions() -> None:
    """'W' is appended, 'D' a duplicate; a reply of the wrong length is a bug, not data."""
    calls = [ScriptCall(A, "m0", (0, 2)), ScriptCall(B, "m1", (1,))]
    assert outcomes(calls, [b"WD", b"W"], 3) == [True, True, False]
    with pytest.raises(ValueError, match="2 entries"):
        outcomes(calls, [b"W", b"W"], 3)
