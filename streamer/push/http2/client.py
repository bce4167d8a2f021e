"""Asyncio glue for the HTTP/2 client: a protocol per TLS connection, a pool per endpoint.

Each connection is a ``ClientConnection`` (sans I/O) behind an ``asyncio.Protocol``: bytes in
go to ``receive``, its events settle the requests' futures, and what it has to send is
written once per event-loop iteration, so the requests started in one iteration share a TLS
record and a system call. A timer per connection (once a second) ends requests past their
deadline with RST_STREAM, and PINGs the server after a timeout or a long silence: no PING
answer within the grace period and the connection is dropped, failing what was on it, so a
half-open connection cannot hold requests or stream slots.

``Http2Pool`` puts each request on the first connection with a free stream and opens
another (one at a time, up to ``max_connections``) when none has one. A request the server
never processed (GOAWAY, REFUSED_STREAM) is sent again on another connection, up to
``attempts`` times; any other failure is the caller's to retry, since the server may have
acted on it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from streamer.push.http2 import frames as f
from streamer.push.http2.connection import (
    ClientConnection,
    GoAwayReceived,
    PingAcknowledged,
    Response,
    ResponseReceived,
    StreamFailed,
)
from streamer.push.http2.hpack import Field
from streamer.push.http2.proxy import Proxy, open_tunnel

log = logging.getLogger(__name__)

T = TypeVar("T")

TICK_S = 1.0  # deadlines and liveness are checked this often per connection
KEEPALIVE_S = 30.0  # PING a connection the server has been silent on this long
PING_GRACE_S = 5.0  # ... and drop it when the PING is not answered within this
CONNECT_TIMEOUT_S = 10.0
_PING = struct.Struct(">Q")


class RequestFailed(Exception):
    """A request ended without an answer. ``unprocessed``: the server said it never acted on
    it, so sending it again cannot duplicate it."""

    def __init__(self, reason: str, unprocessed: bool = False) -> None:
        super().__init__(reason)
        self.unprocessed = unprocessed


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    ssl: ssl.SSLContext  # must offer ALPN "h2"
    proxy: Proxy | None = None

    @property
    def authority(self) -> bytes:
        return (self.host if self.port == 443 else f"{self.host}:{self.port}").encode()


_Waiting = tuple["asyncio.Future[Response]", float]  # the answer, its deadline (loop time)


class _Link(asyncio.Protocol):
    """One HTTP/2 connection."""

    def __init__(
        self, wanted: Sequence[bytes], on_change: Callable[[_Link], None], ping_grace_s: float
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.conn = ClientConnection(wanted)
        self.ready: asyncio.Future[None] = self._loop.create_future()  # server SETTINGS seen
        self.gone = False
        self._on_change = on_change
        self._ping_grace_s = ping_grace_s
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[int, _Waiting] = {}
        self._write_handle: asyncio.Handle | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._heard_at = self._loop.time()
        self._ping_sent_at: float | None = None
        self._pings = itertools.count()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            transport.abort()
            self._lost("the server did not agree to HTTP/2 (ALPN)")
            return
        self._transport = transport
        self._write()
        self._ticker = self._loop.call_later(TICK_S, self._tick)

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        try:
            events = self.conn.receive(data)
        except f.ProtocolError as exc:
            self._abort(exc.code, f"protocol error by the server: {exc}")
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                self._settle(event.stream_id, event.response)
            elif isinstance(event, StreamFailed):
                self._settle(event.stream_id, RequestFailed(event.reason, event.unprocessed))
            elif isinstance(event, PingAcknowledged):
                self._ping_sent_at = None
            elif isinstance(event, GoAwayReceived):
                log.info("HTTP/2 GOAWAY (%d): %r", event.code, event.debug[:200])
        if not self.ready.done() and self.conn.settings_received:
            self.ready.set_result(None)
        self._write()
        self._on_change(self)

    def eof_received(self) -> bool:
        return False  # close: the server will send nothing more

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(f"connection lost: {exc}" if exc else "connection closed by the server")

    # --- requests --------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not self.gone and self.conn.available() > 0

    def send(self, fields: Sequence[Field], body: bytes, deadline: float) -> int:
        stream_id = self.conn.request(fields, body)
        self._waiting[stream_id] = (self._loop.create_future(), deadline)
        if self._write_handle is None:
            self._write_handle = self._loop.call_soon(self._write)
        return stream_id

    def answer(self, stream_id: int) -> asyncio.Future[Response]:
        return self._waiting[stream_id][0]

    def cancel(self, stream_id: int) -> None:
        """The caller gave up (its own deadline): reset the stream, free its slot."""
        if self._waiting.pop(stream_id, None) is not None:
            self.conn.cancel(stream_id)
            self._check_liveness(self._loop.time())
            self._write()
            self._on_change(self)

    def close(self) -> None:
        """GOAWAY, then close once written; requests still open fail."""
        self.conn.close()
        self._write()
        if self._transport is not None:
            self._transport.close()
        self._lost("client closed")

    # --- internals -------------------------------------------------------------------------
    def _settle(self, stream_id: int, outcome: Response | RequestFailed) -> None:
        waiting = self._waiting.pop(stream_id, None)
        if waiting is None or waiting[0].done():  # cancelled by its caller meanwhile
            return
        if isinstance(outcome, Response):
            waiting[0].set_result(outcome)
        else:
            waiting[0].set_exception(outcome)

    def _write(self) -> None:
        self._write_handle = None
        data = self.conn.data_to_send()
        if data and self._transport is not None and not self.gone:
            self._transport.write(data)

    def _tick(self) -> None:
        now = self._loop.time()
        expired = [sid for sid, (_, deadline) in self._waiting.items() if deadline <= now]
        for stream_id in expired:
            self.conn.cancel(stream_id)
            self._settle(stream_id, RequestFailed("no answer before the deadline"))
        if expired:
            self._check_liveness(now)
        if self._ping_sent_at is not None and now - self._ping_sent_at > self._ping_grace_s:
            self._abort(f.NO_ERROR, f"no PING answer within {self._ping_grace_s}s")
            return
        if now - self._heard_at > KEEPALIVE_S:
            self._check_liveness(now)
        self._write()
        if expired:
            self._on_change(self)
        self._ticker = self._loop.call_later(TICK_S, self._tick)

    def _check_liveness(self, now: float) -> None:
        """PING, unless one is out: a server that cannot answer it is gone."""
        if self._ping_sent_at is None and not self.gone:
            self._ping_sent_at = now
            self.conn.ping(_PING.pack(next(self._pings)))

    def _abort(self, code: int, reason: str) -> None:
        log.warning("dropping an HTTP/2 connection: %s", reason)
        self.conn.close(code, reason)
        self._write()
        if self._transport is not None:
            self._transport.abort()
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if self.gone:
            return
        self.gone = True
        for handle in (self._ticker, self._write_handle):
            if handle is not None:
                handle.cancel()
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_exception(RequestFailed(reason))
        if not self.ready.done():
            self.ready.set_exception(RequestFailed(reason))
        self._on_change(self)


class Slots:
    """At most ``limit`` holders, waiters served in order: ``asyncio.Semaphore`` without
    its per-acquire scan of the waiters (Python 3.11)."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """A slot at once, if one is free and nobody waits for it."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if not self.take():
            await self.wait()

    async def wait(self) -> None:
        """Wait in line for a slot."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the first waiter
                return
        self._free += 1


class Http2Pool:
    """HTTP/2 connections to one endpoint, at most ``max_in_flight`` requests at a time.
    Create and use inside the running loop."""

    def __init__(
        self,
        endpoint: Endpoint,
        wanted_headers: Sequence[bytes] = (),
        *,
        max_in_flight: int = 64,
        max_connections: int = 4,
        attempts: int = 3,
        ping_grace_s: float = PING_GRACE_S,
    ) -> None:
        self._endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._slots = Slots(max_in_flight)
        self._wanted = tuple(wanted_headers)
        self._max_connections = max_connections
        self._attempts = attempts
        self._ping_grace_s = ping_grace_s
        self._links: list[_Link] = []
        self._connecting: asyncio.Future[None] | None = None
        self._room = asyncio.Event()
        self._waiters = 0
        self._closed = False
        self.connections_opened = 0

    async def request(
        self,
        fields: Sequence[Field],
        body: bytes,
        deadline: float,
        answer: Callable[[Response | RequestFailed, float], T],
    ) -> T:
        """``answer(the server's response or why there is none, seconds it took)``.
        ``deadline`` is in loop time. One coroutine per request, no more: a caller may
        have a thousand of them waiting for a slot."""
        if not self._slots.take():
            await self._slots.wait()
        started = self._loop.time()
        outcome: Response | RequestFailed = RequestFailed("not sent")
        try:
            for attempt in range(1, self._attempts + 1):
                try:
                    link = self._free_link() or await self._link(deadline)
                except RequestFailed as exc:  # no connection to be had
                    outcome = exc
                    break
                stream_id = link.send(fields, body, deadline)
                try:
                    outcome = await link.answer(stream_id)
                except RequestFailed as exc:
                    outcome = exc
                    if exc.unprocessed and attempt < self._attempts:
                        continue  # never processed: safe to send on another connection
                except asyncio.CancelledError:
                    link.cancel(stream_id)
                    raise
                break
        finally:
            self._slots.release()
        return answer(outcome, self._loop.time() - started)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        for link in list(self._links):
            link.close()
        self._links.clear()

    def _free_link(self) -> _Link | None:
        for link in self._links:
            if link.usable:
                return link
        return None

    async def _link(self, deadline: float) -> _Link:
        while True:
            link = self._free_link()
            if link is not None:
                return link
            if self._closed:
                raise RequestFailed("client closed")
            if self._connecting is None and len(self._links) < self._max_connections:
                self._connecting = asyncio.ensure_future(self._connect())
                self._connecting.add_done_callback(self._connected)
            if self._connecting is not None:
                # One connection attempt at a time, shared by every request waiting for it.
                await asyncio.shield(self._connecting)
            else:
                await self._wait_for_room(deadline)

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                link = await self._open()
                await link.ready
        except TimeoutError:
            raise RequestFailed(f"no connection within {CONNECT_TIMEOUT_S}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise RequestFailed(f"cannot connect: {type(exc).__name__}: {exc}") from None
        if not link.gone:
            self._links.append(link)
            self.connections_opened += 1

    async def _open(self) -> _Link:
        endpoint, loop = self._endpoint, asyncio.get_running_loop()

        def protocol() -> _Link:
            return _Link(self._wanted, self._changed, self._ping_grace_s)

        if endpoint.proxy is None:
            _, link = await loop.create_connection(
                protocol, endpoint.host, endpoint.port, ssl=endpoint.ssl
            )
            return link
        raw = await open_tunnel(endpoint.proxy, endpoint.host, endpoint.port)
        link = protocol()
        tls = await loop.start_tls(raw, link, endpoint.ssl, server_hostname=endpoint.host)
        if tls is None:
            raise RequestFailed("TLS through the proxy failed")
        link.connection_made(tls)
        return link

    def _connected(self, attempt: asyncio.Future[None]) -> None:
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the requests that awaited it have raised it
        self._room.set()

    async def _wait_for_room(self, deadline: float) -> None:
        self._waiters += 1
        try:
            self._room.clear()
            async with asyncio.timeout_at(deadline):
                await self._room.wait()
        except TimeoutError:
            raise RequestFailed("no free HTTP/2 stream before the deadline") from None
        finally:
            self._waiters -= 1

    def _changed(self, link: _Link) -> None:
        if (link.gone or link.conn.goaway) and link in self._links:
            self._links.remove(link)
        if link.conn.goaway and not link.gone and not link.conn.open_streams:
            link.close()  # drained after GOAWAY: nothing more will come on it
        if self._waiters:
            self._room.set()
