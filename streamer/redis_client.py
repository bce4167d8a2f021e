"""Redis connections. No module-level clients: processes create them and pass them down."""

from __future__ import annotations

from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.typing import EncodableT


class HiredisPackConnection(aioredis.Connection):
    """A TCP connection that packs commands with hiredis's C packer.

    redis-py's synchronous client uses it, the asyncio one packs in Python, which was the
    largest single cost of the worker's pipelines (~40% of its CPU per event).
    """

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        command = args[0].encode() if isinstance(args[0], str) else args[0]
        if isinstance(command, bytes) and b" " in command:  # e.g. "XINFO GROUPS"
            args = (*command.split(), *args[1:])
        # hiredis rejects None and bools with TypeError, as redis-py's encoder does.
        return [hiredis.pack_command(cast(tuple[str | int | float | bytes], args))]


def connect(
    url: str, *, client_name: str | None = None, socket_timeout_s: float | None = None
) -> aioredis.Redis:
    """An asyncio client returning bytes (decoding happens at the edge, in streamer.decode).

    ``socket_timeout_s`` bounds every reply, so a half-open connection cannot block a loop
    forever; it must exceed the longest BLOCK the caller uses.
    """
    extra: dict[str, Any] = {}
    if url.startswith("redis://"):
        extra["connection_class"] = HiredisPackConnection
    return aioredis.Redis.from_url(
        url,
        **extra,
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
