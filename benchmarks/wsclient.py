"""A lean WebSocket client for the benchmarks' load processes (not for production).

The load process shares the machine's cores with the servers it measures, so its own CPU per
frame must be small: one asyncio.Protocol per socket, a fixed handshake, and a parser that
only understands what a server sends (unmasked frames, no extensions). Text payloads go to a
callback; pings are answered; anything else closes the socket.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable

_KEY = base64.b64encode(os.urandom(16)).decode()
_MASK = b"\x00\x00\x00\x00"  # clients must mask; a zero key keeps the payload as is


class WsClient(asyncio.Protocol):
    __slots__ = ("_buf", "_on_open", "_on_text", "_open", "_request", "closed", "transport")

    def __init__(
        self,
        host: str,
        path: str,
        on_text: Callable[[bytes], None],
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._on_text = on_text
        self._on_open = on_open
        self._buf = bytearray()
        self._open = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, payload: bytes) -> None:
        """A masked text frame (payloads under 126 bytes: client control messages)."""
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + _MASK + payload)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self._open = True
            if self._on_open is not None:
                self._on_open()
        self._frames()

    def _frames(self) -> None:
        buf = self._buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            if opcode == 1:
                self._on_text(bytes(buf[start:end]))
            elif opcode == 9:  # ping: answer with a pong carrying the same data
                assert self.transport is not None
                pong = bytes(buf[start:end])
                self.transport.write(bytes((0x8A, 0x80 | len(pong))) + _MASK + pong)
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
            pos = end
        if pos:
            del buf[:pos]


async def open_socket(
    port: int,
    path: str,
    on_text: Callable[[bytes], None],
    timeout_s: float = 60.0,
) -> WsClient:
    """Connect to 127.0.0.1:``port`` and complete the handshake."""
    loop = asyncio.get_running_loop()
    opened = loop.create_future()

    def on_open() -> None:
        if not opened.done():
            opened.set_result(None)

    _, client = await loop.create_connection(
        lambda: WsClient(f"127.0.0.1:{port}", path, on_text, on_open), "127.0.0.1", port
    )
    await asyncio.wait_for(asyncio.shield(opened), timeout_s)
    return client


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; returns the new soft limit."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
