"""Dead-letter stream operations (Redis I/O): fetch by id, requeue, count and purge.

There is one DLQ per ingress partition (beside the partition's stream, under its hash tag)
and the compatibility stream's. A dead letter is requeued into the stream beside its DLQ.

Requeueing runs one Lua script per batch that, for each dead letter still in the DLQ,
appends it to the ingress stream and only then deletes it. Why a script rather than
MULTI: MULTI would run the XDEL even if the XADD failed at run time (Redis transactions
do not roll back), and a script can also skip entries another operator requeued a moment
earlier, so no dead letter is requeued twice.

On Redis Cluster the compatibility stream and its DLQ lie in different slots, where no
script may touch both: there each dead letter still in the DLQ is appended, then deleted,
in that order (a crash in between requeues it twice; the partitions' DLQs, where every dead
letter of a partitioned deployment lands, keep the script).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

from streamer.contract.ids import MAX_ID, MIN_ID, StreamId, predecessor, successor
from streamer.contract.keys import Keys
from streamer.infra.redis import LuaScript, is_cluster
from streamer.ops.replay import source
from streamer.ops.replay.entries import EntryFilter, Fields, requeued_fields
from streamer.ops.replay.ids import require_id

Entry = tuple[bytes, Fields]

_REQUEUE = LuaScript.load("streamer.lua", "requeue_dead_letters.lua")
REQUEUE_BATCH = 500


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """A dead-letter stream and the ingress stream its entries are requeued into."""

    dlq: str
    target: str


def dead_letter_streams(keys: Keys) -> list[DeadLetters]:
    """Every DLQ: the compatibility stream's, then each partition's."""
    return [
        DeadLetters(keys.dlq, keys.stream),
        *(DeadLetters(p.dlq, p.stream) for p in keys.partitions),
    ]


@dataclass(slots=True)
class RequeueCount:
    requeued: int = 0
    gone: int = 0  # no longer in the DLQ when their batch ran
    finished: bool = False


async def fetch(redis: aioredis.Redis, dlq: str, ids: Iterable[StreamId]) -> list[Entry | None]:
    """The dead letters with these ids, None for each one that is not there."""
    pipe = redis.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(dlq, min=str(entry_id), max=str(entry_id))
    return [rows[0] if rows else None for rows in await pipe.execute()]


async def requeue(redis: aioredis.Redis, where: DeadLetters, entries: list[Entry]) -> RequeueCount:
    """Move these dead letters of ``where.dlq`` back into its ingress stream, in batches."""
    count = RequeueCount()
    for start in range(0, len(entries), REQUEUE_BATCH):
        moved = await _requeue_batch(redis, where, entries[start : start + REQUEUE_BATCH])
        count.requeued += moved
        count.gone += min(REQUEUE_BATCH, len(entries) - start) - moved
    count.finished = True
    return count


async def requeue_matching(
    redis: aioredis.Redis, where: DeadLetters, entry_filter: EntryFilter, stop: asyncio.Event
) -> RequeueCount:
    """Requeue every dead letter the filter matches, up to the DLQ's last entry when the
    scan began (entries dead-lettered again meanwhile wait for the next run)."""
    count = RequeueCount()
    tail = await redis.xrevrange(where.dlq, count=1)
    if not tail:
        count.finished = True
        return count
    end = require_id(tail[0][0])
    entries = source.pages(redis, where.dlq, MIN_ID, end, REQUEUE_BATCH)
    async with contextlib.aclosing(entries):
        async for page in entries:
            matched = [(eid, f) for eid, f in page if entry_filter.matches(f)]
            part = await requeue(redis, where, matched)
            count.requeued += part.requeued
            count.gone += part.gone
            if stop.is_set():
                return count
    count.finished = True
    return count


async def _requeue_batch(redis: aioredis.Redis, where: DeadLetters, batch: list[Entry]) -> int:
    if not batch:
        return 0
    if is_cluster(redis) and _slot(redis, where.dlq) != _slot(redis, where.target):
        return await _requeue_across_slots(redis, where, batch)
    args: list[bytes | int] = []
    for dlq_id, fields in batch:
        rewritten = requeued_fields(dlq_id, fields)
        args += [dlq_id, len(rewritten)]
        for name, value in rewritten.items():
            args += [name, value]
    moved = await _REQUEUE.run(redis, [where.target, where.dlq], args)
    return len(moved)


def _slot(redis: aioredis.Redis, key: str) -> int:
    slot: int = redis.keyslot(key)  # type: ignore[attr-defined]
    return slot


async def _requeue_across_slots(
    redis: aioredis.Redis, where: DeadLetters, batch: list[Entry]
) -> int:
    """Append, then delete, each dead letter still there (no script spans two slots)."""
    present = await fetch(redis, where.dlq, [require_id(dlq_id) for dlq_id, _ in batch])
    moved = [entry for entry in present if entry is not None]
    if not moved:
        return 0
    pipe = redis.pipeline(transaction=False)
    for dlq_id, fields in moved:
        pipe.xadd(where.target, requeued_fields(dlq_id, fields))  # type: ignore[arg-type]
    await pipe.execute()
    await redis.xdel(where.dlq, *(dlq_id for dlq_id, _ in moved))
    return len(moved)


@dataclass(frozen=True, slots=True)
class Counted:
    """Dead letters before a cutoff: how many, and the last one's id (None when none)."""

    count: int = 0
    last: StreamId | None = None


async def count_before(redis: aioredis.Redis, dlq: str, cutoff: StreamId) -> Counted:
    end = predecessor(cutoff)
    if end is None:
        return Counted()
    total, last = 0, None
    async for page in source.pages(redis, dlq, MIN_ID, min(end, MAX_ID), 1000):
        total += len(page)
        last = require_id(page[-1][0])
    return Counted(total, last)


def purge_limit(cutoff: StreamId, counted: Counted) -> StreamId | None:
    """The XTRIM MINID that deletes at most what was counted (and shown to the operator):
    entries dead-lettered after the count, however close to or beyond ``cutoff`` (``+``, a
    future time, clock skew), have later ids and survive. None: nothing to delete."""
    if counted.last is None:
        return None
    return min(cutoff, successor(counted.last))


async def purge_before(redis: aioredis.Redis, dlq: str, minid: StreamId) -> int:
    """Delete every dead letter with an id below ``minid``; returns how many."""
    # Exact trim: the default "~" would leave a partial node of old entries behind.
    return int(await redis.xtrim(dlq, minid=str(minid), approximate=False))
