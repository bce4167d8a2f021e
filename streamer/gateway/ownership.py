"""This gateway's presence in Redis: ownership entries, heartbeat, lease, per-gateway keys.

Ownership is state, not a log of increments: the gateway is the only writer of its own field
in each owners hash (a user's ``owners:<uid>``, a topic's ``tsubs:<topic>``), so it writes
the absolute socket count (HSET) or removes the field at zero (HDEL). One task writes, one
pipeline at a time, in order; a failed batch is simply written again. Only changes are
written, plus a slice of the unchanged entries at each heartbeat (all of them within
GATEWAY_OWNERSHIP_VERIFY_S): an entry that vanished (a worker judged this gateway dead,
Redis lost data) comes back, and its sockets are told to resume.

The sets ``gwusers:{gid}`` and ``gwtopics:{gid}`` list what this gateway holds entries for,
so a gateway restarting with the same id removes its stale entries without a key scan.

The gateway id is leased (``gwlease:{gid}``, renewed with every heartbeat): a second
gateway started with the same GATEWAY_ID waits for the first one's lease to lapse (a
crashed predecessor) and refuses to start if it never does (a live one): two gateways
sharing an id would read and trim one inbox and remove each other's ownership entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from streamer.infra import registry
from streamer.infra.errors import StartupError
from streamer.infra.redis import REDIS_ERRORS, LuaScript

log = logging.getLogger(__name__)

# Per-gateway keys outlive a crashed gateway by this long, then vanish on their own.
GATEWAY_KEYS_TTL_S = 86400
_CLEANUP_CHUNK = 500
_RETRY_FIRST_S, _RETRY_MAX_S = 0.2, 5.0

_LEASE = LuaScript.load("streamer.lua", "lease.lua")


def users_key(keys: Keys, gateway_id: str) -> str:
    """Set of users this gateway holds ownership entries for."""
    return keys.gateway_users(gateway_id)


class OwnershipBook:
    """Local socket counts per name (users, or topics), mirrored into their owners hashes by
    one writer task."""

    def __init__(
        self,
        redis: aioredis.Redis,
        owners_key: Callable[[str], str],
        names_key: str,
        gateway_id: str,
        on_vanished: Callable[[set[str]], None] = lambda names: None,
    ) -> None:
        self._redis = redis
        self._owners_key = owners_key
        self._names_key = names_key
        self._gid = gateway_id
        self._on_vanished = on_vanished
        # Names whose field Redis is known to hold: an HSET that creates one of these again
        # means it vanished in between.
        self._confirmed: set[str] = set()
        self._counts: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_s = _RETRY_FIRST_S
        self._round: list[str] = []  # the names being verified in turn (see verify)
        self._turn = 0

    def count(self, name: str) -> int:
        return self._counts.get(name, 0)

    def __len__(self) -> int:
        return len(self._counts)

    async def add(self, name: str) -> None:
        """Count one more socket; returns once Redis has it (raises a Redis error if not)."""
        self._counts[name] = self._counts.get(name, 0) + 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(waiter)
        self._mark(name)
        await waiter

    def remove(self, name: str) -> None:
        """Count one socket less; written in the background."""
        left = self._counts.get(name, 0) - 1
        if left > 0:
            self._counts[name] = left
        else:
            self._counts.pop(name, None)
        self._mark(name)

    def reassert(self) -> None:
        """Write every entry again (after a gap in which workers may have removed them)."""
        for name in self._counts:
            self._mark(name)

    def verify(self, fraction: float) -> None:
        """Write a ``fraction`` of the entries again, in turn, so that an entry that vanished
        is noticed and restored within 1 / fraction calls."""
        for _ in range(math.ceil(len(self._counts) * fraction)):
            if self._turn >= len(self._round):
                self._round, self._turn = list(self._counts), 0
            name = self._round[self._turn]
            self._turn += 1
            if name in self._counts:
                self._mark(name)

    async def flushed(self) -> None:
        await self._idle.wait()

    def _mark(self, name: str) -> None:
        self._dirty.add(name)
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
        names, self._dirty = self._dirty, set()
        waiters = [w for n in names for w in self._waiters.pop(n, [])]
        pipe = self._redis.pipeline(transaction=False)
        ordered = list(names)
        for name in ordered:
            count = self._counts.get(name, 0)
            if count:
                pipe.hset(self._owners_key(name), self._gid, str(count))
                pipe.sadd(self._names_key, name)
            else:
                pipe.hdel(self._owners_key(name), self._gid)
                pipe.srem(self._names_key, name)
        try:
            replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("ownership write failed (%s); retrying in %.1fs", exc, self._retry_s)
            self._dirty |= names
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

    def _note_written(self, names: list[str], replies: list[object]) -> None:
        vanished = set()
        for name, created in zip(names, replies, strict=True):
            if not self._counts.get(name):
                self._confirmed.discard(name)
                continue
            if created and name in self._confirmed:
                vanished.add(name)
            self._confirmed.add(name)
        if vanished:
            self._on_vanished(vanished)

    async def clear(self) -> int:
        """Remove every entry this gateway id has (stale ones after a restart, or all at
        shutdown). Must not run while sockets register. Returns how many were removed."""
        removed = 0
        batch: list[bytes] = []
        async for member in self._redis.sscan_iter(self._names_key, count=_CLEANUP_CHUNK):
            batch.append(member)
            if len(batch) >= _CLEANUP_CHUNK:
                removed += await self._hdel_all(batch)
                batch = []
        removed += await self._hdel_all(batch)
        await self._redis.delete(self._names_key)
        return removed

    async def _hdel_all(self, members: list[bytes]) -> int:
        if not members:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            pipe.hdel(self._owners_key(member.decode()), self._gid)
        return sum(int(n) for n in await pipe.execute())


class LeaseLost(Exception):
    """Another gateway took this gateway's id over: it must stop serving."""


@dataclass(slots=True)
class Presence:
    """The heartbeat, the id lease and gateway_info of one gateway."""

    redis: aioredis.Redis
    keys: Keys
    gateway_id: str
    port: int
    started_ms: int
    dead_after_ms: int
    token: str = ""

    def __post_init__(self) -> None:
        self.token = f"{self.gateway_id}:{secrets.token_hex(4)}"

    async def claim(self, wait_s: float, stopping: asyncio.Event) -> None:
        """Take the lease on this gateway id, waiting up to ``wait_s`` for the lease of a
        predecessor that died to lapse. StartupError when it stays held: a live gateway
        already uses this id."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        warned = False
        while not stopping.is_set():
            if await self._lease("acquire"):
                return
            if loop.time() > deadline:
                raise StartupError(
                    f"GATEWAY_ID: {self.gateway_id!r} is in use by another live gateway; "
                    "give each gateway its own id"
                )
            if not warned:
                log.warning(
                    "gateway id %s is held by another process; waiting up to %.0f s for it "
                    "to lapse (a predecessor that stopped without leaving)",
                    self.gateway_id,
                    wait_s,
                )
                warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), min(1.0, self.dead_after_ms / 4000))

    async def beat(self, sockets: int, users: int, topics: int) -> bool:
        """Renew the lease and heartbeat (Redis's clock). False when the lease had lapsed
        and was taken again (this gateway looked dead meanwhile). LeaseLost when another
        gateway holds it."""
        renewed = await self._lease("renew")
        if not renewed and not await self._lease("acquire"):
            raise LeaseLost(self.gateway_id)
        gid = self.gateway_id
        await registry.beat(self.redis, self.keys.gateways, gid, self.dead_after_ms)
        info = self.keys.gateway_info(gid)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(
            info,
            mapping={
                "sockets": sockets,
                "users": users,
                "topics": topics,
                "host": socket.gethostname(),
                "port": self.port,
                "started_ms": self.started_ms,
                "instance": self.token,
            },
        )
        for key in (
            info,
            self.keys.inbox(gid),
            self.keys.gateway_users(gid),
            self.keys.gateway_topics(gid),
        ):
            pipe.expire(key, GATEWAY_KEYS_TTL_S)
        await pipe.execute()
        return renewed

    async def withdraw(self) -> None:
        """Leave at once (shutdown), so workers stop routing here before the heartbeat ages."""
        gid = self.gateway_id
        with contextlib.suppress(*REDIS_ERRORS):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.gateways, gid)
            pipe.delete(self.keys.gateway_info(gid), self.keys.inbox(gid))
            await pipe.execute()
            await self._lease("release")

    async def _lease(self, op: str) -> bool:
        key = self.keys.gateway_lease(self.gateway_id)
        return int(await _LEASE.run(self.redis, [key], [op, self.token, self.dead_after_ms])) > 0
