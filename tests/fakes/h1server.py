"""The same fake handlers served over HTTP/1.1 (keep-alive) and TLS, on aiohttp's server.

FCM's HTTP v1 API and Google's token endpoint speak HTTP/1.1 as well as HTTP/2; the FCM
sender uses HTTP/1.1 (see streamer.push.fcm), so its fake does too. aiohttp's low-level
server (C parser, no router) keeps the fake's own cost per request small.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path

from aiohttp import web

from tests.fakes.h2server import GoAway, Handler, Request, ServerStats


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def serve(
    handler: Handler, context: ssl.SSLContext, stats: ServerStats, port: int = 0
) -> asyncio.Server:
    async def answer(raw: web.BaseRequest) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in raw.headers.items()}
        # Connections are counted, not numbered, over HTTP/1.1 (no handler asks which).
        request = Request(raw.method, raw.raw_path, headers, await raw.read(), 0)
        reply = handler(request)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, GoAway):
            raise TypeError("GOAWAY is HTTP/2 only")
        response = web.Response(status=reply.status, body=reply.body)
        for name, value in reply.headers:
            response.headers[name] = value
        return response

    server = web.Server(answer, access_log=None)

    def connection() -> asyncio.Protocol:
        stats.connections += 1
        return server()

    loop = asyncio.get_running_loop()
    return await loop.create_server(connection, "127.0.0.1", port, ssl=context)
