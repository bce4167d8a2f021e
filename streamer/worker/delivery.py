"""Adapter for the replay logs and the gateway inboxes (Redis I/O only).

``append`` runs ``deliver.lua`` once per partition per batch: every event of the batch for
that partition's users and topics, in order, in one atomic call that also returns each
target's owning gateways. ``queue_inboxes`` then queues one entry per gateway with all of
the batch's frames for it (``streamer.contract.inbox``), in front of the batch's settlement.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis

from streamer.contract.inbox import BATCH_FIELD, Delivery, encode_batch
from streamer.contract.keys import Keys
from streamer.infra import registry
from streamer.infra.redis import LuaScript
from streamer.worker.assignment import Unit
from streamer.worker.settings import DeliverySettings

# Inboxes are forgotten after a day without activity (a gateway that never came back).
INBOX_TTL_S = 86400

_DELIVER = LuaScript.load("streamer.lua", "deliver.lua")
_ROUTE = LuaScript.load("streamer.lua", "route.lua")


class Target(msgspec.Struct, frozen=True):
    """A replay log: a user's or a topic's."""

    kind: str  # streamer.contract.inbox.USER or TOPIC
    name: str


class Append(msgspec.Struct, frozen=True):
    """One event for one target."""

    target: Target
    source_id: str  # the partition entry it came from (idempotency, see deliver.lua)
    event_type: str
    content: bytes
    event_key: str
    dedupe: bool  # the event carries a producer id: check it too


class Appended(msgspec.Struct, frozen=True):
    log_id: str  # '' when a duplicate's entry is no longer in the log
    prev_id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class RouteCall:
    """Entries of one source stream to forward to one partition stream (route.lua)."""

    target: str
    marks: str
    source: str
    rows: Sequence[tuple[str, Mapping[bytes | str, bytes | str]]]  # (source entry id, fields)


@dataclass(slots=True)
class PartitionAppend:
    """The appends of one batch for one partition, and their results once written."""

    unit: Unit
    appends: list[Append] = field(default_factory=list)
    owners: dict[Target, tuple[str, ...]] = field(default_factory=dict)
    results: list[Appended] = field(default_factory=list)
    error: Exception | None = None


class LogWriter:
    def __init__(
        self, redis: aioredis.Redis, keys: Keys, settings: DeliverySettings, lease_token: str
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._token = lease_token

    async def append(self, batches: Sequence[PartitionAppend]) -> None:
        """Write every partition's appends, one script call each, in one round trip. Fills
        in each batch's results, or its error (a lost lease, a Redis failure)."""
        calls = [self._call(batch) for batch in batches]
        replies = await _DELIVER.run_many(self._redis, calls)
        for batch, reply in zip(batches, replies, strict=True):
            if isinstance(reply, Exception):
                batch.error = reply
            else:
                _fill(batch, reply)

    async def route(self, calls: Sequence[RouteCall]) -> int:
        """Forward entries to other partitions, each at most once (route.lua), in one round
        trip. Raises the first failure; returns how many entries were appended now."""
        replies = await _ROUTE.run_many(self._redis, [route_args(call) for call in calls])
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        return sum(int(r) for r in replies)

    def _call(self, batch: PartitionAppend) -> tuple[list[str], list[str | int | bytes]]:
        part = self._keys.partitions[batch.unit.index]
        s = self._settings
        targets = list(dict.fromkeys(a.target for a in batch.appends))
        position = {target: n for n, target in enumerate(targets, start=1)}
        keys = [part.lease]
        args: list[str | int | bytes] = [self._token, s.dedupe_ttl_s, len(targets)]
        for target in targets:
            if target.kind == "t":
                keys += [part.topic_log(target.name), part.topic_owners(target.name)]
                args += [s.topic_history_size, s.topic_history_ttl_s]
            else:
                keys += [part.user_log(target.name), part.owners(target.name)]
                args += [s.user_history_size, s.user_history_ttl_s]
        for a in batch.appends:
            dedupe = part.dedupe(a.target.name, a.event_key) if a.dedupe else ""
            args += [position[a.target], a.source_id, a.event_type, a.content, a.event_key, dedupe]
        return keys, args

    def queue_inboxes(self, pipe: Any, deliveries: Mapping[str, list[Delivery]]) -> list[str]:
        """Queue one entry per gateway, with every delivery of the batch for it, in order;
        two commands per gateway (XADD, EXPIRE), in the order of the returned ids."""
        for gid, items in deliveries.items():
            inbox = self._keys.inbox(gid)
            pipe.xadd(
                inbox,
                {BATCH_FIELD: encode_batch(items)},
                maxlen=self._settings.inbox_max_len,
                approximate=True,
            )
            # A gateway that withdrew a moment ago must not leave an immortal inbox behind.
            pipe.expire(inbox, INBOX_TTL_S)
        return list(deliveries)

    async def remove_owners(self, stale: Sequence[tuple[Target, str]]) -> None:
        """Drop (target, gateway id) ownership entries of gateways that are dead."""
        pipe = self._redis.pipeline(transaction=False)
        for target, gid in stale:
            key = (
                self._keys.topic_owners(target.name)
                if target.kind == "t"
                else self._keys.owners(target.name)
            )
            pipe.hdel(key, gid)
        await pipe.execute()


def route_args(call: RouteCall) -> tuple[list[str], list[str | int | bytes]]:
    args: list[str | int | bytes] = [call.source]
    for source_id, fields in call.rows:
        args += [source_id, len(fields)]
        for name, value in fields.items():
            args += [name, value]
    return [call.target, call.marks], args


def _fill(batch: PartitionAppend, reply: list[object]) -> None:
    owners_per_target, flat = reply
    assert isinstance(owners_per_target, list) and isinstance(flat, list)
    targets = list(dict.fromkeys(a.target for a in batch.appends))
    batch.owners = {
        target: tuple(g.decode() for g in gids)
        for target, gids in zip(targets, owners_per_target, strict=True)
    }
    batch.results = [
        Appended(flat[i].decode(), flat[i + 1].decode(), bool(int(flat[i + 2])))
        for i in range(0, len(flat), 3)
    ]


class LiveGateways:
    """Which gateways have heartbeated recently (judged on the registry's clock), cached
    briefly. An owner missing from the cache triggers a fresh read before it is called dead,
    so a gateway that registered a moment ago is never mistaken for a dead one."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, dead_after_ms: int) -> None:
        self._redis = redis
        self._keys = keys
        self._dead_after_ms = dead_after_ms
        self._live: frozenset[str] = frozenset()
        self._read_at = 0.0

    async def refresh(self) -> frozenset[str]:
        _, members = await registry.live(self._redis, self._keys.gateways, self._dead_after_ms)
        self._live = frozenset(members)
        self._read_at = time.monotonic()
        return self._live

    async def live(self, owners: set[str]) -> frozenset[str]:
        """Live gateways; read afresh whenever an owner is not known to be live, so that an
        ownership entry is never removed on the strength of a stale cache."""
        if time.monotonic() - self._read_at > 1.0 or not owners <= self._live:
            await self.refresh()
        return self._live

    async def all(self) -> frozenset[str]:
        if time.monotonic() - self._read_at > 1.0:
            await self.refresh()
        return self._live
