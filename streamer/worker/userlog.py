"""Adapter for the per-user replay log and the gateway inboxes (Redis I/O only)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from streamer.contract.decode import Event
from streamer.contract.event import encode_content
from streamer.contract.ids import entry_ms
from streamer.contract.keys import Keys
from streamer.infra.redis import LuaScript
from streamer.worker.settings import DeliverySettings

# Inboxes and long-dead gateways are forgotten after a day without activity.
INBOX_TTL_S = 86400
GATEWAY_FORGET_MS = 86400 * 1000

_APPEND = LuaScript.load("streamer.lua", "append_user_log.lua")


@dataclass(frozen=True, slots=True)
class Appended:
    """Result of appending one event to its user's log."""

    log_id: str
    duplicate: bool
    owners: tuple[str, ...]
    prev_id: str = ""  # the log entry before this one when it was appended ("" if unknown)
    content: bytes = b""  # the event's data as stored (encoded once, reused for every inbox)


@dataclass(frozen=True, slots=True)
class InboxDelivery:
    gateway_id: str
    user_id: str
    log_id: str
    event_type: str
    content: bytes
    ingress_ms: int
    prev_id: str = ""

    @classmethod
    def of(cls, gateway_id: str, event: Event, appended: Appended) -> InboxDelivery:
        """The delivery of an appended event to one owning gateway."""
        return cls(
            gateway_id=gateway_id,
            user_id=event.payload.user_id,
            log_id=appended.log_id,
            event_type=event.payload.event_type,
            content=appended.content,
            ingress_ms=entry_ms(event.entry_id),
            prev_id=appended.prev_id,
        )


class UserLogWriter:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: DeliverySettings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings

    async def append(self, events: list[Event]) -> list[Appended | Exception]:
        """Append events in order, one pipelined round trip. A failed command yields its
        exception in place of a result, so one bad entry does not fail the batch."""
        if not events:
            return []
        contents = [encode_content(event.payload) for event in events]
        s = self._settings
        calls = []
        for event, content in zip(events, contents, strict=True):
            uid = event.payload.user_id
            keys = (
                self._keys.user_log(uid),
                self._keys.dedupe(uid, event.event_key),
                self._keys.owners(uid),
            )
            args = (
                s.user_history_size,
                s.user_history_ttl_s,
                s.dedupe_ttl_s,
                event.payload.event_type,
                content,
                event.event_key,
                event.entry_id,
            )
            calls.append((keys, args))
        replies = await _APPEND.run_many(self._redis, calls)
        return [_appended(r, content) for r, content in zip(replies, contents, strict=True)]

    async def deliver_to_inboxes(self, deliveries: list[InboxDelivery]) -> list[Exception | None]:
        if not deliveries:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for d in deliveries:
            pipe.xadd(
                self._keys.inbox(d.gateway_id),
                {
                    "uid": d.user_id,
                    "id": d.log_id,
                    "type": d.event_type,
                    "content": d.content,
                    "ts": str(d.ingress_ms),
                    "prev": d.prev_id,
                },
                maxlen=self._settings.inbox_max_len,
                approximate=True,
            )
        for gid in {d.gateway_id for d in deliveries}:
            # A gateway that withdrew a moment ago must not leave an immortal inbox behind.
            pipe.expire(self._keys.inbox(gid), INBOX_TTL_S)
        replies = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, Exception) else None for r in replies[: len(deliveries)]]

    async def remove_owners(self, stale: list[tuple[str, str]]) -> None:
        """Drop (user id, gateway id) ownership entries of gateways that are dead."""
        pipe = self._redis.pipeline(transaction=False)
        for uid, gid in stale:
            pipe.hdel(self._keys.owners(uid), gid)
        await pipe.execute()


def _appended(reply: object, content: bytes) -> Appended | Exception:
    if isinstance(reply, Exception):
        return reply
    assert isinstance(reply, list)
    log_id, duplicate, prev, *owners = reply
    owner_ids = tuple(o.decode() for o in owners)
    return Appended(log_id.decode(), bool(int(duplicate)), owner_ids, prev.decode(), content)


class LiveGateways:
    """Which gateways have heartbeated recently, cached briefly.

    An owner missing from the cache triggers a fresh read before it is called dead, so a
    gateway that registered a moment ago is never mistaken for a dead one.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, dead_after_ms: int) -> None:
        self._redis = redis
        self._keys = keys
        self._dead_after_ms = dead_after_ms
        self._live: frozenset[str] = frozenset()
        self._read_at = 0.0

    async def refresh(self) -> frozenset[str]:
        # Redis's clock, the one gateways stamp their heartbeats with: host clocks may disagree.
        seconds, micros = await self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        pipe = self._redis.pipeline(transaction=False)
        pipe.zremrangebyscore(self._keys.gateways, 0, now_ms - GATEWAY_FORGET_MS)
        pipe.zrangebyscore(self._keys.gateways, now_ms - self._dead_after_ms, "+inf")
        _, members = await pipe.execute()
        self._live = frozenset(m.decode() for m in members)
        self._read_at = time.monotonic()
        return self._live

    async def live(self, owners: set[str]) -> frozenset[str]:
        """Live gateways; read afresh whenever an owner is not known to be live, so that an
        ownership entry is never removed on the strength of a stale cache."""
        if time.monotonic() - self._read_at > 1.0 or not owners <= self._live:
            await self.refresh()
        return self._live
