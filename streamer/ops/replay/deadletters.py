"""Dead-letter stream operations (Redis I/O) over every DLQ: each partition's and the
compatibility stream's. Fetch by id, merge in id order, requeue, count and purge.

Requeueing a partition's dead letters runs one Lua script per batch that, for each dead
letter still in the DLQ, appends it to the partition's stream and only then deletes it: both
keys share the partition's hash tag, so the script stays in one Redis Cluster slot. Why a
script rather than MULTI: MULTI would run the XDEL even if the XADD failed at run time (Redis
transactions do not roll back), and a script can also skip entries another operator requeued
a moment earlier, so no dead letter is requeued twice.

The compatibility stream and its DLQ lie in different slots, so one script cannot touch
both: its dead letters are appended by a script in the stream's slot that marks each DLQ id
as it appends it (an id already marked is not appended again), then deleted from the DLQ.
A run interrupted between the two steps leaves marked entries in the DLQ; the next run
deletes them without appending them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from streamer.contract.ids import MAX_ID, MIN_ID, StreamId, predecessor, successor
from streamer.contract.keys import Keys
from streamer.contract.partitions import key_slot, sibling_key
from streamer.infra.redis import LuaScript
from streamer.ops.replay import source
from streamer.ops.replay.entries import EntryFilter, Fields, requeued_fields
from streamer.ops.replay.ids import BadInput, require_id

Entry = tuple[bytes, Fields]

_REQUEUE = LuaScript.load("streamer.lua", "requeue_dead_letters.lua")
_REQUEUE_MARKED = LuaScript.load("streamer.lua", "requeue_marked.lua")
REQUEUE_BATCH = 500
# A requeue mark only has to outlive the gap between a batch's append and its deletion.
MARK_TTL_MS = 7 * 86_400_000
COMPAT = "compat"


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    """One DLQ, named ``p<index>`` (a partition's) or ``compat``, and the ingress stream its
    dead letters are requeued to."""

    name: str
    key: str
    stream: str

    def handle(self, entry_id: bytes | str | StreamId) -> str:
        """How an operator names one of its dead letters: ``p3/1733000000000-0``."""
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return f"{self.name}/{text}"

    @property
    def single_slot(self) -> bool:
        return key_slot(self.key) == key_slot(self.stream)

    @property
    def marks(self) -> str:
        return sibling_key(self.stream, ":requeued")


def queues(keys: Keys) -> tuple[DeadLetterQueue, ...]:
    """Every DLQ: the partitions' in order, then the compatibility stream's."""
    parts = tuple(DeadLetterQueue(f"p{p.index}", p.dlq, p.stream) for p in keys.partitions)
    return (*parts, DeadLetterQueue(COMPAT, keys.dlq, keys.stream))


def parse_handle(
    text: str, all_queues: Sequence[DeadLetterQueue]
) -> tuple[DeadLetterQueue | None, StreamId]:
    """A handle (``p3/ID``, ``compat/ID``): its DLQ and id; a bare id: None and the id (the
    caller searches every DLQ). An unknown DLQ name or a malformed id is bad input."""
    name, slash, id_text = text.strip().rpartition("/")
    if not slash:
        return None, require_id(id_text)
    by_name = {q.name: q for q in all_queues}
    if name not in by_name:
        raise BadInput(f"no DLQ named {name!r} in {text!r} (p0..p{len(all_queues) - 2}, compat)")
    return by_name[name], require_id(id_text)


async def existing(
    redis: aioredis.Redis, all_queues: Sequence[DeadLetterQueue]
) -> list[DeadLetterQueue]:
    """The DLQs that exist (a missing DLQ holds no dead letters); a key of another type is
    bad input."""
    pipe = redis.pipeline(transaction=False)
    for q in all_queues:
        pipe.type(q.key)
    found = []
    for q, kind in zip(all_queues, await pipe.execute(), strict=True):
        text = kind.decode() if isinstance(kind, bytes) else str(kind)
        if text not in ("none", "stream"):
            raise BadInput(f"{q.key} is a {text}, not a stream")
        if text == "stream":
            found.append(q)
    return found


async def lengths(redis: aioredis.Redis, all_queues: Sequence[DeadLetterQueue]) -> list[int]:
    pipe = redis.pipeline(transaction=False)
    for q in all_queues:
        pipe.xlen(q.key)
    return [int(n) for n in await pipe.execute()]


async def fetch(redis: aioredis.Redis, dlq: str, ids: Iterable[StreamId]) -> list[Entry | None]:
    """The dead letters with these ids, None for each one that is not there."""
    pipe = redis.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(dlq, min=str(entry_id), max=str(entry_id))
    return [rows[0] if rows else None for rows in await pipe.execute()]


async def locate(
    redis: aioredis.Redis, all_queues: Sequence[DeadLetterQueue], texts: Sequence[str]
) -> list[tuple[DeadLetterQueue, Entry]]:
    """The dead letter each handle or bare id names, in order, without repeats. A bare id is
    searched in every DLQ and must be in exactly one; unknown or ambiguous ones are bad
    input (nothing has been written)."""
    wanted = [parse_handle(text, all_queues) for text in dict.fromkeys(texts)]
    searched = [[named] if named else list(all_queues) for named, _ in wanted]
    pipe = redis.pipeline(transaction=False)  # one XRANGE per DLQ asked: never multi-key
    for (_, sid), where in zip(wanted, searched, strict=True):
        for q in where:
            pipe.xrange(q.key, min=str(sid), max=str(sid))
    replies = iter(await pipe.execute())
    hits = [[(q, rows[0]) for q in where if (rows := next(replies))] for where in searched]
    _refuse_unknown_or_ambiguous(wanted, hits)
    return list({q.handle(e[0]): (q, e) for ((q, e),) in hits}.values())


def _refuse_unknown_or_ambiguous(
    wanted: list[tuple[DeadLetterQueue | None, StreamId]],
    hits: list[list[tuple[DeadLetterQueue, Entry]]],
) -> None:
    unknown = [
        named.handle(sid) if named else str(sid)
        for (named, sid), found in zip(wanted, hits, strict=True)
        if not found
    ]
    if unknown:
        raise BadInput(f"unknown dead-letter id(s): {', '.join(unknown)}")
    ambiguous = [
        f"{sid} is in {len(found)} DLQs: {', '.join(q.handle(sid) for q, _ in found)}"
        for (_, sid), found in zip(wanted, hits, strict=True)
        if len(found) > 1
    ]
    if ambiguous:
        raise BadInput(
            f"ambiguous dead-letter id(s), name one by its handle: {'; '.join(ambiguous)}"
        )


async def merged(
    redis: aioredis.Redis, all_queues: Sequence[DeadLetterQueue], page: int = 500
) -> AsyncGenerator[tuple[DeadLetterQueue, Entry], None]:
    """Every dead letter of these DLQs, oldest first (by id; equal ids in DLQ order), read
    page by page from each (close with contextlib.aclosing)."""
    readers = [source.pages(redis, q.key, MIN_ID, MAX_ID, page) for q in all_queues]
    try:
        empty: list[Entry] = []
        pages = list(await asyncio.gather(*(anext(r, empty) for r in readers)))
        heap = [(require_id(p[0][0]), i, 0) for i, p in enumerate(pages) if p]
        heapq.heapify(heap)
        while heap:
            _, i, at = heapq.heappop(heap)
            yield all_queues[i], pages[i][at]
            at += 1
            if at == len(pages[i]):
                pages[i], at = await anext(readers[i], empty), 0
            if at < len(pages[i]):
                heapq.heappush(heap, (require_id(pages[i][at][0]), i, at))
    finally:
        for reader in readers:
            await reader.aclose()


@dataclass(slots=True)
class RequeueCount:
    requeued: int = 0
    gone: int = 0  # no longer in the DLQ when their batch ran
    finished: bool = False

    def add(self, other: RequeueCount) -> None:
        self.requeued += other.requeued
        self.gone += other.gone


async def requeue(
    redis: aioredis.Redis, queue: DeadLetterQueue, entries: list[Entry]
) -> RequeueCount:
    """Move these dead letters of ``queue`` back into its ingress stream, in batches."""
    count = RequeueCount()
    for start in range(0, len(entries), REQUEUE_BATCH):
        batch = entries[start : start + REQUEUE_BATCH]
        moved = await _requeue_batch(redis, queue, batch)
        count.requeued += moved
        count.gone += len(batch) - moved
    count.finished = True
    return count


async def requeue_matching(
    redis: aioredis.Redis, queue: DeadLetterQueue, entry_filter: EntryFilter, stop: asyncio.Event
) -> RequeueCount:
    """Requeue every dead letter of ``queue`` the filter matches, up to the DLQ's last entry
    when the scan began (entries dead-lettered again meanwhile wait for the next run)."""
    count = RequeueCount()
    tail = await redis.xrevrange(queue.key, count=1)
    if not tail:
        count.finished = True
        return count
    end = require_id(tail[0][0])
    entries = source.pages(redis, queue.key, MIN_ID, end, REQUEUE_BATCH)
    async with contextlib.aclosing(entries):
        async for page in entries:
            matched = [(eid, f) for eid, f in page if entry_filter.matches(f)]
            count.add(await requeue(redis, queue, matched))
            if stop.is_set():
                return count
    count.finished = True
    return count


def _script_args(batch: list[Entry]) -> list[bytes | int]:
    args: list[bytes | int] = []
    for dlq_id, fields in batch:
        rewritten = requeued_fields(dlq_id, fields)
        args += [dlq_id, len(rewritten)]
        for name, value in rewritten.items():
            args += [name, value]
    return args


async def _requeue_batch(redis: aioredis.Redis, queue: DeadLetterQueue, batch: list[Entry]) -> int:
    if not batch:
        return 0
    if queue.single_slot:
        moved = await _REQUEUE.run(redis, [queue.stream, queue.key], _script_args(batch))
        return len(moved)
    return await _requeue_across_slots(redis, queue, batch)


async def _requeue_across_slots(
    redis: aioredis.Redis, queue: DeadLetterQueue, batch: list[Entry]
) -> int:
    # Only what is still in the DLQ: one removed since it was read (requeued, purged) is
    # not appended. (A removal between this check and the append is not seen: the price of
    # two slots; a concurrent requeue is still caught by the marks.)
    present = await fetch(redis, queue.key, [require_id(eid) for eid, _ in batch])
    batch = [e for e, there in zip(batch, present, strict=True) if there is not None]
    if not batch:
        return 0
    args: list[bytes | int] = [MARK_TTL_MS, *_script_args(batch)]
    appended = await _REQUEUE_MARKED.run(redis, [queue.stream, queue.marks], args)
    await redis.xdel(queue.key, *(eid for eid, _ in batch))
    return len(appended)


async def requeue_everywhere(
    redis: aioredis.Redis,
    all_queues: Sequence[DeadLetterQueue],
    entry_filter: EntryFilter,
    stop: asyncio.Event,
) -> dict[str, RequeueCount]:
    """``requeue_matching`` over each DLQ in turn (the existing ones); stops between batches
    when ``stop`` is set. Returns the count of each DLQ visited, by name."""
    counts: dict[str, RequeueCount] = {}
    for queue in await existing(redis, all_queues):
        counts[queue.name] = count = await requeue_matching(redis, queue, entry_filter, stop)
        if not count.finished:
            break
    return counts


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
