"""A lean HTTP/2 server for the benchmark's fake providers (``python -m tests.fakes``).

The `h2` server (tests.fakes.h2server) costs ~350 µs of CPU per request, more than the
client under test, so on a 2-core machine the fake, not the client, would set the pace.
This one serves the same handlers with streamer's own frame and HPACK codecs
(streamer.push.http2), doing only what a server owes these clients: the preface and
SETTINGS, SETTINGS and PING acknowledgements, connection flow control both ways, HEADERS
with CONTINUATION, DATA, RST_STREAM, and GOAWAY. The tests keep the `h2` server, so the client
is always checked against an independent implementation.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import cast

from streamer.push.http2 import frames as f
from streamer.push.http2.hpack import EVERY_FIELD, Decoder, Encoder
from tests.fakes.h2server import Fallback, GoAway, Handler, Reply, Request, ServerStats

CONNECTION_WINDOW = 1 << 24
SETTINGS = {f.MAX_CONCURRENT_STREAMS: 1000, f.INITIAL_WINDOW_SIZE: 1 << 20}
GOAWAY_DEBUG = b'{"reason":"Shutdown"}'


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, stats: ServerStats, fallback: Fallback | None) -> None:
        self._handler = handler
        self._stats = stats
        self._fallback = fallback
        self._id = next(stats._ids)
        self._transport: asyncio.Transport | None = None
        self._preface = b""
        self._reader = f.FrameReader()
        self._decoder = Decoder(EVERY_FIELD)
        self._encoder = Encoder()
        self._out = bytearray()
        self._streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self._continuing: tuple[int, int, bytearray] | None = None
        self._receive_window = CONNECTION_WINDOW
        self._send_window = f.DEFAULT_WINDOW
        self._waiting: deque[tuple[int, bytes]] = deque()  # bodies waiting for the window
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            if self._fallback is None:
                transport.close()
                return
            http1 = self._fallback()
            transport.set_protocol(http1)
            http1.connection_made(transport)
            return
        self._transport = transport
        self._stats.connections += 1
        self._out += f.settings_frame(SETTINGS)
        self._out += f.u32_frame(f.WINDOW_UPDATE, 0, CONNECTION_WINDOW - f.DEFAULT_WINDOW)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if len(self._preface) < len(f.PREFACE):
            data = self._preface_rest(data)
        try:
            for kind, flags, stream_id, payload in self._reader.feed(data):
                self._frame(kind, flags, stream_id, payload)
        except f.ProtocolError as exc:
            self._out += f.goaway_frame(0, exc.code, str(exc).encode())
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        self._flush()

    def _preface_rest(self, data: bytes) -> bytes:
        need = len(f.PREFACE) - len(self._preface)
        self._preface += data[:need]
        if not f.PREFACE.startswith(self._preface):
            raise ConnectionError("not an HTTP/2 client preface")
        return data[need:]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == f.HEADERS:
            block = f.unpad(flags, payload)
            if flags & f.PRIORITY_FLAG:
                block = block[5:]
            if flags & f.END_HEADERS:
                self._headers(stream_id, flags, block)
            else:
                self._continuing = (stream_id, flags, bytearray(block))
        elif kind == f.CONTINUATION:
            if self._continuing is None or self._continuing[0] != stream_id:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "CONTINUATION out of place")
            self._continuing[2].extend(payload)
            if flags & f.END_HEADERS:
                _, first, block = self._continuing
                self._continuing = None
                self._headers(stream_id, first, bytes(block))
        elif kind == f.DATA:
            self._data(stream_id, flags, payload)
        elif kind == f.SETTINGS and not flags & f.ACK:
            for setting, value in f.parse_settings(payload):
                if setting == f.HEADER_TABLE_SIZE:
                    self._encoder.resize(value)
            self._out += f.frame(f.SETTINGS, f.ACK, 0)
        elif kind == f.PING and not flags & f.ACK:
            self._out += f.frame(f.PING, f.ACK, 0, payload)
        elif kind == f.WINDOW_UPDATE and stream_id == 0:
            self._send_window += f.parse_u32(payload, "WINDOW_UPDATE")
            self._send_waiting()
        elif kind == f.RST_STREAM:
            self._streams.pop(stream_id, None)
        elif kind == f.GOAWAY and self._transport is not None:
            self._transport.close()

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        fields = self._decoder.decode(block)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}
        self._streams[stream_id] = (headers, bytearray())
        if flags & f.END_STREAM:
            self._dispatch(stream_id)

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        self._receive_window -= len(payload)
        if self._receive_window < CONNECTION_WINDOW // 2:
            self._out += f.u32_frame(f.WINDOW_UPDATE, 0, CONNECTION_WINDOW - self._receive_window)
            self._receive_window = CONNECTION_WINDOW
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream[1].extend(f.unpad(flags, payload))
            if flags & f.END_STREAM:
                self._dispatch(stream_id)

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
        if isinstance(reply, GoAway):  # this stream and any later: not processed
            self._out += f.goaway_frame(max(0, stream_id - 2), f.NO_ERROR, GOAWAY_DEBUG)
            self._flush()
            self._transport.close()
            self._transport = None
            return
        fields = [(b":status", str(reply.status).encode(), False)]
        fields += [(k.encode(), v.encode(), False) for k, v in reply.headers]
        fields.append((b"content-length", str(len(reply.body)).encode(), False))
        block = self._encoder.encode(fields)
        self._out += f.frame(
            f.HEADERS, f.END_HEADERS | (0 if reply.body else f.END_STREAM), stream_id, block
        )
        if reply.body:
            self._waiting.append((stream_id, reply.body))
            self._send_waiting()

    def _send_waiting(self) -> None:
        # Bodies are a few hundred octets, far below the stream windows the client grants;
        # only the connection window can run short.
        while self._waiting and len(self._waiting[0][1]) <= self._send_window:
            stream_id, body = self._waiting.popleft()
            self._send_window -= len(body)
            self._out += f.frame(f.DATA, f.END_STREAM, stream_id, body)

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(bytes(self._out))
        self._out.clear()


async def serve(
    handler: Handler,
    context: ssl.SSLContext,
    stats: ServerStats,
    port: int = 0,
    fallback: Fallback | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(handler, stats, fallback), "127.0.0.1", port, ssl=context
    )
