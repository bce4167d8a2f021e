"""The "already accepted" marker: a push the provider accepted (or whose token it reported
dead) is not sent again when its stream entry is redelivered (another channel failed, or
the worker died before XACK).

One key per event key and channel (``Keys.push_marker``) with a TTL. Concurrent checks and
writes are coalesced into one pipelined round trip, so markers cost little per push.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import redis.asyncio as aioredis

from streamer.contract.event import Channel
from streamer.contract.keys import Keys
from streamer.core.policy import ChannelResult, Outcome
from streamer.infra import metrics
from streamer.infra.redis import REDIS_ERRORS
from streamer.push.base import PushRequest, PushSender

log = logging.getLogger(__name__)

ALREADY_DONE = "already_done"
REDIS_ERROR = "redis_error"
_PROVIDERS: dict[str, str] = {"push_ios": "apns", "push_android": "fcm"}

_DONE = (Outcome.DELIVERED, Outcome.DEAD_TOKEN)  # nothing more to do for this push

_Op = Literal["exists", "set"]


class PushMarkers:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._queue: list[tuple[_Op, str, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def key(self, request: PushRequest) -> str:
        return self._keys.push_marker(request.user_id, request.event_key, request.channel)

    async def accepted(self, key: str) -> bool:
        """Raises RedisError (or OSError) when Redis cannot say."""
        return bool(await self._submit("exists", key))

    async def record(self, key: str) -> None:
        await self._submit("set", key)

    def _submit(self, op: _Op, key: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((op, key, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        # One round trip at a time: whatever queues up meanwhile goes in the next one.
        while self._queue:
            batch, self._queue = self._queue, []
            pipe = self._redis.pipeline(transaction=False)
            for op, key, _ in batch:
                if op == "exists":
                    pipe.exists(key)
                else:
                    pipe.set(key, b"1", ex=self._ttl_s)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except REDIS_ERRORS as exc:
                replies = [exc] * len(batch)
            for (_, _, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(int(reply) if isinstance(reply, int) else 1)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher
        await self._redis.aclose()


class MarkedSender:
    """Wraps a PushSender: skips pushes already done, marks the ones it gets done."""

    def __init__(self, inner: PushSender, markers: PushMarkers) -> None:
        self.channel: Channel = inner.channel
        self._inner = inner
        self._markers = markers
        self._provider = _PROVIDERS.get(inner.channel, inner.channel)

    async def send(self, request: PushRequest) -> ChannelResult:
        key = self._markers.key(request)
        try:
            accepted = await self._markers.accepted(key)
        except REDIS_ERRORS as exc:
            # Without the marker a send might repeat one already accepted: wait for Redis.
            return ChannelResult(self.channel, Outcome.RETRY, REDIS_ERROR, str(exc))
        if accepted:
            metrics.PUSHES.labels(self._provider, ALREADY_DONE).inc()
            return ChannelResult(self.channel, Outcome.DELIVERED, ALREADY_DONE)
        result = await self._inner.send(request)
        if result.outcome in _DONE:
            try:
                await self._markers.record(key)
            except REDIS_ERRORS as exc:
                log.warning("could not mark push %s as done: %s", key, exc)
        return result

    async def close(self) -> None:
        await self._inner.close()
        await self._markers.close()
