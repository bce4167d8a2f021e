"""The client side of one HTTP/2 connection (RFC 9113), sans I/O.

Feed it what the server sent (``receive``, which returns events) and write out what it has
to send (``data_to_send``). It keeps the protocol's promises on its own: it answers SETTINGS
and PING, honours the server's stream limit, frame size, header table size and flow-control
windows (request bodies wait for WINDOW_UPDATE), replenishes the server's windows, and on
GOAWAY or REFUSED_STREAM tells which requests the server never processed, so they can be
sent again elsewhere without risk of a duplicate.

What it asks of the server: no server push, a header table of 0 octets (see
``streamer.push.http2.hpack``), and 1 MiB windows, far above a provider's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from streamer.push.http2 import frames as f
from streamer.push.http2.hpack import Decoder, Encoder, Field

STREAM_WINDOW = 1 << 20  # our SETTINGS_INITIAL_WINDOW_SIZE: a response body is a few hundred octets
CONNECTION_WINDOW = 1 << 24
MAX_HEADER_BLOCK = 1 << 18  # a response's header block, HEADERS plus CONTINUATION
OUR_SETTINGS = {
    f.ENABLE_PUSH: 0,
    f.HEADER_TABLE_SIZE: 0,
    f.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
}


class Response(NamedTuple):
    status: int
    headers: Mapping[bytes, bytes]  # the fields the client asked for, by name; read-only
    body: bytes


class ResponseReceived(NamedTuple):
    stream_id: int
    response: Response


class StreamFailed(NamedTuple):
    """A request that ends without a response. ``unprocessed``: the server says it never
    acted on it (REFUSED_STREAM, or above GOAWAY's last stream id), so sending it again on
    another connection cannot duplicate it."""

    stream_id: int
    unprocessed: bool
    reason: str


class PingAcknowledged(NamedTuple):
    payload: bytes


class GoAwayReceived(NamedTuple):
    last_stream_id: int
    code: int
    debug: bytes


# Records made per request are NamedTuples: cheaper to make than frozen dataclasses.
Event = ResponseReceived | StreamFailed | PingAcknowledged | GoAwayReceived


class _Stream:
    __slots__ = ("body", "headers", "pending", "received", "send_window", "status")

    def __init__(self, send_window: int) -> None:
        self.send_window = send_window
        self.pending = b""  # request body not yet sent (flow control)
        self.status: int | None = None
        self.headers: Mapping[bytes, bytes] = {}
        self.body = b""
        self.received = 0


class ClientConnection:
    def __init__(self, wanted_headers: Iterable[bytes] = ()) -> None:
        self._out = bytearray(f.PREFACE)
        self._out += f.settings_frame(OUR_SETTINGS)
        self._out += f.u32_frame(f.WINDOW_UPDATE, 0, CONNECTION_WINDOW - f.DEFAULT_WINDOW)
        self._reader = f.FrameReader()
        self._encoder = Encoder()
        self._decoder = Decoder(frozenset((b":status", *wanted_headers)))
        self._streams: dict[int, _Stream] = {}
        self._blocked: dict[int, None] = {}  # streams whose body waits for a window, in order
        self._next_id = 1
        self._send_window = f.DEFAULT_WINDOW
        self._receive_window = CONNECTION_WINDOW
        self._peer_stream_window = f.DEFAULT_WINDOW
        self._peer_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        self._continuing: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self.settings_received = False  # the server's first SETTINGS arrived
        self.max_streams = 0  # the server's SETTINGS_MAX_CONCURRENT_STREAMS, once known
        self.goaway: GoAwayReceived | None = None
        self.closed = False
        self._handlers: dict[int, Callable[[int, int, bytes, list[Event]], None]] = {
            f.DATA: self._on_data,
            f.HEADERS: self._on_headers,
            f.CONTINUATION: self._on_continuation,
            f.RST_STREAM: self._on_rst_stream,
            f.SETTINGS: self._on_settings,
            f.PUSH_PROMISE: self._on_push_promise,
            f.PING: self._on_ping,
            f.GOAWAY: self._on_goaway,
            f.WINDOW_UPDATE: self._on_window_update,
        }

    # --- what the client does --------------------------------------------------------------
    def available(self) -> int:
        """How many more requests may start now (0 until the server's SETTINGS, and for
        good after GOAWAY, close or stream-id exhaustion)."""
        if not self.settings_received or self.goaway or self.closed:
            return 0
        if self._next_id > f.MAX_STREAM_ID:
            return 0
        return self.max_streams - len(self._streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def request(self, fields: Iterable[Field], body: bytes) -> int:
        """Start a request (pseudo-header fields first); returns its stream id. The caller
        checks ``available()`` first."""
        stream_id = self._next_id
        self._next_id += 2
        stream = self._streams[stream_id] = _Stream(self._peer_stream_window)
        self._send_headers(stream_id, self._encoder.encode(fields), not body)
        if body:
            stream.pending = body
            self._send_body(stream_id, stream)
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Abandon a request (a timeout): RST_STREAM(CANCEL); a late answer is ignored."""
        if self._streams.pop(stream_id, None) is not None and not self.closed:
            self._blocked.pop(stream_id, None)
            self._out += f.u32_frame(f.RST_STREAM, stream_id, f.CANCEL)

    def ping(self, payload: bytes) -> None:
        if not self.closed:
            self._out += f.frame(f.PING, 0, 0, payload)

    def close(self, code: int = f.NO_ERROR, reason: str = "") -> None:
        """Send GOAWAY; nothing more is sent after it. We accept no server streams, so the
        last stream id we report is 0."""
        if not self.closed:
            self._out += f.goaway_frame(0, code, reason.encode()[:256])
            self.closed = True

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # --- what the server sends -------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        """Raises frames.ProtocolError when the server broke the protocol; then ``close``
        with its code and drop the connection."""
        events: list[Event] = []
        for kind, flags, stream_id, payload in self._reader.feed(data):
            if self._continuing is not None and kind != f.CONTINUATION:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "header block interrupted")
            handler = self._handlers.get(kind)
            if handler is not None:  # PRIORITY and unknown types are ignored (§5.5)
                handler(flags, stream_id, payload, events)
        return events

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        self._consume_window(len(payload))  # padding counts too (§6.9.1)
        stream = self._stream(stream_id, "DATA")
        if stream is None:
            return
        stream.received += len(payload)
        if stream.received > STREAM_WINDOW:
            raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "stream window exceeded")
        if stream.status is None:
            self._fail(stream_id, "DATA before the response headers", events)
            return
        stream.body += f.unpad(flags, payload)
        if flags & f.END_STREAM:
            self._complete(stream_id, stream, events)

    def _consume_window(self, size: int) -> None:
        self._receive_window -= size
        if self._receive_window < 0:
            raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "connection window exceeded")
        if self._receive_window < CONNECTION_WINDOW // 2:
            self._out += f.u32_frame(f.WINDOW_UPDATE, 0, CONNECTION_WINDOW - self._receive_window)
            self._receive_window = CONNECTION_WINDOW

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = f.unpad(flags, payload)
        if flags & f.PRIORITY_FLAG:
            block = block[5:]
        if flags & f.END_HEADERS:
            self._header_block(stream_id, flags, block, events)
        else:
            self._continuing = (stream_id, flags, bytearray(block))

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if self._continuing is None or self._continuing[0] != stream_id:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "CONTINUATION out of place")
        _, first_flags, block = self._continuing
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "header block too large")
        if flags & f.END_HEADERS:
            self._continuing = None
            self._header_block(stream_id, first_flags, bytes(block), events)

    def _header_block(self, stream_id: int, flags: int, block: bytes, events: list[Event]) -> None:
        fields = self._decoder.decode(block)  # always: the HPACK state must stay in step
        stream = self._stream(stream_id, "HEADERS")
        if stream is None:
            return
        if stream.status is None:
            status = fields.get(b":status", b"")
            if not status.isdigit() or len(status) != 3:
                self._fail(stream_id, f"malformed :status {status!r}", events)
                return
            if status[0] == 0x31:  # 1xx: informational, the final answer follows
                return
            stream.status = int(status)
            stream.headers = fields
        if flags & f.END_STREAM:
            self._complete(stream_id, stream, events)

    def _on_rst_stream(
        self, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        code = f.parse_u32(payload, "RST_STREAM")
        if stream_id == 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if self._stream(stream_id, "RST_STREAM") is None:
            return
        del self._streams[stream_id]
        self._blocked.pop(stream_id, None)
        refused = code == f.REFUSED_STREAM
        events.append(StreamFailed(stream_id, refused, f"stream reset by the server ({code})"))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise f.ProtocolError(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            # From now on the server's encoder may use no more than we allow (§6.5.3).
            self._decoder.limit = OUR_SETTINGS[f.HEADER_TABLE_SIZE]
            return
        if not self.settings_received:
            self.max_streams = f.MAX_STREAM_ID  # no limit until the server names one (§6.5.2)
        for setting, value in f.parse_settings(payload):
            self._apply_setting(setting, value)
        self.settings_received = True
        self._out += f.frame(f.SETTINGS, f.ACK, 0)
        self._resume_bodies()

    def _apply_setting(self, setting: int, value: int) -> None:
        if setting == f.HEADER_TABLE_SIZE:
            self._encoder.resize(value)
        elif setting == f.MAX_CONCURRENT_STREAMS:
            self.max_streams = value
        elif setting == f.INITIAL_WINDOW_SIZE:
            if value > f.MAX_WINDOW:
                raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "initial window too large")
            delta, self._peer_stream_window = value - self._peer_stream_window, value
            for stream in self._streams.values():  # applies to open streams too (§6.9.2)
                stream.send_window += delta
                if stream.send_window > f.MAX_WINDOW:
                    raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "stream window overflow")
        elif setting == f.MAX_FRAME_SIZE:
            if not f.DEFAULT_MAX_FRAME_SIZE <= value <= f.LARGEST_FRAME_SIZE:
                raise f.ProtocolError(f.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
            self._peer_max_frame = value

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes, _: list[Event]) -> None:
        raise f.ProtocolError(f.PROTOCOL_ERROR, "PUSH_PROMISE, though push is disabled")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise f.ProtocolError(f.FRAME_SIZE_ERROR, "PING payload is not 8 octets")
        if flags & f.ACK:
            events.append(PingAcknowledged(payload))
        elif not self.closed:
            self._out += f.frame(f.PING, f.ACK, 0, payload)

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "GOAWAY on a stream")
        last, code, debug = f.parse_goaway(payload)
        if self.goaway is not None:
            last = min(last, self.goaway.last_stream_id)  # it may only go down
        self.goaway = GoAwayReceived(last, code, debug)
        for unprocessed in [s for s in self._streams if s > last]:
            del self._streams[unprocessed]
            self._blocked.pop(unprocessed, None)
            events.append(StreamFailed(unprocessed, True, f"GOAWAY ({code}) before it was read"))
        events.append(self.goaway)

    def _on_window_update(
        self, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        increment = f.parse_u32(payload, "WINDOW_UPDATE")
        if stream_id == 0:
            if increment == 0:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW:
                raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self._stream(stream_id, "WINDOW_UPDATE")
            if stream is None:
                return
            stream.send_window += increment
            if increment == 0 or stream.send_window > f.MAX_WINDOW:
                self._fail(stream_id, f"bad WINDOW_UPDATE of {increment}", events)
                return
        self._resume_bodies()

    # --- helpers ---------------------------------------------------------------------------
    def _stream(self, stream_id: int, what: str) -> _Stream | None:
        """The open stream, or None for one we closed or reset (its late frames are ignored).
        A frame on a stream we never opened breaks the protocol (§5.1)."""
        stream = self._streams.get(stream_id)
        if stream is None and (stream_id >= self._next_id or not stream_id & 1):
            raise f.ProtocolError(f.PROTOCOL_ERROR, f"{what} on idle stream {stream_id}")
        return stream

    def _send_headers(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        limit = self._peer_max_frame
        flags = f.END_STREAM if end_stream else 0
        if len(block) <= limit:
            self._out += f.frame(f.HEADERS, flags | f.END_HEADERS, stream_id, block)
            return
        self._out += f.frame(f.HEADERS, flags, stream_id, block[:limit])
        for start in range(limit, len(block), limit):
            last = start + limit >= len(block)
            chunk = block[start : start + limit]
            self._out += f.frame(f.CONTINUATION, f.END_HEADERS if last else 0, stream_id, chunk)

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        data = stream.pending
        while data:
            size = min(len(data), self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                self._blocked[stream_id] = None
                break
            chunk, data = (data, b"") if size == len(data) else (data[:size], data[size:])
            self._out += f.frame(f.DATA, 0 if data else f.END_STREAM, stream_id, chunk)
            self._send_window -= size
            stream.send_window -= size
        stream.pending = data
        if not data:
            self._blocked.pop(stream_id, None)

    def _resume_bodies(self) -> None:
        for stream_id in list(self._blocked):
            if self._send_window <= 0:
                return
            stream = self._streams.get(stream_id)
            if stream is None:
                del self._blocked[stream_id]
            else:
                self._send_body(stream_id, stream)

    def _complete(self, stream_id: int, stream: _Stream, events: list[Event]) -> None:
        del self._streams[stream_id]
        if stream.pending:  # answered before the whole body went out (§8.1): stop sending
            self._blocked.pop(stream_id, None)
            self._out += f.u32_frame(f.RST_STREAM, stream_id, f.NO_ERROR)
        response = Response(stream.status or 0, stream.headers, stream.body)
        events.append(ResponseReceived(stream_id, response))

    def _fail(self, stream_id: int, reason: str, events: list[Event]) -> None:
        """A stream error (§5.4.2): reset that stream, keep the connection."""
        self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        self._out += f.u32_frame(f.RST_STREAM, stream_id, f.PROTOCOL_ERROR)
        events.append(StreamFailed(stream_id, False, reason))
