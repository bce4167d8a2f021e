"""Publish events from Python: ``Producer`` (asyncio) and ``SyncProducer``.

Each event is checked with the worker's own decoder (the same msgspec schema and payload size
limit) before anything is written; an event that breaks it raises ``InvalidEvent`` naming
the field, and for ``publish_many`` nothing of the batch is written. A valid event is
appended to its partition stream (``Keys.ingress_for``: its user's, its first user's, its
topic's, or the first partition for a broadcast), which its owning worker reads, so no
routing hop is spent on it. Many events go in one pipelined round trip; the stream ids come
back in the order of the events. No MAXLEN: like every other ingress writer (``streamer
publish``, the bridges) the producer never trims, because a trim could drop entries no
worker has read yet.

With ``dedupe_ttl_s`` set, an event carrying an ``id`` is appended at most once per that
window: a second publish with the same ``id`` writes nothing and returns the first stream
id (a Lua script keyed in the partition's hash tag, so one slot on Redis Cluster). The HTTP
API (``streamer api``) publishes through an asyncio producer with it on.

Failures of Redis raise ``RetryableError`` (``streamer.infra.errors``); after one, some
events of a batch may have been written: publish them again with ids and dedupe for
exactly-once appends.

    producer = SyncProducer.connect("redis://127.0.0.1:6379/0")
    stream_id = producer.publish({"user_id": "u42", "event_type": "hello", "data": {"n": 1}})
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

import msgspec
import redis
import redis.asyncio as aioredis

from streamer.contract.decode import decode_payload
from streamer.contract.event import NotificationPayload
from streamer.contract.keys import Keys
from streamer.infra.errors import InvalidEvent, RetryableError
from streamer.infra.redis import REDIS_ERRORS, LuaScript, connect, connect_sync
from streamer.infra.settings import Env, RedisSettings

# What publish accepts: a payload Struct, a mapping in the wire schema, or its JSON text.
Event = NotificationPayload | Mapping[str, Any] | bytes | str

DEFAULT_MAX_PAYLOAD_BYTES = 65536

Client = TypeVar("Client", aioredis.Redis, redis.Redis)

_PUBLISH = LuaScript.load("streamer.lua", "publish.lua")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Entry:
    """A checked event, ready to append: its partition stream, its JSON, its dedupe marker
    (None without an ``id`` or without dedupe)."""

    stream: str
    payload: bytes
    marker: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    stream_id: str
    duplicate: bool = False  # the id was published before, inside the window: nothing written


def to_json(event: Event) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode("utf-8")
    return _encoder.encode(event)


def prepare(
    event: Event, keys: Keys, max_bytes: int, *, dedupe: bool = False, index: int | None = None
) -> Entry:
    """Check one event as the worker would decode it; raises InvalidEvent."""
    raw = to_json(event)
    verdict = decode_payload(raw, max_bytes)
    if isinstance(verdict, tuple):
        raise InvalidEvent(*verdict, index=index)
    partition = keys.partition_for(verdict)
    marker = partition.published(verdict.id) if dedupe and verdict.id is not None else None
    return Entry(partition.stream, raw, marker)


def prepare_many(
    events: Iterable[Event], keys: Keys, max_bytes: int, *, dedupe: bool = False
) -> list[Entry]:
    """Check every event before any is written; the first bad one raises, with its index."""
    return [prepare(e, keys, max_bytes, dedupe=dedupe, index=i) for i, e in enumerate(events)]


def _calls(entries: Sequence[Entry], ttl_s: int) -> list[tuple[list[str], list[Any]]]:
    return [
        ([e.stream] if e.marker is None else [e.stream, e.marker], [e.payload, ttl_s])
        for e in entries
    ]


def _text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def _results(replies: Sequence[Any], scripted: bool) -> list[Published]:
    failed = next((r for r in replies if isinstance(r, Exception)), None)
    if failed is not None:
        raise RetryableError(f"Redis refused a publish: {failed}") from failed
    if scripted:
        return [Published(_text(r[0]), bool(r[1])) for r in replies]
    return [Published(_text(r)) for r in replies]


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    redis: RedisSettings
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    dedupe_ttl_s: int = 0  # 0: no idempotency window

    @classmethod
    def from_env(cls, env: Env | None = None, *, dedupe_ttl_s: int = 0) -> ProducerSettings:
        env = env or Env()
        return cls(
            redis=RedisSettings.from_env(env),
            max_payload_bytes=env.int("MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES, minimum=64),
            dedupe_ttl_s=dedupe_ttl_s,
        )


class _Base(Generic[Client]):
    """What both producers share: the checks, and how one is made from settings; only the
    client (asyncio or synchronous) and the I/O differ."""

    _open: Callable[..., Client]  # connect or connect_sync

    def __init__(
        self,
        client: Client,
        keys: Keys,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        dedupe_ttl_s: int = 0,
    ) -> None:
        self.client: Client = client
        self.keys = keys
        self.max_payload_bytes = max_payload_bytes
        self.dedupe_ttl_s = dedupe_ttl_s

    @classmethod
    def from_settings(cls, settings: ProducerSettings, *, client_name: str) -> Self:
        return cls(
            cls._open(settings.redis.url, client_name=client_name),
            Keys.from_settings(settings.redis),
            max_payload_bytes=settings.max_payload_bytes,
            dedupe_ttl_s=settings.dedupe_ttl_s,
        )

    @classmethod
    def connect(cls, url: str | None = None, environ: Mapping[str, str] | None = None) -> Self:
        """A producer on ``url`` (else REDIS_URL), with the keys and limits ``environ`` (by
        default the process environment) configures: KEY_PREFIX, INGRESS_PARTITIONS, ..."""
        return cls.from_settings(_settings(url, environ), client_name="streamer-producer")

    def prepare(self, event: Event) -> Entry:
        """Check one event as ``publish`` does, writing nothing; raises InvalidEvent."""
        return prepare(event, self.keys, self.max_payload_bytes, dedupe=self.dedupe_ttl_s > 0)

    def prepare_many(self, events: Iterable[Event]) -> list[Entry]:
        """Check events as ``publish_many`` does, writing nothing; raises InvalidEvent."""
        dedupe = self.dedupe_ttl_s > 0
        return prepare_many(events, self.keys, self.max_payload_bytes, dedupe=dedupe)


class Producer(_Base[aioredis.Redis]):
    """Publishes with an asyncio client (from ``streamer.infra.redis.connect``)."""

    _open = staticmethod(connect)

    async def publish(self, event: Event) -> str:
        """Append one event; its stream id."""
        (published,) = await self.append([self.prepare(event)])
        return published.stream_id

    async def publish_many(self, events: Iterable[Event]) -> list[str]:
        """Append every event in one round trip, or none if one is invalid; their ids."""
        return [p.stream_id for p in await self.append(self.prepare_many(events))]

    async def append(self, entries: Sequence[Entry]) -> list[Published]:
        """Append checked entries in one pipelined round trip, in order."""
        if not entries:
            return []
        try:
            if self.dedupe_ttl_s > 0:
                replies = await _PUBLISH.run_many(self.client, _calls(entries, self.dedupe_ttl_s))
            else:
                replies = await self._xadd(entries)
        except REDIS_ERRORS as exc:
            raise RetryableError(f"cannot publish: {exc}") from exc
        return _results(replies, self.dedupe_ttl_s > 0)

    async def _xadd(self, entries: Sequence[Entry]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(entry.stream, {"payload": entry.payload})
        return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        await self.client.aclose()


class SyncProducer(_Base[redis.Redis]):
    """Publishes with a synchronous client (from ``streamer.infra.redis.connect_sync``)."""

    _open = staticmethod(connect_sync)

    def publish(self, event: Event) -> str:
        (published,) = self.append([self.prepare(event)])
        return published.stream_id

    def publish_many(self, events: Iterable[Event]) -> list[str]:
        return [p.stream_id for p in self.append(self.prepare_many(events))]

    def append(self, entries: Sequence[Entry]) -> list[Published]:
        if not entries:
            return []
        try:
            if self.dedupe_ttl_s > 0:
                replies = _PUBLISH.run_many_sync(self.client, _calls(entries, self.dedupe_ttl_s))
            else:
                replies = self._xadd(entries)
        except REDIS_ERRORS as exc:
            raise RetryableError(f"cannot publish: {exc}") from exc
        return _results(replies, self.dedupe_ttl_s > 0)

    def _xadd(self, entries: Sequence[Entry]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(entry.stream, {"payload": entry.payload})
        return list(pipe.execute(raise_on_error=False))

    def close(self) -> None:
        self.client.close()


def _settings(url: str | None, environ: Mapping[str, str] | None) -> ProducerSettings:
    variables = dict(os.environ if environ is None else environ)
    if url is not None:
        variables["REDIS_URL"] = url
    return ProducerSettings.from_env(Env(variables))
