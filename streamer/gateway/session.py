"""Delivery to one socket (Session) and the local index of sockets by user and topic (Hub).

A socket follows ordered *tracks*: its user's log, and the log of each topic it subscribed
to. Per track, the last log id sent: a frame at or below it is dropped (effectively once);
a frame whose ``prev`` the socket has not had yet reveals a gap (an inbox delivery that
overtook an earlier one: two owners of a partition around a hand-over). A track that needs
the log (a resume, the history, a subscription's replay, a gap) is *busy*: its live frames
wait in its buffer while a task reads the log, then replay and buffer are merged by id and
sent, and the track is live again. The fan-out never waits for such a read, and never for a
socket: a socket whose unsent bytes (its buffers and the transport's) pass
WS_SEND_BUFFER_BYTES is closed with 4008 instead. Sending is synchronous: no task or buffer
per socket while it is idle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from streamer.contract.event import valid_user_id
from streamer.contract.ids import MIN_ID, StreamId, format_id, parse_id, successor
from streamer.contract.inbox import BROADCAST, TOPIC, USER
from streamer.contract.websocket import (
    PING,
    PONG,
    RESUME,
    SUBSCRIBE,
    TOPIC_FORBIDDEN,
    TOPIC_INVALID,
    TOPIC_TOO_MANY,
    TOPIC_UNAVAILABLE,
    UNSUBSCRIBE,
    CloseCode,
    parse_client_frame,
    recovery_frame,
    refused_frame,
    subscribed_frame,
    topic_allowed,
    unsubscribed_frame,
)
from streamer.gateway.connection import Connection, text_frame
from streamer.gateway.inbox import InboxEntry
from streamer.gateway.resume import Frame, fetch_count, has_gap, merge, plan_resume
from streamer.gateway.settings import SocketSettings
from streamer.infra import metrics
from streamer.infra.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

_MIN_GAP_READ = 100


class Logs(Protocol):
    """Reads of replay logs (the gateway's Redis adapter). ``kind`` is USER or TOPIC."""

    async def read_from(self, kind: str, name: str, start: str, count: int) -> list[Frame]:
        """Entries from ``start`` (inclusive) on, framed for sending."""

    async def read_newest(self, kind: str, name: str, count: int) -> list[Frame]:
        """The newest ``count`` entries, oldest first, framed for sending."""

    async def tail(self, kind: str, name: str) -> StreamId:
        """The newest entry's id (MIN_ID for an empty log)."""


class Subscriptions(Protocol):
    """Topic ownership, counted per socket (the gateway's topic book)."""

    async def add(self, topic: str) -> None: ...

    def remove(self, topic: str) -> None: ...


@dataclass(slots=True, eq=False)
class Track:
    """One ordered log followed by one socket: its user's, or a topic's."""

    kind: str
    name: str
    last_sent: StreamId | None = None
    floor: StreamId | None = None  # the log's end when the socket joined it: gap checks start here
    busy: bool = True
    buffer: list[Frame] = field(default_factory=list)
    buffered: int = 0

    def sent_floor(self) -> StreamId | None:
        return self.last_sent if self.last_sent is not None else self.floor

    def take(self) -> list[Frame]:
        frames, self.buffer, self.buffered = self.buffer, [], 0
        return frames


class Session:
    __slots__ = (
        "_first_timer",
        "_hub",
        "_logs",
        "_settings",
        "_subscriptions",
        "_tasks",
        "allowed_topics",
        "conn",
        "expires_at",
        "sent_close_code",
        "topics",
        "user",
        "user_id",
    )

    def __init__(
        self,
        conn: Connection,
        user_id: str,
        expires_at: float,
        allowed_topics: tuple[str, ...],
        settings: SocketSettings,
        logs: Logs,
        subscriptions: Subscriptions,
        hub: Hub,
    ) -> None:
        self.conn = conn
        self.user_id = user_id
        self.expires_at = expires_at
        self.allowed_topics = allowed_topics
        self._settings = settings
        self._logs = logs
        self._subscriptions = subscriptions
        self.user = Track(USER, user_id)
        self.topics: dict[str, Track] | None = None
        self.sent_close_code: int | None = None
        self._first_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._hub = hub

    @property
    def closing(self) -> bool:
        return self.sent_close_code is not None

    # --- start and client frames ----------------------------------------------------------

    def start(self, last_event_id: str | None, history: int | None, topics: Iterable[str]) -> None:
        """Called once the WebSocket is open: resume, send the history, or go live (after
        waiting WS_RESUME_WAIT_MS for a first ``resume`` frame); subscribe ``topics``."""
        if last_event_id is not None:
            self._spawn(self._resume(last_event_id))
        elif history is not None:
            self._spawn(self._history(history))
        elif self._settings.resume_wait_ms:
            loop = asyncio.get_running_loop()
            self._first_timer = loop.call_later(
                self._settings.resume_wait_ms / 1000, self._no_first_resume
            )
        else:
            self._go_live(self.user)
        for topic in topics:
            self._spawn(self._subscribe(topic, None))

    def _no_first_resume(self) -> None:
        self._first_timer = None
        self._go_live(self.user)

    def on_message(self, data: bytes) -> None:
        frame = parse_client_frame(data)
        if self._first_timer is not None:
            # The first client frame: a resume now replays in order; anything else means the
            # client does not resume, so live deliveries need not wait longer.
            self._first_timer.cancel()
            self._first_timer = None
            if frame is not None and frame.type == RESUME:
                self._spawn(self._resume(frame.last_event_id))
                return
            self._go_live(self.user)
        if frame is None:
            return
        if frame.type == PING:
            self.conn.send_text(PONG)
        elif frame.type == RESUME:
            # Live frames already went out (or are going): replaying older ones now would
            # break the order. The client hears it and refetches.
            metrics.REPLAYS.labels("false").inc()
            self.conn.send_text(recovery_frame(False, 0))
        elif frame.type == SUBSCRIBE and frame.topic is not None:
            self._spawn(self._subscribe(frame.topic, frame.last_event_id))
        elif frame.type == UNSUBSCRIBE and frame.topic is not None:
            self._unsubscribe(frame.topic)

    # --- the user's log -------------------------------------------------------------------

    async def _resume(self, last_event_id: str | None) -> None:
        track = self.user
        recovered, replay = await self._plan(track, last_event_id)
        replayed = self._drain(track, replay)
        self.conn.send_text(recovery_frame(recovered, replayed))
        await self._settle(track)

    async def _plan(self, track: Track, last_event_id: str | None) -> tuple[bool, list[Frame]]:
        """Whether the log still has ``last_event_id`` (and at most WS_MAX_REPLAY after it),
        and then the entries after it; no partial replay pretending to be whole."""
        requested = None if last_event_id is None else parse_id(last_event_id)
        fetched: list[Frame] = []
        if requested is not None and last_event_id is not None:
            count = fetch_count(self._settings.max_replay)
            fetched = await self._logs.read_from(track.kind, track.name, last_event_id, count)
        plan = plan_resume(requested, fetched, self._settings.max_replay)
        metrics.REPLAYS.labels("true" if plan.recovered else "false").inc()
        if plan.floor is not None and (track.last_sent is None or plan.floor > track.last_sent):
            track.last_sent = plan.floor
        return plan.recovered, list(plan.replay)

    async def _history(self, count: int) -> None:
        """The newest ``count`` entries, then live. Ownership was registered before this
        read, so every entry is in the read, in the buffer, or both: the merge sends each
        once, in order. ``recovered`` is true: nothing was asked for that the log lost."""
        track = self.user
        newest = await self._logs.read_newest(track.kind, track.name, count)
        replayed = self._drain(track, newest)
        self.conn.send_text(recovery_frame(True, replayed))
        await self._settle(track)

    # --- topics ---------------------------------------------------------------------------

    async def _subscribe(self, topic: str, last_event_id: str | None) -> None:
        refusal = self._refusal(topic)
        if refusal is not None:
            metrics.TOPIC_REFUSALS.labels(refusal).inc()
            self.conn.send_text(refused_frame(topic, refusal))
            return
        topics = self.topics if self.topics is not None else {}
        self.topics = topics
        track = topics[topic] = Track(TOPIC, topic)
        self._hub.subscribe(self, topic)
        try:
            await self._subscriptions.add(topic)
            track.floor = await self._logs.tail(TOPIC, topic)
            recovered, replay = (
                await self._plan(track, last_event_id) if last_event_id else (True, [])
            )
        except REDIS_ERRORS:
            self._drop_topic(topic)
            metrics.TOPIC_REFUSALS.labels(TOPIC_UNAVAILABLE).inc()
            self.conn.send_text(refused_frame(topic, TOPIC_UNAVAILABLE))
            return
        replayed = self._drain(track, replay)
        self.conn.send_text(subscribed_frame(topic, recovered, replayed))
        await self._settle(track)

    def _refusal(self, topic: str) -> str | None:
        if not valid_user_id(topic):
            return TOPIC_INVALID
        if not topic_allowed(topic, self.allowed_topics):
            return TOPIC_FORBIDDEN
        if self.topics is not None:
            if topic in self.topics:
                return None  # subscribing again: answered again, nothing doubled
            if len(self.topics) >= self._settings.max_topics_per_socket:
                return TOPIC_TOO_MANY
        return None

    def _unsubscribe(self, topic: str) -> None:
        if self.topics is not None and topic in self.topics:
            self._drop_topic(topic)
        self.conn.send_text(unsubscribed_frame(topic))

    def _drop_topic(self, topic: str) -> None:
        assert self.topics is not None
        if self.topics.pop(topic, None) is not None and self._hub.unsubscribe(self, topic):
            self._subscriptions.remove(topic)
        if not self.topics:
            self.topics = None

    # --- delivering -----------------------------------------------------------------------

    def push(self, track: Track, frame: Frame) -> int:
        """A live delivery; returns 1 when sent now. A busy track buffers it; a frame that
        reveals a gap makes the track busy while the missing entries are read."""
        if self.sent_close_code is not None:
            return 0
        if track.busy:
            self._buffer(track, frame)
            return 0
        if has_gap(frame, track.sent_floor()):
            track.busy = True
            self._buffer(track, frame)
            self._spawn(self._settle(track))
            return 0
        return self._send(track, frame)

    def send_untracked(self, wire: bytes) -> int:
        """A frame outside any log (a broadcast): no id, no order, no resume."""
        if self.sent_close_code is None and self._writable():
            self.conn.send(wire)
            return 1
        return 0

    def _buffer(self, track: Track, frame: Frame) -> None:
        track.buffer.append(frame)
        track.buffered += len(frame.data)
        if track.buffered + self.conn.buffered() > self._settings.send_buffer_bytes:
            self._close_slow()

    def _send(self, track: Track, frame: Frame) -> int:
        if track.last_sent is not None and frame.sid <= track.last_sent:
            return 0
        if not self._writable():
            return 0
        track.last_sent = frame.sid
        self.conn.send(frame.data)
        return 1

    def _drain(self, track: Track, replay: list[Frame]) -> int:
        """Send ``replay`` merged with the buffered live frames, in id order, up to the first
        gap (left buffered for ``_settle``). Returns how many came from ``replay``."""
        from_log = {frame.sid for frame in replay}
        frames = merge([*replay, *track.take()], track.last_sent)
        replayed = sent = 0
        for index, frame in enumerate(frames):
            if has_gap(frame, track.sent_floor()):
                track.buffer = [*frames[index:], *track.buffer]
                track.buffered = sum(len(f.data) for f in track.buffer)
                break
            if self._send(track, frame):
                sent += 1
                replayed += frame.sid in from_log
        metrics.MESSAGES_SENT.inc(sent)
        metrics.REPLAYED_EVENTS.inc(replayed)
        return replayed

    async def _settle(self, track: Track) -> None:
        """Until the track is live: fill, from the log, what the buffered frames reveal is
        missing. Entries the log no longer has end the socket with 1012, so the client
        resumes and hears an honest ``recovered`` instead of living with a gap."""
        while not self.closing:
            self._drain(track, [])  # everything up to the first gap
            if not track.buffer:
                # No await between this empty check and going live: nothing slips in.
                track.busy = False
                return
            first, floor = track.buffer[0], track.sent_floor()
            assert first.prev is not None and floor is not None  # a gap needs both
            count = max(self._settings.max_replay, _MIN_GAP_READ)
            start = format_id(successor(floor))
            missing = await self._logs.read_from(track.kind, track.name, start, count)
            self._drain(track, [f for f in missing if f.sid < first.sid])
            reached = track.sent_floor()
            if reached is None or reached < first.prev:
                self.close(CloseCode.RESYNC, "resync")
                return

    def _go_live(self, track: Track) -> None:
        self._drain(track, [])
        if track.buffer:
            self._spawn(self._settle(track))
        else:
            track.busy = False

    def _writable(self) -> bool:
        """True when a send would neither wait nor go to a closing socket."""
        if not self.conn.open:
            return False
        if self.conn.buffered() > self._settings.send_buffer_bytes:
            self._close_slow()
            return False
        return True

    def _close_slow(self) -> None:
        if not self.closing:
            metrics.SLOW_CLIENT_CLOSES.inc()
        self.close(CloseCode.SLOW_CLIENT, "slow client")

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake without waiting for it (the client may not read)."""
        if self.closing:
            return
        self.sent_close_code = code
        self.user.buffer.clear()
        self.conn.close(code, reason)

    def ended(self) -> None:
        """The connection is gone: stop what is in flight for it."""
        if self._first_timer is not None:
            self._first_timer.cancel()
        for task in self._tasks:
            task.cancel()

    def close_code(self) -> int:
        """The code that ended the socket, for metrics: ours if we closed it."""
        return self.sent_close_code if self.sent_close_code is not None else self.conn.close_code()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except REDIS_ERRORS as exc:
            log.warning("reading a log for a socket failed: %s", exc)
            self.close(CloseCode.INTERNAL_ERROR, "try again")


class Hub:
    """The sessions of this gateway, by user and by topic. Delivers inbox entries to them."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Session]] = {}
        self._by_topic: dict[str, set[Session]] = {}
        self._all: set[Session] = set()

    @property
    def sockets(self) -> int:
        return len(self._all)

    @property
    def users(self) -> int:
        return len(self._by_user)

    @property
    def topics(self) -> int:
        return len(self._by_topic)

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def add(self, session: Session) -> None:
        self._by_user.setdefault(session.user_id, set()).add(session)
        self._all.add(session)

    def discard(self, session: Session) -> tuple[bool, list[str]]:
        """Forget a session; returns whether it was here and the topics it held."""
        if session not in self._all:
            return False, []
        self._all.discard(session)
        sessions = self._by_user.get(session.user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[session.user_id]
        topics = list(session.topics or ())
        for topic in topics:
            self.unsubscribe(session, topic)
        return True, topics

    def subscribe(self, session: Session, topic: str) -> None:
        self._by_topic.setdefault(topic, set()).add(session)

    def unsubscribe(self, session: Session, topic: str) -> bool:
        sessions = self._by_topic.get(topic)
        if sessions is None or session not in sessions:
            return False
        sessions.discard(session)
        if not sessions:
            del self._by_topic[topic]
        return True

    def all(self) -> list[Session]:
        return list(self._all)

    def deliver(self, entries: list[InboxEntry]) -> None:
        """Each delivery's frame, framed once, to every socket it is for."""
        sent = 0
        now = time.time()
        for entry in entries:
            wire = text_frame(entry.frame)
            if entry.kind == USER:
                sessions = self._by_user.get(entry.target)
                if sessions:
                    frame = Frame(entry.sid or MIN_ID, wire, entry.prev)
                    for session in tuple(sessions):
                        sent += session.push(session.user, frame)
            elif entry.kind == TOPIC:
                sessions = self._by_topic.get(entry.target)
                if sessions:
                    frame = Frame(entry.sid or MIN_ID, wire, entry.prev)
                    for session in tuple(sessions):
                        tracks = session.topics
                        if tracks is not None and entry.target in tracks:
                            sent += session.push(tracks[entry.target], frame)
            elif entry.kind == BROADCAST:
                metrics.BROADCAST_FRAMES.inc()
                for session in tuple(self._all):
                    sent += session.send_untracked(wire)
            if entry.ingress_ms:
                metrics.GATEWAY_DELIVERY_LATENCY.observe(max(0.0, now - entry.ingress_ms / 1000))
        metrics.MESSAGES_SENT.inc(sent)


Spawn = Callable[[Awaitable[None]], None]
