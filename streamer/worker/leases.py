"""Unit leases (Redis I/O).

Workers heartbeat into the ``workers`` registry (``streamer.infra.registry``, Redis's
clock) and deal the units among the live ones (``assignment``). A unit's lease is a key
holding ``<worker id>:<epoch>`` with a TTL; the epoch is new for every process, so a worker
restarted with the same id is a different holder. The scripts that change a unit's state
(``deliver.lua``, ``settle.lua``) check the lease first: a worker that lost its lease, even
one that was frozen and woke up, cannot write for the unit any more.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

from streamer.infra.redis import LuaScript

_LEASE = LuaScript.load("streamer.lua", "lease.lua")

# What ``acquire`` found: the unit was not held (new, or its holder's lease ran out), or its
# holder had handed it over (released it on purpose).
NOT_TAKEN, TAKEN_FREE, HANDED_OVER = 0, 1, 2


def holder(value: bytes | str | None) -> str | None:
    """The worker id in a lease key's value (``<worker id>:<epoch>``); None when the lease
    is missing or was handed over (the empty string)."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return text.rpartition(":")[0] or text


class Leases:
    """The leases this worker holds, by lease key."""

    def __init__(self, redis: aioredis.Redis, worker_id: str, ttl_ms: int) -> None:
        self._redis = redis
        self.token = f"{worker_id}:{secrets.token_hex(4)}"
        self._ttl_ms = ttl_ms

    async def acquire(self, keys: Sequence[str]) -> list[int]:
        """NOT_TAKEN, TAKEN_FREE or HANDED_OVER per key."""
        return await self._run("acquire", keys)

    async def renew(self, keys: Sequence[str]) -> list[bool]:
        return [bool(kept) for kept in await self._run("renew", keys)]

    async def release(self, keys: Iterable[str]) -> None:
        await self._run("release", list(keys))

    async def _run(self, op: str, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        calls: list[tuple[list[str], list[str | int]]] = [
            ([key], [op, self.token, self._ttl_ms]) for key in keys
        ]
        replies = await _LEASE.run_many(self._redis, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [int(reply) for reply in replies]
