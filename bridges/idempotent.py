"""The bridges' only writer to Redis: idempotent XADDs, one pipelined round trip per batch.

Redis errors are mapped here, once, to ``RetryableError``: the caller keeps the batch
un-acked and tries again later; the Lua marker makes the retry harmless.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from bridges.core import StreamWrite, marker_key
from streamer.contract.keys import Keys
from streamer.infra.errors import RetryableError
from streamer.infra.redis import REDIS_ERRORS, LuaScript

_XADD_ONCE = LuaScript.load("bridges", "lua/xadd_once.lua")


class IdempotentWriter:
    def __init__(self, client: redis.Redis, keys: Keys, marker_ttl_s: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = marker_ttl_s

    def write(self, writes: Sequence[StreamWrite]) -> list[str | None]:
        """The new entry id of each write, or None where it was a duplicate, in order.

        Raises RetryableError when Redis cannot take the batch; some writes may have
        happened, which is why every write carries a marker."""
        if not writes:
            return []
        try:
            replies = self._execute(writes)
        except REDIS_ERRORS as exc:
            raise RetryableError(f"redis: {exc}") from exc
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            raise RetryableError(f"redis: {failed}") from failed
        return [None if r is None else _text(r) for r in replies]

    def _execute(self, writes: Sequence[StreamWrite]) -> list[object]:
        calls = []
        for w in writes:
            args: list[bytes | str | int] = [self._ttl_s, 1 if w.check else 0]
            for name, value in w.fields.items():
                args += (name, value)
            calls.append(((w.stream, marker_key(self._keys, w.stream, w.marker)), args))
        return _XADD_ONCE.run_many_sync(self._client, calls)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
