"""Reading a stream for reprocessing: its shape, and its entries page by page (Redis I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import redis.asyncio as aioredis

from streamer.contract.ids import StreamId, successor
from streamer.ops.replay.entries import Fields
from streamer.ops.replay.ids import BadInput, require_id

Page = list[tuple[bytes, Fields]]


@dataclass(frozen=True, slots=True)
class StreamShape:
    length: int
    first: StreamId | None
    last: StreamId | None


async def key_type(redis: aioredis.Redis, key: str) -> str:
    kind = await redis.type(key)
    return kind.decode() if isinstance(kind, bytes) else str(kind)


async def inspect_stream(redis: aioredis.Redis, key: str) -> StreamShape:
    """Length, first and last id of an existing stream; a missing one is bad input."""
    kind = await key_type(redis, key)
    if kind == "none":
        raise BadInput(f"stream {key} does not exist")
    if kind != "stream":
        raise BadInput(f"{key} is a {kind}, not a stream")
    pipe = redis.pipeline(transaction=True)  # one consistent snapshot
    pipe.xlen(key)
    pipe.xrange(key, count=1)
    pipe.xrevrange(key, count=1)
    length, head, tail = await pipe.execute()
    first = require_id(head[0][0]) if head else None
    last = require_id(tail[0][0]) if tail else None
    return StreamShape(int(length), first, last)


async def check_appendable(redis: aioredis.Redis, key: str) -> None:
    """XADD to a key holding another type fails; refuse before anything is written."""
    kind = await key_type(redis, key)
    if kind not in ("none", "stream"):
        raise BadInput(f"{key} is a {kind}, not a stream")


async def pages(
    redis: aioredis.Redis, key: str, start: StreamId, end: StreamId, count: int
) -> AsyncGenerator[Page, None]:
    """The entries from ``start`` to ``end`` (inclusive), ``count`` at a time. The next page
    is fetched while the caller handles the current one (close the iterator with
    contextlib.aclosing so an early exit cancels that read)."""
    fetch: asyncio.Task[Page] | None = asyncio.ensure_future(_read(redis, key, start, end, count))
    try:
        while fetch is not None:
            page = await fetch
            fetch = None
            if not page:
                return
            last = require_id(page[-1][0])
            if len(page) == count and last < end:
                nxt = successor(last)
                fetch = asyncio.ensure_future(_read(redis, key, nxt, end, count))
            yield page
    finally:
        if fetch is not None:
            fetch.cancel()


async def _read(
    redis: aioredis.Redis, key: str, start: StreamId, end: StreamId, count: int
) -> Page:
    page: Page = await redis.xrange(key, min=str(start), max=str(end), count=count)
    return page
