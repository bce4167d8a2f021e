"""The "already accepted" marker: a push the provider accepted (or whose token it reported
dead) is not sent again when its stream entry is redelivered (another channel failed, or
the worker died before XACK).

One key per event key and channel (``Keys.push_marker``) with a TTL. The checks and writes
of concurrent pushes are coalesced: one Lua call per partition (``push_markers.lua``), all in
one pipelined round trip, so a marker costs little per push; a write does not hold up the
push's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import redis.asyncio as aioredis

from streamer.contract.event import Channel
from streamer.contract.keys import Keys, PartitionKeys
from streamer.core.policy import ChannelResult, Outcome
from streamer.infra import metrics
from streamer.infra.redis import REDIS_ERRORS, LuaScript
from streamer.push.base import PushRequest, PushSender
from streamer.push.deadline import Watchdog
from streamer.push.registry import by_channel

log = logging.getLogger(__name__)

ALREADY_DONE = "already_done"
REDIS_ERROR = "redis_error"
PUSH_TIMEOUT = "push_timeout"

_DONE = (Outcome.DELIVERED, Outcome.DEAD_TOKEN)  # nothing more to do for this push
PARTITION_CACHE_USERS = 10_000  # cleared when full: bounded, and recent users come back


_SCRIPT = LuaScript.load("streamer.lua", "push_markers.lua")


class Marker(NamedTuple):
    partition: int  # markers of one partition share a hash tag: one script call per flush
    key: str


@dataclass(slots=True)
class _Batch:
    writes: list[str] = field(default_factory=list)
    checks: list[tuple[str, asyncio.Future[bool]]] = field(default_factory=list)


class PushMarkers:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._pending: dict[int, _Batch] = {}
        self._partitions: dict[str, PartitionKeys] = {}  # user id -> partition, recent users
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def marker(self, request: PushRequest) -> Marker:
        partition = self._partitions.get(request.user_id)
        if partition is None:  # hashing the user id costs more than the rest of this
            if len(self._partitions) >= PARTITION_CACHE_USERS:
                self._partitions.clear()
            partition = self._partitions[request.user_id] = self._keys.of_user(request.user_id)
        key = partition.push_marker(request.user_id, request.event_key, request.channel)
        return Marker(partition.index, key)

    def accepted(self, marker: Marker) -> asyncio.Future[bool]:
        """Whether the push was done before; fails with RedisError (or OSError) when Redis
        cannot say."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._batch(marker).checks.append((marker.key, future))
        return future

    def mark(self, marker: Marker) -> None:
        """Record a push as done, in the background: the push's outcome does not wait for it.
        Should the write fail (logged), a redelivered entry pushes again: at-least-once."""
        self._batch(marker).writes.append(marker.key)

    def _batch(self, marker: Marker) -> _Batch:
        batch = self._pending.get(marker.partition)
        if batch is None:
            batch = self._pending[marker.partition] = _Batch()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return batch

    async def _flush(self) -> None:
        # One round trip at a time: whatever queues up meanwhile goes in the next one.
        while self._pending:
            batches, self._pending = list(self._pending.values()), {}
            calls = [
                ([*b.writes, *(key for key, _ in b.checks)], [len(b.writes), self._ttl_s])
                for b in batches
            ]
            try:
                replies = await _SCRIPT.run_many(self._redis, calls)
            except REDIS_ERRORS as exc:
                replies = [exc] * len(batches)
            for batch, reply in zip(batches, replies, strict=True):
                _settle(batch, reply)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher
        await self._redis.aclose()


def _settle(batch: _Batch, reply: object) -> None:
    if isinstance(reply, BaseException):
        if batch.writes:
            log.warning("could not mark %d pushes as done: %s", len(batch.writes), reply)
        for _, future in batch.checks:
            if not future.done():
                future.set_exception(reply)
        return
    assert isinstance(reply, list)
    for (_, future), found in zip(batch.checks, reply, strict=True):
        if not future.done():  # its push timed out meanwhile
            future.set_result(bool(found))


class MarkedSender:
    """Wraps a PushSender: skips pushes already done, marks the ones it gets done, and bounds
    the whole push (marker check and provider requests) by ``timeout_s``: a hung marker
    Redis or provider connection ends the push as a retry, and frees its capacity, instead
    of holding it while the worker keeps the entry from being reclaimed."""

    def __init__(self, inner: PushSender, markers: PushMarkers, timeout_s: float) -> None:
        self.channel: Channel = inner.channel
        self._inner = inner
        self._markers = markers
        self._watchdog = Watchdog(timeout_s)
        entry = by_channel(inner.channel)
        provider = entry.name if entry is not None else inner.channel
        self._already_done = metrics.PUSHES.labels(provider, ALREADY_DONE)
        # A push with no outcome in time is a retry, counted as one (alerts add up retries).
        self._timed_out = metrics.PUSHES.labels(provider, "retry")

    async def send(self, request: PushRequest) -> ChannelResult:
        # One coroutine for the whole push: every frame a parked push keeps alive is work
        # for the garbage collector, and a worker may hold a thousand of them.
        watch = self._watchdog.watch()
        try:
            marker = self._markers.marker(request)
            try:
                accepted = await self._markers.accepted(marker)
            except REDIS_ERRORS as exc:
                # Without the marker a send might repeat one already accepted: wait for Redis.
                return ChannelResult(self.channel, Outcome.RETRY, REDIS_ERROR, str(exc))
            if accepted:
                self._already_done.inc()
                return ChannelResult(self.channel, Outcome.DELIVERED, ALREADY_DONE)
            result = await self._inner.send(request)
            if result.outcome in _DONE:
                self._markers.mark(marker)
            return result
        except asyncio.CancelledError:
            if not self._watchdog.expired(watch):
                raise
            self._timed_out.inc()
            detail = f"no outcome within {self._watchdog.timeout_s}s"
            return ChannelResult(self.channel, Outcome.RETRY, PUSH_TIMEOUT, detail)
        finally:
            self._watchdog.forget(watch)

    async def close(self) -> None:
        await self._inner.close()
        await self._markers.close()
