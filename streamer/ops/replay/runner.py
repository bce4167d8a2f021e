"""Carry out a replay: read the range page by page, filter, append page by page.

Each page's matching entries are appended by one atomic script call, and the position
advances only after it succeeded, so a stop between pages leaves a clean resume point:
everything up to ``position`` is written exactly once, nothing after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

from streamer.contract.ids import StreamId, successor
from streamer.infra.redis import LuaScript
from streamer.ops.replay import source
from streamer.ops.replay.entries import EntryFilter, Fields, replayed_fields, requeued_fields
from streamer.ops.replay.ids import require_id
from streamer.ops.replay.pacing import Estimate, batch_size, estimate_entries, pause_s


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    source: str  # the stream read: the ingress stream or the DLQ
    target: str  # always the ingress stream
    start: StreamId
    end: StreamId  # inclusive; frozen at the source's last id when the replay starts
    filter: EntryFilter
    from_dlq: bool
    dry_run: bool = False
    batch: int = 1000
    rate: float | None = None  # entries written per second at most
    sample_size: int = 5


@dataclass(slots=True)
class ReplayState:
    """Where a replay got to; updated after every page, readable after an interruption."""

    scanned: int = 0
    matched: int = 0  # entries that met the filter: written, unless a dry run
    position: StreamId | None = None  # last source id fully handled
    finished: bool = False
    samples: list[tuple[bytes, Fields]] = field(default_factory=list)

    def resume_from(self, plan: ReplayPlan) -> StreamId:
        return plan.start if self.position is None else successor(self.position)


class Reporter(Protocol):
    def update(self, scanned: int, matched: int) -> None: ...


async def freeze(redis: aioredis.Redis, plan: ReplayPlan) -> tuple[ReplayPlan, Estimate]:
    """Check the streams and pin the end of the range to the source's last entry now:
    entries appended meanwhile, the replay's own included, are never replayed."""
    shape = await source.inspect_stream(redis, plan.source)
    if plan.target != plan.source:
        await source.check_appendable(redis, plan.target)
    end = plan.end if shape.last is None else min(plan.end, shape.last)
    estimate = estimate_entries(plan.start, end, shape.first, shape.last, shape.length)
    return dataclasses.replace(plan, end=end), estimate


async def run(
    redis: aioredis.Redis,
    plan: ReplayPlan,
    state: ReplayState,
    reporter: Reporter,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Replay (or, for a dry run, count) the plan's range until done or ``stop`` is set."""
    if plan.start > plan.end:
        state.finished = True
        return
    rate = None if plan.dry_run else plan.rate
    count = batch_size(plan.batch, rate)
    rewrite = requeued_fields if plan.from_dlq else replayed_fields
    started = clock()
    entries = source.pages(redis, plan.source, plan.start, plan.end, count)
    async with contextlib.aclosing(entries):
        async for page in entries:
            matched = [(eid, f) for eid, f in page if plan.filter.matches(f)]
            if plan.dry_run:
                room = plan.sample_size - len(state.samples)
                state.samples.extend(matched[: max(0, room)])
            elif matched:
                await _append(redis, plan.target, [rewrite(eid, f) for eid, f in matched])
            state.scanned += len(page)
            state.matched += len(matched)
            state.position = require_id(page[-1][0])
            reporter.update(state.scanned, state.matched)
            if len(page) < count or state.position >= plan.end:
                break
            if await _stopped(stop, pause_s(state.matched, clock() - started, rate)):
                return
    state.finished = True


_APPEND = LuaScript.load("streamer.lua", "replay_append.lua")


async def _append(redis: aioredis.Redis, stream: str, batch: list[Fields]) -> None:
    args: list[bytes | int] = []
    for fields in batch:
        args.append(len(fields))
        for name, value in fields.items():
            args += [name, value]
    await _APPEND.run(redis, [stream], args)


async def _stopped(stop: asyncio.Event, pause: float) -> bool:
    """Wait out a rate-limit pause, returning early (True) when asked to stop."""
    if pause <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), pause)
    return stop.is_set()
