"""Sample the ingress stream's health: length, lag, pending, DLQ. Shared by the worker's
gauges and `streamer status`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streamer.keys import Keys


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class StreamStats:
    length: int
    group_exists: bool
    lag: int | None
    pending: int
    oldest_pending_age_ms: int | None
    dlq_length: int
    consumers: list[ConsumerInfo] = field(default_factory=list)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def sample(redis: aioredis.Redis, keys: Keys, *, lag_scan_limit: int = 10000) -> StreamStats:
    length = await redis.xlen(keys.stream)
    dlq_length = await redis.xlen(keys.dlq)
    try:
        groups = await redis.xinfo_groups(keys.stream)
    except ResponseError:  # no such stream
        groups = []
    group = next((g for g in groups if _text(g["name"]) == keys.group), None)
    if group is None:
        return StreamStats(length, False, None, 0, None, dlq_length)
    lag = group.get("lag")
    if lag is None:
        # Redis < 7 (or a lag Redis cannot compute): count entries after last-delivered-id.
        lag = await _count_after(
            redis, keys.stream, _text(group["last-delivered-id"]), lag_scan_limit
        )
    summary = await redis.xpending(keys.stream, keys.group)
    pending = int(summary["pending"])
    oldest_age = None
    if pending:
        oldest_age = int(time.time() * 1000) - int(_text(summary["min"]).split("-")[0])
    consumers = [
        ConsumerInfo(_text(c["name"]), int(c["pending"]), int(c["idle"]))
        for c in await redis.xinfo_consumers(keys.stream, keys.group)
    ]
    return StreamStats(length, True, int(lag), pending, oldest_age, dlq_length, consumers)


async def _count_after(redis: aioredis.Redis, stream: str, after: str, limit: int) -> int:
    entries = await redis.xrange(stream, min=f"({after}", max="+", count=limit)
    return len(entries)
