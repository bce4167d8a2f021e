"""Load for fault-injection scenarios: paced producers, receivers on real WebSockets, and an
exact tally of what each user's client saw.

Every event carries its user's sequence number in ``data.seq`` (0, 1, 2, … per user), so
what a client received is compared with what was produced, event by event:
- *lost*: produced (the sink acknowledged it) and never received;
- *duplicated*: received more than once (a second copy of a sequence number), or received
  without ever having been produced;
- *out of order*: a first copy that arrived after an event later in the user's log, i.e. the
  log ids a client saw did not increase. The log decides the order (README, Order): one
  worker appends a user's events in stream order, several workers may interleave them.

Receivers behave like the browser client: on any close they reconnect (to any of the
gateways they were given) with ``last_event_id`` and resume; a ``recovered: false`` is
counted as a resync, which these scenarios never expect (their histories are large enough).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from streamer.contract.ids import StreamId, parse_id
from streamer.contract.keys import Keys
from streamer.infra.redis import connect as redis_connect
from streamer.infra.settings import Env, RedisSettings
from tests.support.gateway import token, ws_url
from tests.support.polling import eventually
from tests.support.rabbit import publish_confirmed

EVENT_TYPE = "chaos"
KEYS = Keys.from_settings(RedisSettings.from_env(Env({})))


# --- what is produced ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    user: str
    seq: int
    body: bytes  # the payload, as a producer writes it


@dataclass(frozen=True, slots=True)
class Plan:
    """``users`` x ``events_per_user`` events, produced seq by seq across users (so every
    user's events are spread over the whole run), at ``rate_per_s`` in total.

    ``producer_ids`` gives every event the producer idempotency key ``id``, so a producer
    may retry an XADD whose reply it lost. Scenarios that count duplicates a bridge makes
    leave it off: the worker would otherwise hide them."""

    users: int
    events_per_user: int
    rate_per_s: float
    producer_ids: bool = True
    pad_bytes: int = 0
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def user_ids(self) -> list[str]:
        return [f"c{self.run}-{i}" for i in range(self.users)]

    @property
    def total(self) -> int:
        return self.users * self.events_per_user

    def event(self, user: str, seq: int) -> Event:
        # at_ms: when the event was produced (one host, one clock): the delivery delay.
        data: dict[str, Any] = {"seq": seq, "at_ms": int(time.time() * 1000)}
        if self.pad_bytes:
            data["pad"] = "x" * self.pad_bytes
        body: dict[str, Any] = {"user_id": user, "event_type": EVENT_TYPE, "data": data}
        if self.producer_ids:
            body["id"] = f"{self.run}:{user}:{seq}"
        return Event(user, seq, json.dumps(body).encode())

    def events(self, first_seq: int = 0, stop_seq: int | None = None) -> Iterator[Event]:
        """Events ``first_seq`` up to ``stop_seq`` (exclusive; default: all) of every user."""
        for seq in range(first_seq, self.events_per_user if stop_seq is None else stop_seq):
            for user in self.user_ids:
                yield self.event(user, seq)


class Sink(Protocol):
    """Takes a chunk of events and returns once they are durably accepted (XADD replied,
    broker confirmed); raises when it cannot say so, and the chunk is sent again."""

    async def __call__(self, chunk: list[Event]) -> None: ...

    async def aclose(self) -> None: ...


class StreamSink:
    """XADD to the ingress stream (the compatibility stream every producer may use)."""

    def __init__(self, redis_url: str, keys: Keys = KEYS) -> None:
        self._client = redis_connect(redis_url, client_name="chaos-producer")
        self._stream = keys.stream

    async def __call__(self, chunk: list[Event]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for event in chunk:
            pipe.xadd(self._stream, {"payload": event.body})
        await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()


class PartitionSink:
    """XADD each event to its user's partition stream (as streamer.producer does)."""

    def __init__(self, redis_url: str, keys: Keys = KEYS) -> None:
        self._client = redis_connect(redis_url, client_name="partition-producer")
        self._keys = keys

    async def __call__(self, chunk: list[Event]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for event in chunk:
            pipe.xadd(self._keys.ingress(event.user), {"payload": event.body})
        await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()


class RabbitSink:
    """Persistent messages to a RabbitMQ queue, accepted once the broker confirmed them.
    No ``message_id``: the bridge must not double what producers send without one."""

    def __init__(self, queue: str) -> None:
        self._queue = queue

    async def __call__(self, chunk: list[Event]) -> None:
        await asyncio.to_thread(publish_confirmed, self._queue, [e.body for e in chunk])

    async def aclose(self) -> None:
        pass


class PubSubSink:
    """PUBLISH to a Redis channel (accepted = Redis replied; Pub/Sub keeps nothing)."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self._client = redis_connect(redis_url, client_name="chaos-publisher")
        self._channel = channel

    async def __call__(self, chunk: list[Event]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for event in chunk:
            pipe.publish(self._channel, event.body)
        await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(slots=True)
class Produced:
    """What a producer got accepted, per user (a prefix of each user's sequence)."""

    per_user: collections.Counter[str] = field(default_factory=collections.Counter)
    retries: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.per_user.values())


async def produce(
    plan: Plan,
    sink: Sink,
    produced: Produced,
    *,
    within_s: float,
    first_seq: int = 0,
    stop_seq: int | None = None,
    chunks_per_s: int = 20,
) -> None:
    """Send the plan's events ``first_seq`` to ``stop_seq`` at its rate, counting what the
    sink accepted into ``produced`` as it goes (a fault can watch the progress). A chunk the
    sink refused is sent again after a short pause (the sinks are idempotent, or the
    scenario counts the copies). Fails when they cannot all be sent within ``within_s``."""
    started = time.monotonic()
    chunk_size = max(1, int(plan.rate_per_s / chunks_per_s))
    events = plan.events(first_seq, stop_seq)  # made as they are sent: at_ms is fresh
    sent = 0
    while chunk := list(itertools.islice(events, chunk_size)):
        produced.retries += await _send_until_accepted(sink, chunk, started + within_s)
        produced.per_user.update(event.user for event in chunk)
        sent += len(chunk)
        # Pacing, not synchronisation: the producer holds the plan's rate.
        ahead_s = started + sent / plan.rate_per_s - time.monotonic()
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)
    produced.seconds += time.monotonic() - started


async def _send_until_accepted(sink: Sink, chunk: list[Event], deadline: float) -> int:
    failures = 0
    while True:
        try:
            await sink(chunk)
            return failures
        # Whatever the sink's transport raises (Redis, AMQP, a timeout) means "not accepted".
        except Exception as exc:
            failures += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"producer: chunk not accepted in time: {exc!r}") from exc
            await asyncio.sleep(min(0.05 * failures, 0.5))


# --- what is received ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """The outcome of one scenario, counted exactly."""

    events: int
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    resyncs: int = 0  # recovered: false answers to a resume
    max_delay_s: float = 0.0  # the longest an event took from producer to client (first copy)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.resyncs)


class Tally:
    """Every event frame each user's client received, in arrival order."""

    def __init__(self) -> None:
        self._frames: dict[str, list[tuple[StreamId, int]]] = collections.defaultdict(list)
        self._seqs: dict[str, set[int]] = collections.defaultdict(set)
        self.resyncs = 0
        self.max_delay_s = 0.0

    def see(self, user: str, frame: dict[str, Any]) -> str:
        """Record one event frame; returns its log id (what a client resumes from)."""
        log_id = str(frame["id"])
        sid = parse_id(log_id)
        assert sid is not None, f"event frame with a malformed id: {frame!r}"
        content = frame["content"]
        seq = int(content["seq"])
        if seq not in self._seqs[user] and "at_ms" in content:
            delay_s = time.time() - content["at_ms"] / 1000
            self.max_delay_s = max(self.max_delay_s, delay_s)
        self._frames[user].append((sid, seq))
        self._seqs[user].add(seq)
        return log_id

    def received(self, user: str) -> list[int]:
        """The sequence numbers of ``user``'s frames, in arrival order, copies included."""
        return [seq for _, seq in self._frames[user]]

    def has_all(self, user: str, count: int) -> bool:
        """Whether ``user``'s client has received each of 0 … count - 1."""
        seqs = self._seqs[user]
        return len(seqs) >= count and all(seq in seqs for seq in range(count))

    def figures(self, produced: collections.Counter[str]) -> Figures:
        lost = duplicated = out_of_order = 0
        for user, count in produced.items():
            seen: set[int] = set()
            newest: StreamId | None = None
            for sid, seq in self._frames[user]:
                if seq in seen:
                    duplicated += 1
                    continue
                seen.add(seq)
                if newest is not None and sid <= newest:
                    out_of_order += 1
                newest = sid if newest is None else max(newest, sid)
            lost += len(set(range(count)) - seen)
            duplicated += len(seen - set(range(count)))  # received but never produced
        return Figures(
            sum(produced.values()), lost, duplicated, out_of_order, self.resyncs, self.max_delay_s
        )


Ports = Callable[[], Sequence[int]]


def socket_url(port: int, user: str, **query: str) -> str:
    """The socket URL of any user id the event schema accepts: the id percent-encoded as
    one path segment (a ``/`` in it as ``%2F``), as the browser client sends it."""
    return ws_url(port, quote(user, safe=""), **{k: quote(v, safe="") for k, v in query.items()})


class Receiver:
    """One user's client: connects, reads, and on every close resumes on a gateway."""

    def __init__(self, user: str, ports: Ports, tally: Tally, *, index: int = 0) -> None:
        self.user = user
        self._ports = ports
        self._tally = tally
        self._turn = index  # spreads users over gateways, and moves on after a failure
        self.last_id: str | None = None
        self.connected = asyncio.Event()
        self.closes: collections.Counter[int] = collections.Counter()
        self.connects = 0
        self._conn: ClientConnection | None = None
        self._stopping = False

    async def run(self, until: float) -> None:
        """Stay connected until ``stop()`` or the monotonic deadline ``until``."""
        failures = 0
        while not self._stopping and time.monotonic() < until:
            conn = await self._connect()
            if conn is None:
                failures += 1
                # A client's reconnect backoff (capped), not a wait for a condition.
                await asyncio.sleep(min(0.05 * failures, 0.5))
                continue
            failures = 0
            await self._read(conn)

    async def _connect(self) -> ClientConnection | None:
        ports = self._ports()
        if not ports:
            return None
        port = ports[self._turn % len(ports)]
        query = {"token": token(self.user, ttl_s=3600)}
        if self.last_id is not None:
            query["last_event_id"] = self.last_id
        try:
            conn = await connect(
                socket_url(port, self.user, **query),
                open_timeout=5,
                close_timeout=2,
                ping_interval=None,
                max_size=1 << 22,
            )
        except (OSError, InvalidHandshake, TimeoutError):
            self._turn += 1
            return None
        self.connects += 1
        self._conn = conn
        self.connected.set()
        return conn

    async def _read(self, conn: ClientConnection) -> None:
        try:
            async for message in conn:
                self._on_frame(json.loads(message))
        except ConnectionClosed:
            pass
        finally:
            self._conn = None
        self.closes[conn.close_code or 1006] += 1

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "_recovery":
            if not frame.get("recovered"):
                self._tally.resyncs += 1
        elif "id" in frame:
            self.last_id = self._tally.see(self.user, frame)

    async def stop(self) -> None:
        self._stopping = True
        conn = self._conn
        if conn is not None:
            await conn.close()


class Receivers:
    """One Receiver per user, each in its own task."""

    def __init__(self, users: Sequence[str], ports: Ports, *, within_s: float) -> None:
        self.tally = Tally()
        self.receivers = [
            Receiver(user, ports, self.tally, index=i) for i, user in enumerate(users)
        ]
        until = time.monotonic() + within_s
        self._tasks = [asyncio.create_task(r.run(until)) for r in self.receivers]

    async def connected(self, within_s: float = 20.0) -> None:
        async with asyncio.timeout(within_s):
            await asyncio.gather(*(r.connected.wait() for r in self.receivers))

    async def complete(self, produced: Produced, within_s: float) -> bool:
        """True once every client has every event produced for its user; False at the
        deadline (the tally then says what is missing)."""

        def done() -> bool:
            return all(self.tally.has_all(u, n) for u, n in produced.per_user.items())

        try:
            await eventually(done, within_s=within_s, what="every event on every socket")
        except AssertionError:
            return False
        return True

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.receivers))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def audit(self, ports: Sequence[int]) -> int:
        """After the run: each client resumes once more from its last id; anything replayed
        then (a late copy, an extra entry in the log) goes into the tally. Returns how many
        clients could not resume (no gateway answered in time)."""
        if not ports:
            return len(self.receivers)
        done = await asyncio.gather(*(self._audit_one(r, ports[0]) for r in self.receivers))
        return done.count(False)

    async def _audit_one(self, receiver: Receiver, port: int) -> bool:
        if receiver.last_id is None:
            return True
        query = {"token": token(receiver.user), "last_event_id": receiver.last_id}
        url = socket_url(port, receiver.user, **query)
        try:
            async with connect(url, open_timeout=10, close_timeout=2, max_size=1 << 22) as conn:
                async with asyncio.timeout(10):
                    async for message in conn:
                        frame = json.loads(message)
                        if frame.get("type") == "_recovery":
                            if not frame.get("recovered"):
                                self.tally.resyncs += 1
                            return True
                        self.tally.see(receiver.user, frame)
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
            pass
        return False

    def closes(self) -> collections.Counter[int]:
        total: collections.Counter[int] = collections.Counter()
        for receiver in self.receivers:
            total.update(receiver.closes)
        return total
