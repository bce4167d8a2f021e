"""The gateway's durable inbox: read (blocking, batched), hand over, trim.

Workers XADD one entry per batch holding every delivery of that batch for this gateway
(``streamer.contract.inbox``), frames already encoded. The reader starts at the current end:
entries written before this process started were for sockets of an earlier incarnation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from streamer.contract.ids import StreamId, format_id, parse_id, successor
from streamer.contract.inbox import BATCH_FIELD, BROADCAST, decode_batch
from streamer.infra import metrics
from streamer.infra.redis import REDIS_ERRORS

log = logging.getLogger(__name__)


class InboxEntry(msgspec.Struct, frozen=True):
    """One delivery for the sockets of a user, of a topic's subscribers, or of everyone."""

    kind: str  # streamer.contract.inbox.USER, TOPIC or BROADCAST
    target: str
    sid: StreamId | None  # the id in the target's log (None for a broadcast)
    frame: bytes
    ingress_ms: int
    prev: StreamId | None = None  # the log entry before this one ('' from the worker: None)


def parse_inbox_entry(fields: dict[bytes, bytes]) -> list[InboxEntry] | None:
    """The deliveries of one inbox entry, decoded at the edge; None if it is malformed."""
    raw = fields.get(BATCH_FIELD)
    batch = None if raw is None else decode_batch(raw)
    if batch is None:
        return None
    entries = []
    for d in batch:
        sid = parse_id(d.id) if d.id else None
        if d.kind != BROADCAST and sid is None:
            return None
        entries.append(InboxEntry(d.kind, d.target, sid, d.frame, d.ts, parse_id(d.prev)))
    return entries


# Hands entries to sockets without waiting: the fan-out never waits for a socket or a read.
Deliver = Callable[[list[InboxEntry]], None]


class InboxReader:
    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        deliver: Deliver,
        read_count: int,
        block_ms: int,
    ) -> None:
        self._redis = redis
        self._key = key
        self._deliver = deliver
        self._read_count = read_count
        self._block_ms = block_ms
        self._cursor = "0-0"
        self._handed_over = False  # entries up to the cursor are not trimmed yet
        self._stopping = asyncio.Event()

    async def start_at_end(self) -> None:
        """Skip and drop whatever is in the inbox now (call before accepting sockets)."""
        newest = await self._redis.xrevrange(self._key, count=1)
        if newest:
            self._cursor = newest[0][0].decode()
            await self._trim()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                await self.step()
                backoff = 0.1
            except REDIS_ERRORS as exc:
                log.warning("inbox read failed (%s); retrying in %.1fs", exc, backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def step(self) -> int:
        """Trim what the previous step handed over, read one batch and hand it over, in one
        round trip. Returns the number of entries read."""
        pipe = self._redis.pipeline(transaction=False)
        if self._handed_over:
            self._queue_trim(pipe)
        pipe.xread({self._key: self._cursor}, count=self._read_count, block=self._block_ms)
        reply = (await pipe.execute())[-1]
        self._handed_over = False
        if not reply:
            return 0
        raw = reply[0][1]
        entries: list[InboxEntry] = []
        for entry_id, fields in raw:
            parsed = parse_inbox_entry(fields)
            if parsed is None:
                log.warning("skipping malformed inbox entry %s", entry_id.decode())
            else:
                entries += parsed
        metrics.INBOX_ENTRIES.inc(len(entries))
        self._deliver(entries)
        self._cursor = raw[-1][0].decode()
        self._handed_over = True  # trimmed in front of the next read
        return len(raw)

    async def _trim(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        self._queue_trim(pipe)
        await pipe.execute()

    def _queue_trim(self, pipe: Any) -> None:
        # Everything up to the cursor has been handed to sockets; nobody reads it again.
        cursor = parse_id(self._cursor)
        if cursor is not None:
            pipe.xtrim(self._key, minid=format_id(successor(cursor)))
