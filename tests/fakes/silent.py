"""An HTTP/2 server that goes silent: it completes TLS (ALPN h2) and sends its SETTINGS,
then reads and ignores everything, PING included, as a provider behind a dead link or a
hung process would. For tests of deadlines and liveness checks."""

from __future__ import annotations

import asyncio
import ssl

from streamer.push.http2 import frames
from tests.fakes.h2server import Handler, ServerStats


class _Silent(asyncio.Protocol):
    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._stats.connections += 1
        settings = frames.settings_frame({frames.MAX_CONCURRENT_STREAMS: 100})
        transport.write(settings)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        pass  # never answered


async def serve(handler: Handler, context: ssl.SSLContext, stats: ServerStats) -> asyncio.Server:
    """``handler`` is unused: nothing is ever answered."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Silent(stats), "127.0.0.1", 0, ssl=context)
