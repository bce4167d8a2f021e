"""Ingress partitions (contract): which partition a user or topic belongs to, and the hash
tag that puts all of one partition's keys in one Redis Cluster slot. Pure: no I/O.

A user (or topic) maps to one of ``P`` partitions (``INGRESS_PARTITIONS``) by jump
consistent hash (Lamping & Veach, 2014) over the 64-bit FNV-1a hash of its UTF-8 bytes; a
topic hashes as ``"#"`` followed by its name, so topic and user names never collide. The
same user always lands in the same partition for a given ``P``; changing ``P`` moves keys
between partitions, so it needs a drain (README, Scaling).

Each partition's keys share a hash tag chosen so that partition ``i`` of ``P`` lies in the
``i``-th of ``P`` equal ranges of the 16,384 cluster slots. Redis Cluster gives each master
a contiguous range of slots, so partitions spread over the masters as evenly as their count
allows (naive tags such as ``{0}``, ``{1}`` land wherever CRC16 puts them).
"""

from __future__ import annotations

from functools import cache, lru_cache

SLOTS = 16384
MAX_PARTITIONS = 256

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_JUMP = 2862933555777941757


def fnv1a_64(data: bytes) -> int:
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & _MASK64
    return value


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: a bucket in ``range(buckets)`` for a 64-bit key."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _JUMP + 1) & _MASK64
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


# Cached: the hash runs byte by byte in Python (~1.5 µs a name) and names recur.
@lru_cache(maxsize=1 << 16)
def user_partition(user_id: str, partitions: int) -> int:
    return jump_hash(fnv1a_64(user_id.encode()), partitions)


@lru_cache(maxsize=1 << 14)
def topic_partition(topic: str, partitions: int) -> int:
    return jump_hash(fnv1a_64(b"#" + topic.encode()), partitions)


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for key slots."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes when it has one: the first non-empty {...}."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return None


def key_slot(key: str) -> int:
    """The cluster slot of a key: its hash tag's or, without one, its own."""
    tag = hash_tag(key)
    return crc16((key if tag is None else tag).encode()) % SLOTS


def sibling_key(key: str, suffix: str) -> str:
    """A key named after ``key`` that lies in the same cluster slot, so that one script may
    touch both: ``key`` keeps its hash tag, or becomes the tag when it has none."""
    return f"{key}{suffix}" if hash_tag(key) is not None else f"{{{key}}}{suffix}"


@cache
def partition_tag(index: int, partitions: int) -> str:
    """The hash tag of partition ``index`` of ``partitions``: ``p<index>.<n>`` with the
    smallest ``n`` whose slot falls in the partition's range of slots."""
    if not 0 <= index < partitions <= MAX_PARTITIONS:
        raise ValueError(f"partition {index} of {partitions}")
    low, high = index * SLOTS // partitions, (index + 1) * SLOTS // partitions
    n = 0
    while True:
        tag = f"p{index}.{n}"
        if low <= crc16(tag.encode()) % SLOTS < high:
            return tag
        n += 1
