"""This gateway's presence in Redis: ownership entries, heartbeat, its per-gateway keys.

Ownership is state, not a log of increments: the gateway is the only writer of its own field
in each ``owners:{uid}`` hash, so it writes the absolute socket count (HSET) or removes the
field at zero (HDEL). One task writes, one pipeline at a time, in order; a failed batch is
simply written again. That makes every write idempotent and heals the field if a worker
removed it while this gateway looked dead.

The set ``gwusers:<gid>`` lists the users this gateway has entries for, so a gateway
restarting with the same id removes its stale entries without scanning the keyspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from streamer.infra.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

# Per-gateway keys outlive a crashed gateway by this long, then vanish on their own.
GATEWAY_KEYS_TTL_S = 86400
_CLEANUP_CHUNK = 500
_RETRY_FIRST_S, _RETRY_MAX_S = 0.2, 5.0


def users_key(keys: Keys, gateway_id: str) -> str:
    """Set of users this gateway holds ownership entries for."""
    return keys.gateway_users(gateway_id)


class OwnershipBook:
    """Local socket counts per user, mirrored into the owners hashes by one writer task."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        gateway_id: str,
        on_vanished: Callable[[set[str]], None] = lambda users: None,
    ) -> None:
        self._redis = redis
        self._on_vanished = on_vanished
        # Users whose field Redis is known to hold: an HSET that creates one of these again
        # means it vanished in between.
        self._confirmed: set[str] = set()
        self._keys = keys
        self._gid = gateway_id
        self._users_key = users_key(keys, gateway_id)
        self._counts: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_s = _RETRY_FIRST_S

    def count(self, user_id: str) -> int:
        return self._counts.get(user_id, 0)

    @property
    def users(self) -> int:
        return len(self._counts)

    async def add(self, user_id: str) -> None:
        """Count one more socket; returns once Redis has it (raises RedisError if not)."""
        self._counts[user_id] = self._counts.get(user_id, 0) + 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(user_id, []).append(waiter)
        self._mark(user_id)
        await waiter

    def remove(self, user_id: str) -> None:
        """Count one socket less; written in the background."""
        left = self._counts.get(user_id, 0) - 1
        if left > 0:
            self._counts[user_id] = left
        else:
            self._counts.pop(user_id, None)
        self._mark(user_id)

    def reassert(self) -> None:
        """Write every entry again (after a gap in which workers may have removed them)."""
        for user_id in self._counts:
            self._mark(user_id)

    async def flushed(self) -> None:
        await self._idle.wait()

    def _mark(self, user_id: str) -> None:
        self._dirty.add(user_id)
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """The writer loop; cancel it to stop (after ``flushed``)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._dirty:
                await self._write_batch()
            self._idle.set()

    async def _write_batch(self) -> None:
        users, self._dirty = self._dirty, set()
        waiters = [w for u in users for w in self._waiters.pop(u, [])]
        pipe = self._redis.pipeline(transaction=False)
        ordered = list(users)
        for user_id in ordered:
            count = self._counts.get(user_id, 0)
            if count:
                pipe.hset(self._keys.owners(user_id), self._gid, str(count))
                pipe.sadd(self._users_key, user_id)
            else:
                pipe.hdel(self._keys.owners(user_id), self._gid)
                pipe.srem(self._users_key, user_id)
        try:
            replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("ownership write failed (%s); retrying in %.1fs", exc, self._retry_s)
            self._dirty |= users
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            await asyncio.sleep(self._retry_s)
            self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)
            return
        self._retry_s = _RETRY_FIRST_S
        self._note_written(ordered, replies[::2])
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _note_written(self, users: list[str], replies: list[object]) -> None:
        vanished = set()
        for user_id, created in zip(users, replies, strict=True):
            if not self._counts.get(user_id):
                self._confirmed.discard(user_id)
                continue
            if created and user_id in self._confirmed:
                vanished.add(user_id)
            self._confirmed.add(user_id)
        if vanished:
            self._on_vanished(vanished)

    async def clear(self) -> int:
        """Remove every entry this gateway id has (stale ones after a restart, or all at
        shutdown). Must not run while sockets register. Returns how many were removed."""
        removed = 0
        batch: list[bytes] = []
        async for member in self._redis.sscan_iter(self._users_key, count=_CLEANUP_CHUNK):
            batch.append(member)
            if len(batch) >= _CLEANUP_CHUNK:
                removed += await self._hdel_all(batch)
                batch = []
        removed += await self._hdel_all(batch)
        await self._redis.delete(self._users_key)
        return removed

    async def _hdel_all(self, members: list[bytes]) -> int:
        if not members:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            pipe.hdel(self._keys.owners(member.decode()), self._gid)
        return sum(int(n) for n in await pipe.execute())


@dataclass(frozen=True, slots=True)
class Presence:
    """The heartbeat and gateway_info of one gateway."""

    redis: aioredis.Redis
    keys: Keys
    gateway_id: str
    port: int
    started_ms: int

    async def beat(self, sockets: int, users: int) -> None:
        gid = self.gateway_id
        info = self.keys.gateway_info(gid)
        pipe = self.redis.pipeline(transaction=False)
        # Redis's clock, which workers also use to judge liveness: host clocks may disagree.
        seconds, micros = await self.redis.time()
        pipe.zadd(self.keys.gateways, {gid: seconds * 1000 + micros // 1000})
        pipe.hset(
            info,
            mapping={
                "sockets": sockets,
                "users": users,
                "host": socket.gethostname(),
                "port": self.port,
                "started_ms": self.started_ms,
            },
        )
        for key in (info, self.keys.inbox(gid), users_key(self.keys, gid)):
            pipe.expire(key, GATEWAY_KEYS_TTL_S)
        await pipe.execute()

    async def withdraw(self) -> None:
        """Leave at once (shutdown), so workers stop routing here before the heartbeat ages."""
        gid = self.gateway_id
        with contextlib.suppress(*REDIS_ERRORS):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.gateways, gid)
            pipe.delete(self.keys.gateway_info(gid), self.keys.inbox(gid))
            await pipe.execute()
