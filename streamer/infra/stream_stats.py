"""Read the ingress stream's health: length, lag, pending, consumers, dead letters.

Shared by the worker's sampled gauges (``sample``, cheap enough to run every few seconds)
and `streamer status` (``consumers`` and ``dead_letter_reasons``, run on demand). Scans
run server-side in Lua, in small chunks, so no call ships payloads or blocks Redis long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streamer.contract.ids import entry_ms
from streamer.contract.keys import Keys

# Counts entries after an id (exclusive), at most ARGV[2], reading 256 at a time.
_COUNT_AFTER = """
local n, limit, start = 0, tonumber(ARGV[2]), '(' .. ARGV[1]
while n < limit do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', math.min(256, limit - n))
  if #batch == 0 then break end
  n = n + #batch
  start = '(' .. batch[#batch][1]
end
return n
"""

# Tallies the `reason` field of the newest ARGV[1] entries; returns reason, count, ...
_TALLY_REASONS = """
local counts, seen, stop = {}, 0, tonumber(ARGV[1])
local cursor = '+'
while seen < stop do
  local batch = redis.call('XREVRANGE', KEYS[1], cursor, '-', 'COUNT', math.min(256, stop - seen))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local fields, reason = entry[2], '(none)'
    for i = 1, #fields, 2 do
      if fields[i] == 'reason' then reason = fields[i + 1] end
    end
    counts[reason] = (counts[reason] or 0) + 1
  end
  seen = seen + #batch
  cursor = '(' .. batch[#batch][1]
end
local flat = {}
for reason, count in pairs(counts) do
  flat[#flat + 1] = reason
  flat[#flat + 1] = count
end
return flat
"""


@dataclass(frozen=True, slots=True)
class StreamStats:
    length: int
    group_exists: bool
    lag: int | None  # None only when the group is missing
    pending: int
    oldest_pending_age_ms: int | None
    dlq_length: int


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int
    oldest_pending_age_ms: int | None  # None when it holds nothing pending


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def server_now_ms(redis: aioredis.Redis) -> int:
    """Redis's clock (TIME), in unix ms: every age here is measured on it, never on this
    host's clock, so that hosts whose clocks disagree agree on what is old (as liveness)."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def server_lag(group: Mapping[str, object]) -> int | None:
    """The lag XINFO GROUPS reports (Redis >= 7), or None when it has none: Redis 6.2 has
    no such field, and Redis 7 answers nil after deletions it cannot account for."""
    lag = group.get("lag")
    return lag if isinstance(lag, int) else None


async def count_after(redis: aioredis.Redis, stream: str, after_id: str, limit: int) -> int:
    """Entries after ``after_id``, counted up to ``limit`` (a lower bound beyond that)."""
    return int(await redis.eval(_COUNT_AFTER, 1, stream, after_id, str(limit)))  # type: ignore[misc]


async def _find_group(redis: aioredis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return None
    return next((g for g in groups if _text(g["name"]) == group), None)


async def sample_stream(
    redis: aioredis.Redis,
    stream: str,
    group: str,
    dlq: str,
    *,
    lag_scan_limit: int = 10000,
    now_ms: int | None = None,
) -> StreamStats:
    """One stream's length, lag, pending, oldest pending age (on Redis's clock, read now
    unless ``now_ms`` gives it) and DLQ length."""
    length = await redis.xlen(stream)
    dlq_length = await redis.xlen(dlq)
    found = await _find_group(redis, stream, group)
    if found is None:
        return StreamStats(length, False, None, 0, None, dlq_length)
    lag = server_lag(found)
    if lag is None:
        last_delivered = _text(found["last-delivered-id"])
        lag = await count_after(redis, stream, last_delivered, lag_scan_limit)
    summary = await redis.xpending(stream, group)
    pending = int(summary["pending"])
    if now_ms is None:
        now_ms = await server_now_ms(redis)
    oldest = max(0, now_ms - entry_ms(_text(summary["min"]))) if pending else None
    return StreamStats(length, True, lag, pending, oldest, dlq_length)


def ingress_streams(keys: Keys) -> list[tuple[str, str]]:
    """(stream, DLQ) of every ingress stream: the partitions, then the compatibility one."""
    return [(p.stream, p.dlq) for p in keys.partitions] + [(keys.stream, keys.dlq)]


async def sample_all(
    redis: aioredis.Redis, keys: Keys, now_ms: int | None = None
) -> list[StreamStats]:
    """Every ingress stream's stats, in the order of ``ingress_streams``."""
    now_ms = await server_now_ms(redis) if now_ms is None else now_ms
    return [
        await sample_stream(redis, stream, keys.group, dlq, now_ms=now_ms)
        for stream, dlq in ingress_streams(keys)
    ]


def total(stats: list[StreamStats]) -> StreamStats:
    """Totals over streams: sums, the oldest pending age, lag unknown if any is unknown."""
    lags = [s.lag for s in stats]
    ages = [s.oldest_pending_age_ms for s in stats if s.oldest_pending_age_ms is not None]
    return StreamStats(
        length=sum(s.length for s in stats),
        group_exists=all(s.group_exists for s in stats),
        lag=None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags),
        pending=sum(s.pending for s in stats),
        oldest_pending_age_ms=max(ages) if ages else None,
        dlq_length=sum(s.dlq_length for s in stats),
    )


async def sample(redis: aioredis.Redis, keys: Keys) -> StreamStats:
    """Totals over every ingress stream (for the worker's gauges)."""
    return total(await sample_all(redis, keys))


async def consumers(
    redis: aioredis.Redis, stream: str, group: str, now_ms: int, *, limit: int = 50
) -> list[ConsumerInfo]:
    """Consumers of the group on one stream, most pending first, at most ``limit``; each
    with the age of its oldest pending entry (at ``now_ms``, Redis's clock). Idle consumers
    without pending entries sort last."""
    try:
        rows = await redis.xinfo_consumers(stream, group)
    except ResponseError:  # no stream or no group
        return []
    rows = sorted(rows, key=lambda c: (-int(c["pending"]), int(c["idle"])))[:limit]
    pipe = redis.pipeline(transaction=False)
    holding = [c for c in rows if int(c["pending"])]
    for c in holding:
        pipe.xpending_range(stream, group, "-", "+", 1, consumername=c["name"])
    oldest: dict[str, int] = {}
    for c, first in zip(holding, await pipe.execute() if holding else [], strict=True):
        if first:
            age = now_ms - entry_ms(_text(first[0]["message_id"]))
            oldest[_text(c["name"])] = max(0, age)
    return [
        ConsumerInfo(
            _text(c["name"]), int(c["pending"]), int(c["idle"]), oldest.get(_text(c["name"]))
        )
        for c in rows
    ]


def merge_consumers(lists: list[list[ConsumerInfo]], limit: int = 50) -> list[ConsumerInfo]:
    """One consumer's rows over several streams as one: pending summed, the oldest age, the
    shortest idle time; most pending first, at most ``limit``."""
    merged: dict[str, ConsumerInfo] = {}
    for info in (c for rows in lists for c in rows):
        seen = merged.get(info.name)
        if seen is None:
            merged[info.name] = info
            continue
        ages = [
            a for a in (seen.oldest_pending_age_ms, info.oldest_pending_age_ms) if a is not None
        ]
        merged[info.name] = ConsumerInfo(
            info.name,
            seen.pending + info.pending,
            min(seen.idle_ms, info.idle_ms),
            max(ages) if ages else None,
        )
    return sorted(merged.values(), key=lambda c: (-c.pending, c.idle_ms))[:limit]


async def dead_letter_reasons(
    redis: aioredis.Redis, keys: Keys, *, scan: int = 1000
) -> list[tuple[str, int]]:
    """Reasons among the newest ``scan`` dead letters of each DLQ (every partition's and the
    compatibility stream's: one script call each, in one round trip; on Redis Cluster each
    runs in its DLQ's slot), most frequent first."""
    pipe = redis.pipeline(transaction=False)
    for _, dlq in ingress_streams(keys):
        pipe.execute_command("EVAL", _TALLY_REASONS, 1, dlq, str(scan))
    counts: dict[str, int] = {}
    for flat in await pipe.execute():
        for i in range(0, len(flat), 2):
            counts[_text(flat[i])] = counts.get(_text(flat[i]), 0) + int(flat[i + 1])
    return sorted(counts.items(), key=lambda p: (-p[1], p[0]))
