"""Clients that misbehave on purpose, below the WebSocket library: raw sockets that never
read, handshakes sent a byte at a time, frames built by hand."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

from tests.support.gateway import token


def upgrade_request(port: int, user: str) -> bytes:
    """The HTTP request that opens ``/ws/{user}`` with a valid token."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws/{user}?token={token(user, ttl_s=3600)} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def raw_connection(port: int, *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        # Set before connecting, so the window the client advertises stays this small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def never_reading_socket(port: int, user: str) -> socket.socket:
    """An open WebSocket whose client reads the 101 response and then nothing, ever."""
    loop = asyncio.get_running_loop()
    sock = await raw_connection(port, receive_buffer=4096)
    await loop.sock_sendall(sock, upgrade_request(port, user))
    response = b""
    async with asyncio.timeout(10):
        while not response.endswith(b"\r\n\r\n"):
            response += await loop.sock_recv(sock, 1)  # not one byte past the headers
    assert response.startswith(b"HTTP/1.1 101"), response.decode(errors="replace")
    return sock


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 5.2), any size."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + mask + _masked(payload, mask)


def _masked(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


async def close_code_from(sock: socket.socket, within_s: float = 10.0) -> int | None:
    """Read server frames (unmasked, RFC 6455 5.2) until a close frame: its code; None when
    the connection ends without one."""
    loop = asyncio.get_running_loop()
    buffer = b""

    async def need(count: int) -> bytes:
        nonlocal buffer
        while len(buffer) < count:
            data = await loop.sock_recv(sock, 65536)
            if not data:
                raise EOFError
            buffer += data
        taken, buffer = buffer[:count], buffer[count:]
        return taken

    try:
        async with asyncio.timeout(within_s):
            while True:
                first, second = await need(2)
                length = second & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await need(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await need(8))
                payload = await need(length)
                if first & 0x0F == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0]) if payload else 1005
    except (EOFError, ConnectionError):
        return None
