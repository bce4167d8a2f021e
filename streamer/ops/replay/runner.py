"""Carry out a replay over several streams (lanes): each partition's stream and the
compatibility stream, or their DLQs, each lane appending into its own ingress stream.

The lanes advance together, window by window of ids: a round replays every lane's entries
of one window ``[lo, hi]``, and only then does ``position`` move to ``hi``. So a stop between
rounds leaves one resume point for every lane: everything up to ``position`` is written
exactly once, in every lane, nothing after it. (Ids of different streams are not related
in time within a millisecond, but any id is a valid common bound.) A round whose calls
partly failed may have written some lanes' share: it is reported as in flight.

Page by page (filters, dry runs, DLQs, ``--rate``), ``hi`` is the first id at which some
lane has a batch since ``lo``, so no lane has more. Copied inside Redis, a window spans a
number of milliseconds adapted to the busiest lane of the last round (finding the batch-th
id of every lane first would cost Redis a third more per entry: BENCHMARKS.md, Replay).

Each call stays in one Redis Cluster slot: a lane reads and appends its own streams. With no
payload filter the entries never leave Redis (``replay_copy.lua``: read a window and append
it in one script); otherwise pages are read, filtered here and appended by one script call
per lane. One round's calls travel in one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from streamer.contract.ids import MAX_PART, StreamId, successor
from streamer.infra.redis import Calls, LuaScript
from streamer.ops.replay import source
from streamer.ops.replay.entries import EntryFilter, Fields, replayed_fields, requeued_fields
from streamer.ops.replay.ids import BadInput, require_id
from streamer.ops.replay.pacing import Estimate, batch_size, estimate_entries, pause_s

_APPEND = LuaScript.load("streamer.lua", "replay_append.lua")
_COPY = LuaScript.load("streamer.lua", "replay_copy.lua")
_MAX_WINDOW_MS = 1 << 44  # ~550 years: any stretch of time in one round


@dataclass(frozen=True, slots=True)
class Lane:
    """One stream read by a replay and the ingress stream its entries are appended to."""

    name: str  # p3, compat
    source: str
    target: str
    end: StreamId | None = None  # the source's last id when the replay began (None: empty)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    lanes: tuple[Lane, ...]
    start: StreamId
    end: StreamId  # inclusive; frozen at the newest last id of the lanes when it starts
    filter: EntryFilter
    from_dlq: bool
    dry_run: bool = False
    batch: int = 1000
    rate: float | None = None  # entries written per second at most
    sample_size: int = 5

    @property
    def in_redis(self) -> bool:
        """Whether entries can be copied inside Redis: every lane appends to the stream it
        reads, and nothing needs decoding (no payload or reason filter, not a dry run)."""
        f = self.filter
        return (
            not self.dry_run
            and self.rate is None  # paced replays go page by page, in exact small rounds
            and not self.from_dlq
            and not f.on_payload
            and f.reason is None
            and all(lane.source == lane.target for lane in self.lanes)
        )


@dataclass(slots=True)
class ReplayState:
    """Where a replay got to; updated after every round, readable after an interruption."""

    scanned: int = 0
    matched: int = 0  # entries that met the filter: written, unless a dry run
    position: StreamId | None = None  # every lane is done up to here
    finished: bool = False
    samples: list[tuple[bytes, Fields]] = field(default_factory=list)

    def resume_from(self, plan: ReplayPlan) -> StreamId:
        return plan.start if self.position is None else successor(self.position)


class Reporter(Protocol):
    def update(self, scanned: int, matched: int) -> None: ...


async def freeze(redis: aioredis.Redis, plan: ReplayPlan) -> tuple[ReplayPlan, Estimate]:
    """Check the streams and pin each lane's end to its source's last entry now: entries
    appended meanwhile, the replay's own included, are never replayed. Missing sources are
    dropped (an empty partition); none at all is bad input."""
    lanes, count, exact = [], 0, True
    for lane in plan.lanes:
        kind = await source.key_type(redis, lane.source)
        if kind == "none":
            continue
        shape = await source.inspect_stream(redis, lane.source)
        if lane.target != lane.source:
            await source.check_appendable(redis, lane.target)
        end = None if shape.last is None else min(plan.end, shape.last)
        lanes.append(dataclasses.replace(lane, end=end))
        guess = estimate_entries(plan.start, plan.end, shape.first, shape.last, shape.length)
        count, exact = count + guess.count, exact and guess.exact
    if not lanes:
        first, last = plan.lanes[0].source, plan.lanes[-1].source
        if first == last:
            raise BadInput(f"stream {first} does not exist")
        raise BadInput(f"none of the {len(plan.lanes)} streams to replay exists ({first} … {last})")
    ends = [lane.end for lane in lanes if lane.end is not None]
    end = min(plan.end, max(ends)) if ends else plan.start
    return dataclasses.replace(plan, lanes=tuple(lanes), end=end), Estimate(count, exact)


async def run(
    redis: aioredis.Redis,
    plan: ReplayPlan,
    state: ReplayState,
    reporter: Reporter,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Replay (or, for a dry run, count) the plan's range until done or ``stop`` is set."""
    rate = None if plan.dry_run else plan.rate
    count = batch_size(plan.batch, rate)
    started, lo, window = clock(), plan.start, _Window()
    while lo <= plan.end:
        active = [lane for lane in plan.lanes if lane.end is not None and lane.end >= lo]
        if not active:
            break
        if plan.in_redis:
            hi = await _copy_round(redis, plan, state, active, lo, window, count)
        else:
            hi = await _page_round(redis, plan, state, active, lo, count)
        state.position = hi
        reporter.update(state.scanned, state.matched)
        if hi >= plan.end:
            break
        lo = successor(hi)
        if await _stopped(stop, pause_s(state.matched, clock() - started, rate)):
            return
    state.finished = True


def _window_end(plan: ReplayPlan, counts: list[tuple[int, bytes]], count: int) -> StreamId:
    """The end of a round of pages: the first id at which some lane has ``count`` entries
    since the round's start (each lane then has at most ``count`` up to it), or the plan's
    end."""
    full = [require_id(last) for n, last in counts if n >= count]
    return min([plan.end, *full])


@dataclass(slots=True)
class _Window:
    """How many milliseconds of ids a round of in-Redis copies covers: halved (or more)
    when the busiest lane held over two batches, doubled when it held under half of one.
    Rounds start where some lane has an entry (empty time is skipped at once)."""

    ms: int = 1
    empty: bool = True  # the last round copied nothing: look for the next entry first

    def adapt(self, busiest: int, batch: int) -> None:
        self.empty = busiest == 0
        if busiest > 2 * batch:
            self.ms = max(1, self.ms * batch // busiest)
        elif busiest < batch // 2:
            self.ms = min(_MAX_WINDOW_MS, self.ms * 2)


async def _copy_round(
    redis: aioredis.Redis,
    plan: ReplayPlan,
    state: ReplayState,
    active: list[Lane],
    lo: StreamId,
    window: _Window,
    count: int,
) -> StreamId:
    """Copy every lane's entries of one window inside Redis, ``count`` per call; returns
    the window's end. (No entry is read here: the window is sized from the last round's
    busiest lane, so one round may hold more than a batch after the load changed.)"""
    if window.empty:
        found = await _next_id(redis, active, lo)
        if found is None or found > plan.end:
            return plan.end
        lo = found
    hi = min(plan.end, StreamId(min(lo.ms + window.ms - 1, MAX_PART), MAX_PART))
    skip = "1" if plan.filter.originals_only else "0"
    todo, seen = {lane: lo for lane in active}, dict.fromkeys(active, 0)
    while todo:
        calls: Calls = [
            ([lane.source], [str(at), str(_lane_hi(lane, hi)), count, skip])
            for lane, at in todo.items()
        ]
        replies = _ok(await _COPY.run_many(redis, calls))
        for lane, (read, appended, last) in zip(list(todo), replies, strict=True):
            state.scanned, state.matched = state.scanned + int(read), state.matched + int(appended)
            seen[lane] += int(read)
            if int(read) < count or require_id(last) >= _lane_hi(lane, hi):
                del todo[lane]
            else:
                todo[lane] = successor(require_id(last))
    window.adapt(max(seen.values()), count)
    return hi


async def _next_id(redis: aioredis.Redis, lanes: list[Lane], lo: StreamId) -> StreamId | None:
    """The oldest id at or after ``lo`` in any of these lanes."""
    pipe = redis.pipeline(transaction=False)
    for lane in lanes:
        pipe.xrange(lane.source, min=str(lo), max=str(lane.end), count=1)
    heads = [require_id(rows[0][0]) for rows in await pipe.execute() if rows]
    return min(heads) if heads else None


def _ok(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _lane_hi(lane: Lane, hi: StreamId) -> StreamId:
    assert lane.end is not None
    return min(hi, lane.end)


async def _page_round(
    redis: aioredis.Redis,
    plan: ReplayPlan,
    state: ReplayState,
    active: list[Lane],
    lo: StreamId,
    count: int,
) -> StreamId:
    pipe = redis.pipeline(transaction=False)
    for lane in active:
        pipe.xrange(lane.source, min=str(lo), max=str(lane.end), count=count)
    pages: list[source.Page] = await pipe.execute()
    hi = _window_end(plan, [(len(p), p[-1][0]) for p in pages if p], count)
    rewrite = requeued_fields if plan.from_dlq else replayed_fields
    calls: list[tuple[list[str], list[bytes | int]]] = []
    scanned, matched = 0, list[tuple[bytes, Fields]]()
    for lane, page in zip(active, pages, strict=True):
        taken = [(eid, f) for eid, f in page if require_id(eid) <= hi]
        mine = [(eid, f) for eid, f in taken if plan.filter.matches(f)]
        scanned, matched = scanned + len(taken), matched + mine
        if mine and not plan.dry_run:
            calls.append(([lane.target], _append_args([rewrite(eid, f) for eid, f in mine])))
    if calls:
        _ok(await _APPEND.run_many(redis, calls))
    if plan.dry_run:
        state.samples.extend(matched[: max(0, plan.sample_size - len(state.samples))])
    state.scanned += scanned
    state.matched += len(matched)
    return hi


def _append_args(batch: list[Fields]) -> list[bytes | int]:
    args: list[bytes | int] = []
    for fields in batch:
        args.append(len(fields))
        for name, value in fields.items():
            args += [name, value]
    return args


async def _stopped(stop: asyncio.Event, pause: float) -> bool:
    """Wait out a rate-limit pause, returning early (True) when asked to stop."""
    if pause <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), pause)
    return stop.is_set()
