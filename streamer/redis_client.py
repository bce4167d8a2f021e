"""Redis connections. No module-level clients: processes create them and pass them down."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(
    url: str, *, client_name: str | None = None, socket_timeout_s: float | None = None
) -> aioredis.Redis:
    """An asyncio client returning bytes (decoding happens at the edge, in streamer.decode).

    ``socket_timeout_s`` bounds every reply, so a half-open connection cannot block a loop
    forever; it must exceed the longest BLOCK the caller uses.
    """
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_keepalive=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=5,
        health_check_interval=30,
        client_name=client_name,
    )


def entry_ms(entry_id: str) -> int:
    """The millisecond timestamp part of a stream entry id."""
    return int(entry_id.split("-", 1)[0])
