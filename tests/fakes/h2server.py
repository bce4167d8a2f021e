"""A small HTTP/2 server over TLS, built on the `h2` library, so the push client is tested
against an independent HTTP/2 implementation.

A fake is a handler: Request -> Response | GOAWAY, or an awaitable of one (to hold an
answer). ALPN h2 only, as APNs requires; given a ``fallback`` (tests.fakes.h1server), a
connection that offers only http/1.1 is handed to it (FCM's token endpoint, which google-auth
reaches over urllib). The server runs on its own event loop in a thread (tests) or in a
subprocess (benchmarks, see tests.fakes.__main__), never in the loop under test.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which connection it came on (numbered from 1; 0 over HTTP/1.1)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


class GoAway:
    """Answer with GOAWAY (this stream not processed) and close the connection."""


GOAWAY = GoAway()
Reply = Response | GoAway
Handler = Callable[[Request], "Reply | Awaitable[Reply]"]


def server_context(
    cert_file: Path, key_file: Path, alpn: tuple[str, ...] = ("h2",)
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(list(alpn))
    return context


Fallback = Callable[[], asyncio.Protocol]


@dataclass
class ServerStats:
    connections: int = 0
    resets: int = 0  # streams the client reset (RST_STREAM)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class _Connection(asyncio.Protocol):
    def __init__(
        self, handler: Handler, stats: ServerStats, fallback: Fallback | None, max_streams: int
    ) -> None:
        self._handler = handler
        self._stats = stats
        self._fallback = fallback
        self._max_streams = max_streams
        self._id = next(stats._ids)
        self._conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            if self._fallback is None:
                transport.close()  # APNs speaks HTTP/2 only
                return
            http1 = self._fallback()
            transport.set_protocol(http1)
            http1.connection_made(transport)
            return
        self._transport = transport
        self._stats.connections += 1
        self._conn.initiate_connection()
        self._conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self._max_streams})
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except ProtocolError:
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._streams[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, DataReceived):
                self._streams[event.stream_id][1].extend(event.data)
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._dispatch(event.stream_id)
            elif isinstance(event, StreamReset):
                self._streams.pop(event.stream_id, None)
                self._stats.resets += 1
            elif isinstance(event, ConnectionTerminated) and self._transport is not None:
                self._transport.close()
        self._flush()

    def _dispatch(self, stream_id: int) -> None:
        headers, body = self._streams.pop(stream_id)
        request = Request(headers[":method"], headers[":path"], headers, bytes(body), self._id)
        reply = self._handler(request)
        if inspect.isawaitable(reply):
            task = asyncio.ensure_future(self._answer_later(stream_id, reply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._answer(stream_id, reply)

    async def _answer_later(self, stream_id: int, reply: Awaitable[Reply]) -> None:
        self._answer(stream_id, await reply)
        self._flush()

    def _answer(self, stream_id: int, reply: Reply) -> None:
        if self._transport is None:
            return
        if isinstance(reply, GoAway):
            self._conn.close_connection(
                additional_data=b'{"reason":"Shutdown"}', last_stream_id=max(0, stream_id - 2)
            )
            self._flush()
            self._transport.close()
            return
        headers = [(":status", str(reply.status)), *reply.headers]
        headers.append(("content-length", str(len(reply.body))))
        try:
            self._conn.send_headers(stream_id, headers, end_stream=not reply.body)
            if reply.body:
                self._conn.send_data(stream_id, reply.body, end_stream=True)
        except H2Error:
            pass  # the client reset the stream or the connection is closing

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)


async def serve(
    handler: Handler,
    context: ssl.SSLContext,
    stats: ServerStats,
    port: int = 0,
    fallback: Fallback | None = None,
    max_streams: int = 1000,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(handler, stats, fallback, max_streams), "127.0.0.1", port, ssl=context
    )


Serve = Callable[[Handler, ssl.SSLContext, ServerStats], Awaitable[asyncio.Server]]


class ServerThread:
    """Runs a handler's server (HTTP/2 here, or tests.fakes.h1server.serve) on its own
    event loop in a daemon thread."""

    def __init__(self, handler: Handler, context: ssl.SSLContext, serve: Serve = serve) -> None:
        self._handler = handler
        self._context = context
        self._serve = serve
        self.stats = ServerStats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-http", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake HTTP server did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._serve(self._handler, self._context, self.stats)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.close()

    def call(self, callback: Callable[[], object]) -> None:
        """Run a callback on the server's loop (the fakes' state lives there)."""
        self._loop.call_soon_threadsafe(callback)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
