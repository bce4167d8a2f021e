"""HTTP/1.1 beside HTTP/2 on one port: FCM's token endpoint, which google-auth reaches over
urllib (HTTP/1.1), while the push client sends messages over HTTP/2.

A TLS connection that negotiates h2 is served by tests.fakes.h2server (the `h2` library);
one that offers only http/1.1 by aiohttp's low-level server (C parser, no router), with the
same handler.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path

from aiohttp import web

from tests.fakes import h2server
from tests.fakes.h2server import GoAway, Handler, Request, ServerStats


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    return h2server.server_context(cert_file, key_file, ("h2", "http/1.1"))


def http1(handler: Handler) -> h2server.Fallback:
    async def answer(raw: web.BaseRequest) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in raw.headers.items()}
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

    return web.Server(answer, access_log=None)


async def serve(
    handler: Handler, context: ssl.SSLContext, stats: ServerStats, port: int = 0
) -> asyncio.Server:
    """HTTP/2, or HTTP/1.1 for clients that offer only that."""
    return await h2server.serve(handler, context, stats, port, fallback=http1(handler))
