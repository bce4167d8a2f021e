"""A forward proxy that serves HTTP CONNECT (RFC 9110 §9.3.6) and relays bytes both ways,
recording what it was asked; optionally it demands Proxy-Authorization (else 407)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from tests.fakes.h2server import Handler, ServerStats


class ConnectProxy:
    def __init__(self, authorization: str | None = None) -> None:
        self.authorization = authorization
        self.requests: list[tuple[str, dict[str, str]]] = []  # request line, headers

    async def serve(
        self, handler: Handler, context: ssl.SSLContext | None, stats: ServerStats
    ) -> asyncio.Server:
        """For tests.fakes.h2server.ServerThread; ``handler`` and ``context`` are unused."""
        return await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if line)
        self.requests.append((head[0], headers))
        target = head[0].split(" ")[1]
        if self.authorization and headers.get("Proxy-Authorization") != self.authorization:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            writer.close()
            return
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_relay(reader, upstream_writer), _relay(upstream_reader, writer))


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    writer.close()
