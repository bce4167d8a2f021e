"""One client socket (Session) and the local index of sockets by user (Hub).

A session starts *buffering*: its ownership entry is written before the handshake completes,
so deliveries may arrive before the client said whether it resumes. They wait in a bounded
buffer, are merged with the replay by id, and then the session goes *live*. Every send goes
through ``_send``, which drops ids at or below the last one sent and never waits: a socket
whose transport buffer is over the bound is closed with 4008 instead, so one slow client
never delays the fan-out to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from streamer.contract.ids import StreamId, format_id, parse_id, successor
from streamer.contract.inbox import BROADCAST, USER
from streamer.contract.websocket import (
    PONG,
    CloseCode,
    parse_client_frame,
    recovery_frame,
)
from streamer.gateway.inbox import InboxEntry
from streamer.gateway.resume import Frame, fetch_count, has_gap, merge, plan_resume
from streamer.gateway.settings import SocketSettings
from streamer.infra import metrics

log = logging.getLogger(__name__)

_MIN_GAP_READ = 100

# (user id, first id inclusive, max entries) -> frames of the user's log from that id on
ReadLog = Callable[[str, str, int], Awaitable[list[Frame]]]
# (user id, count) -> the newest ``count`` frames of the user's log, oldest first
ReadNewest = Callable[[str, int], Awaitable[list[Frame]]]


class Session:
    def __init__(
        self,
        conn: ServerConnection,
        user_id: str,
        expires_at: float,
        settings: SocketSettings,
        read_log: ReadLog,
        read_gap: ReadLog | None = None,
        read_newest: ReadNewest | None = None,
    ) -> None:
        self.conn = conn
        self.user_id = user_id
        self._expires_at = expires_at
        self._settings = settings
        self._read_log = read_log
        # Gap fills run in the fan-out path: they must not queue behind client replays.
        self._read_gap = read_gap or read_log
        self._read_newest = read_newest
        self.last_sent: StreamId | None = None
        # The user log's newest id once this socket's ownership was registered: everything
        # after it reaches the socket (replay or inbox). Gap checks of a socket that has not
        # sent anything yet start from here.
        self.live_floor: StreamId | None = None
        self.sent_close_code: int | None = None
        self._buffering = True
        self._buffer: list[Frame] = []
        self._buffered_bytes = 0
        self._closer: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self.sent_close_code is not None

    async def run(self, last_event_id: str | None, history: int | None = None) -> None:
        """Resume (or, on a first open, send the newest ``history`` entries) or go live,
        then serve client frames until the socket closes."""
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(
            max(0.0, self._expires_at - time.time()),
            self.close,
            CloseCode.TOKEN_EXPIRED,
            "token expired",
        )
        try:
            await self._start(last_event_id, history)
            async for message in self.conn:
                await self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self._buffering = False
            self._buffer.clear()

    async def _start(self, last_event_id: str | None, history: int | None) -> None:
        if last_event_id is not None:
            await self._resume(last_event_id)
            return
        if history is not None and self._read_newest is not None:
            await self._history(history)
            return
        first = await self._first_message()
        frame = None if first is None else parse_client_frame(first)
        if frame is not None and frame.type == "resume":
            await self._resume(frame.last_event_id)
            return
        await self._go_live()
        if first is not None:
            await self._on_message(first)

    async def _first_message(self) -> str | bytes | None:
        """A client may send ``resume`` as its first frame; live deliveries wait for it a
        moment (WS_RESUME_WAIT_MS) so that a resume never arrives after live frames."""
        if self._settings.resume_wait_ms == 0:
            return None
        try:
            return await asyncio.wait_for(self.conn.recv(), self._settings.resume_wait_ms / 1000)
        except TimeoutError:
            return None  # cancelling recv() loses nothing

    async def _on_message(self, message: str | bytes) -> None:
        frame = parse_client_frame(message)
        if frame is None:
            return
        if frame.type == "ping":
            await self._send_control(PONG)
        elif frame.type == "resume":
            await self._late_resume(frame.last_event_id)

    async def _late_resume(self, last_event_id: str | None) -> None:
        if self.last_sent is None:
            self._buffering = True
            await self._resume(last_event_id)
            return
        # Live frames already went out; replaying older ones now would break the order.
        metrics.REPLAYS.labels("false").inc()
        await self._send_control(recovery_frame(False, 0))

    async def _resume(self, last_event_id: str | None) -> None:
        requested = None if last_event_id is None else parse_id(last_event_id)
        fetched: list[Frame] = []
        if requested is not None and last_event_id is not None:
            count = fetch_count(self._settings.max_replay)
            fetched = await self._read_log(self.user_id, last_event_id, count)
        plan = plan_resume(requested, fetched, self._settings.max_replay)
        metrics.REPLAYS.labels("true" if plan.recovered else "false").inc()
        if plan.floor is not None and (self.last_sent is None or plan.floor > self.last_sent):
            self.last_sent = plan.floor
        replayed = await self._send_replay(plan.replay)
        await self._send_control(recovery_frame(plan.recovered, replayed))
        await self._go_live()

    async def _history(self, count: int) -> None:
        """The newest ``count`` log entries, then live. Ownership was registered before this
        read (as for a resume), so every entry is in the read, in the buffer, or both; the
        merge sends each once, in order. ``recovered`` is true: nothing was asked for that
        the log could have lost."""
        assert self._read_newest is not None
        replayed = await self._send_replay(await self._read_newest(self.user_id, count))
        await self._send_control(recovery_frame(True, replayed))
        await self._go_live()

    async def _send_replay(self, replay: tuple[Frame, ...] | list[Frame]) -> int:
        """Send log entries merged with the buffered live ones; returns how many from the log."""
        from_log = {frame.sid for frame in replay}
        replayed = 0
        for frame in merge([*replay, *self._take_buffer()], self.last_sent):
            if await self._send(frame) and frame.sid in from_log:
                replayed += 1
        metrics.REPLAYED_EVENTS.inc(replayed)
        return replayed

    async def _go_live(self) -> None:
        while self._buffer:
            for frame in merge(self._take_buffer(), self.last_sent):
                await self._send(frame)
        # No await between the last empty check and this: nothing can slip into the buffer.
        self._buffering = False

    def _take_buffer(self) -> list[Frame]:
        frames, self._buffer, self._buffered_bytes = self._buffer, [], 0
        return frames

    async def push(self, frame: Frame) -> None:
        """A live delivery from the inbox."""
        if self.closing:
            return
        if not self._buffering:
            await self._send(frame)
            return
        self._buffer.append(frame)
        self._buffered_bytes += len(frame.data)
        if self._buffered_bytes > self._settings.send_buffer_bytes:
            self._close_slow()

    async def _send(self, frame: Frame) -> bool:
        if has_gap(frame, self._sent_floor()) and not await self._fill_gap(frame):
            return False
        if self.last_sent is not None and frame.sid <= self.last_sent:
            return False
        if not self._writable():
            return False
        self.last_sent = frame.sid
        try:
            await self.conn.send(frame.data, text=True)
        except ConnectionClosed:
            return False
        metrics.MESSAGES_SENT.inc()
        return True

    def _sent_floor(self) -> StreamId | None:
        return self.last_sent if self.last_sent is not None else self.live_floor

    async def _fill_gap(self, frame: Frame) -> bool:
        """Send, from the user log, the entries between the last one sent and ``frame``.
        If they cannot all be sent (trimmed, too many), close with 1012 so the client resumes
        and hears an honest ``recovered`` flag instead of living with a silent gap."""
        floor = self._sent_floor()
        assert floor is not None and frame.prev is not None
        count = max(self._settings.max_replay, _MIN_GAP_READ)
        for missing in await self._read_gap(self.user_id, format_id(successor(floor)), count):
            if missing.sid >= frame.sid or not await self._send(missing):
                break
        reached = self._sent_floor()
        if reached is None or reached < frame.prev:
            self.close(CloseCode.RESYNC, "resync")
            return False
        return True

    async def send_now(self, data: bytes) -> None:
        """A frame outside any log (a broadcast): no id, no ordering, no resume."""
        if self._writable():
            with contextlib.suppress(ConnectionClosed):
                await self.conn.send(data, text=True)
                metrics.MESSAGES_SENT.inc()

    async def _send_control(self, data: bytes) -> None:
        if self._writable():
            with contextlib.suppress(ConnectionClosed):
                await self.conn.send(data, text=True)

    def _writable(self) -> bool:
        """True when a send would neither wait nor go to a closing socket."""
        if self.closing or self.conn.state is not State.OPEN:
            return False
        if self.conn.transport.get_write_buffer_size() > self._settings.send_buffer_bytes:
            self._close_slow()
            return False
        return True

    def _close_slow(self) -> None:
        metrics.SLOW_CLIENT_CLOSES.inc()
        self.close(CloseCode.SLOW_CLIENT, "slow client")

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake without waiting for it (the client may not read)."""
        if self.closing:
            return
        self.sent_close_code = code
        self._closer = asyncio.create_task(self.conn.close(code, reason))

    def close_code(self) -> int:
        """The code that ended the socket, for metrics: ours if we closed it."""
        if self.sent_close_code is not None:
            return self.sent_close_code
        return self.conn.close_code or 1006


class Hub:
    """The sessions of this gateway, by user. Delivers inbox entries to them."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Session]] = {}
        self._count = 0

    @property
    def sockets(self) -> int:
        return self._count

    @property
    def users(self) -> int:
        return len(self._by_user)

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def add(self, session: Session) -> None:
        self._by_user.setdefault(session.user_id, set()).add(session)
        self._count += 1

    def discard(self, session: Session) -> bool:
        sessions = self._by_user.get(session.user_id)
        if sessions is None or session not in sessions:
            return False
        sessions.remove(session)
        if not sessions:
            del self._by_user[session.user_id]
        self._count -= 1
        return True

    def all(self) -> list[Session]:
        return [s for sessions in self._by_user.values() for s in sessions]

    async def deliver(self, entries: list[InboxEntry]) -> None:
        """Hand each delivery's frame (encoded once, by the worker) to the sockets it is for."""
        for entry in entries:
            if entry.kind == USER:
                sessions = self._by_user.get(entry.target)
            elif entry.kind == BROADCAST:
                sessions = {s for group in self._by_user.values() for s in group}
            else:
                continue  # topics: not subscribed on this gateway
            if not sessions:
                continue
            if entry.sid is None:
                for session in tuple(sessions):
                    await session.send_now(entry.frame)
            else:
                frame = Frame(entry.sid, entry.frame, entry.prev)
                for session in tuple(sessions):
                    await session.push(frame)
            if entry.ingress_ms:
                latency = time.time() - entry.ingress_ms / 1000
                metrics.GATEWAY_DELIVERY_LATENCY.observe(max(0.0, latency))
