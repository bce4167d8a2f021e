"""One TCP connection of the gateway: websockets' sans-I/O protocol under thin asyncio glue.

No task and no buffer per connection while it is idle: bytes in go through
``ServerProtocol.receive_data`` and come out as events handled at once; bytes out are
written straight to the transport. Frames the gateway sends to many sockets are framed
once (``text_frame``) and written as they are, bypassing the protocol object: the server
never fragments its messages, so whole frames written between the protocol's own writes
(pings, pongs, the close frame) keep the stream valid, and nothing is written once the
protocol has left the OPEN state.

Keepalive pings, the handshake timeout, the closing timeout and token expiry are checked
for all connections by one sweeper task (``sweep``), not by a timer per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from streamer.contract.websocket import CloseCode

log = logging.getLogger(__name__)

# websockets' own per-connection logging, shared (a logger lookup per connection costs).
_WS_LOGGER = logging.getLogger("websockets.server")


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, final text frame (RFC 6455 5.2): what a server sends."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


class Listener(TypingProtocol):
    """What a connection reports to the gateway."""

    def on_request(self, conn: Connection, request: Request) -> None: ...

    def on_message(self, conn: Connection, message: bytes) -> None: ...

    def on_closed(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """A client connection: the handshake, then a WebSocket. ``session`` is attached by the
    gateway once the handshake is accepted."""

    __slots__ = (
        "_closed_at",
        "_fragments",
        "_held",
        "_held_bytes",
        "_listener",
        "_ping_sent_at",
        "_sndbuf",
        "_ws",
        "closing_since",
        "last_seen",
        "opened_at",
        "session",
        "transport",
    )

    def __init__(self, listener: Listener, max_size: int, send_buffer_bytes: int) -> None:
        self._listener = listener
        self._ws = ServerProtocol(max_size=max_size, logger=_WS_LOGGER)
        self.transport: asyncio.Transport | None = None
        self.session: object | None = None
        now = time.monotonic()
        self.opened_at = now
        self.last_seen = now
        self._ping_sent_at = 0.0
        self.closing_since = 0.0
        self._closed_at = 0.0
        self._fragments: list[bytes] | None = None
        self._held: list[bytes] | None = None  # messages sent in this pass of the loop
        self._held_bytes = 0
        self._sndbuf = send_buffer_bytes

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and self._sndbuf:
            # Cap what the kernel queues for a client that does not read, so the send bound
            # (WS_SEND_BUFFER_BYTES, counted in user space) is reached early instead of after
            # megabytes of kernel memory per socket.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self._listener.on_request(self, event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self.flush()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed_at = time.monotonic()
        self._listener.on_closed(self)

    # --- frames in ------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        opcode, data = frame.opcode, bytes(frame.data)
        if opcode is Opcode.PONG:
            self._ping_sent_at = 0.0
            return
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode is Opcode.TEXT, data)
            else:
                self._fragments = [bytes([opcode is Opcode.TEXT]), data]
            return
        if opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(data)
            if frame.fin:
                parts, self._fragments = self._fragments, None
                self._message(parts[0] == b"\x01", b"".join(parts[1:]))
        # Pings are answered and closes handled by the protocol itself.

    def _message(self, text: bool, data: bytes) -> None:
        if text and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                self._ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
        self._listener.on_message(self, data)

    # --- out ------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._ws.state is State.OPEN and self.transport is not None

    @property
    def state(self) -> State:
        return self._ws.state

    def buffered(self) -> int:
        """Bytes sent but not yet taken by the kernel."""
        if self.transport is None:
            return 0
        return self._held_bytes + self.transport.get_write_buffer_size()

    def send(self, wire: bytes) -> None:
        """Write an already framed message (``text_frame``). The caller checked ``open``.

        Messages sent in one pass of the event loop leave together, in one write at its end:
        an inbox batch with several events for a socket costs one system call, not one per
        event (the write, mostly kernel time on the loopback or NIC path, was the largest
        cost per frame). Order is kept: ``flush`` releases them before protocol frames."""
        held = self._held
        if held is None:
            self._held = [wire]
            asyncio.get_running_loop().call_soon(self._release)
        else:
            held.append(wire)
        self._held_bytes += len(wire)

    def _release(self) -> None:
        held, self._held = self._held, None
        self._held_bytes = 0
        transport = self.transport
        if held and transport is not None and not transport.is_closing():
            transport.write(held[0] if len(held) == 1 else b"".join(held))

    def send_text(self, payload: bytes) -> None:
        if self.open:
            self.send(text_frame(payload))

    def respond(self, response: Response) -> None:
        """The handshake's answer: 101 opens the WebSocket, anything else ends the request
        (the connection closes once the answer is written)."""
        self._ws.send_response(response)
        self.flush()
        if response.status_code != 101 and self.transport is not None:
            self.transport.close()

    def accept(self, request: Request, subprotocol: Subprotocol | None) -> Response:
        """The 101 response for a valid upgrade request (or the error the protocol finds in
        it). ``subprotocol`` is selected when the client offered it: browsers fail a
        handshake that offered subprotocols and got none back, so the gateway selects the
        one that carried the token."""
        self._ws.available_subprotocols = [subprotocol] if subprotocol else None
        return self._ws.accept(request)

    def reject(self, status: int, text: str) -> Response:
        return self._ws.reject(status, text)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the sweeper drops the connection if the client does
        not complete it in time."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, reason)
            self.flush()

    def ping(self, now: float) -> None:
        if self._ws.state is State.OPEN and not self._ping_sent_at:
            self._ping_sent_at = now
            self._ws.send_ping(b"")
            self.flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self._held:
            self._release()  # messages sent before a pong or a close frame go first
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self._ws.close_expected() and not self.closing_since:
            self.closing_since = time.monotonic()
            if self._ws.state is State.CLOSED:
                transport.close()

    def close_code(self) -> int:
        """The close code that ended the connection (sent or received), 1006 when none."""
        ws = self._ws
        if ws.close_sent is not None and (ws.close_rcvd is None or ws.close_rcvd_then_sent):
            return int(ws.close_sent.code)
        if ws.close_rcvd is not None:
            return int(ws.close_rcvd.code)
        return 1006

    # --- the sweeper's checks ---------------------------------------------------------------

    def overdue(
        self, now: float, handshake_s: float, close_s: float, ping_s: float, pong_s: float
    ) -> bool:
        """Whether to drop this connection now: a handshake not done in time (slowloris), a
        closing handshake the client does not complete, a ping without answer. Sends the
        next keepalive ping when one is due."""
        state = self._ws.state
        if state is State.CONNECTING:
            return self.session is None and now - self.opened_at > handshake_s
        if self.closing_since or state is not State.OPEN:
            return now - (self.closing_since or now) > close_s
        if self._ping_sent_at:
            return now - self._ping_sent_at > pong_s
        if now - self.last_seen > ping_s:
            self.ping(now)
        return False


Factory = Callable[[], Connection]
