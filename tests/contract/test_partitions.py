"""Unit tests: the user -> partition mapping and the partitions' hash tags (no I/O)."""

from __future__ import annotations

from collections import Counter

import pytest

from streamer.contract.keys import Keys
from streamer.contract.partitions import (
    MAX_PARTITIONS,
    SLOTS,
    crc16,
    fnv1a_64,
    jump_hash,
    key_slot,
    partition_tag,
    topic_partition,
    user_partition,
)


def test_hashes_match_their_published_definitions() -> None:
    """CRC16/XMODEM and Redis' key slots, FNV-1a 64 and jump hash give the known values."""
    assert crc16(b"123456789") == 0x31C3
    assert key_slot("foo") == 12182  # the example of the Redis Cluster specification
    assert key_slot("{foo}.bar") == key_slot("foo") and key_slot("{}foo") == crc16(b"{}foo") % SLOTS
    assert fnv1a_64(b"") == 0xCBF29CE484222325 and fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert [jump_hash(k, 1) for k in range(50)] == [0] * 50


def test_a_user_keeps_its_partition_and_users_spread_evenly() -> None:
    """Stable across calls; 16,000 users over 16 partitions within 15 % of the mean."""
    assert user_partition("u42", 16) == user_partition("u42", 16)
    counts = Counter(user_partition(f"user-{n}", 16) for n in range(16_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1150 and min(counts.values()) > 850


def test_growing_the_partition_count_moves_few_users() -> None:
    """Jump hash: going from 16 to 17 partitions moves about 1/17 of the users, only to 16."""
    moved = [u for u in range(10_000) if user_partition(f"u{u}", 16) != user_partition(f"u{u}", 17)]
    assert 400 < len(moved) < 800
    assert all(user_partition(f"u{u}", 17) == 16 for u in moved)


def test_topics_and_users_hash_apart() -> None:
    """A topic named like a user is hashed as a topic ("#" + name), not as that user."""
    differ = sum(topic_partition(f"n{i}", 64) != user_partition(f"n{i}", 64) for i in range(200))
    assert differ > 150


@pytest.mark.parametrize("count", [1, 3, 16, 64, MAX_PARTITIONS])
def test_each_partition_tag_lies_in_its_own_slot_range(count: int) -> None:
    """Partition i of P hashes into the i-th of P equal slot ranges: spread over masters."""
    for index in range(count):
        slot = key_slot("{" + partition_tag(index, count) + "}")
        assert index * SLOTS // count <= slot < (index + 1) * SLOTS // count


def test_every_key_of_a_partition_shares_one_slot() -> None:
    """Stream, DLQ, feedback, lease, routing marks, user and topic keys: one slot."""
    keys = Keys("notify:", "notify:events", "notify-workers", 16)
    part = keys.of_user("u42")
    names = [part.stream, part.dlq, part.feedback, part.lease, part.routed]
    names += [keys.user_log("u42"), keys.owners("u42"), keys.dedupe("u42", "e1")]
    names += [keys.push_marker("u42", "e1", "push_ios")]
    assert {key_slot(name) for name in names} == {key_slot(part.stream)}
    topic = keys.of_topic("project:7")
    assert key_slot(keys.topic_log("project:7")) == key_slot(topic.stream)
    assert key_slot(keys.topic_owners("project:7")) == key_slot(topic.stream)
    gid = "gw-1"
    gateway_keys = [keys.inbox(gid), keys.gateway_users(gid), keys.gateway_info(gid)]
    assert len({key_slot(k) for k in [*gateway_keys, keys.gateway_topics(gid)]}) == 1
