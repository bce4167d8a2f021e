"""Plain HTTP answers on the gateway's port: /healthz, /metrics, static files, rejections."""

from __future__ import annotations

import email.utils
import http
from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from websockets.datastructures import Headers
from websockets.http11 import Response

TEXT = "text/plain; charset=utf-8"
CLIENT_JS = "/client.js"
DEMO = "/demo"
_STATIC = {
    CLIENT_JS: ("notify-client.js", "text/javascript; charset=utf-8"),
    DEMO: ("demo.html", "text/html; charset=utf-8"),
}


def response(
    status: int, body: bytes, content_type: str = TEXT, extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    code = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            *extra,
        ]
    )
    return Response(code.value, code.phrase, headers, body)


def text(status: int, message: str) -> Response:
    return response(status, f"{message}\n".encode())


def rejection(status: int) -> Response:
    """A handshake refusal; the body never says why beyond the status (no oracle)."""
    extra = (("WWW-Authenticate", "Bearer"),) if status == 401 else ()
    return response(status, f"{http.HTTPStatus(status).phrase}\n".encode(), TEXT, extra)


def metrics() -> Response:
    return response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)


def health(healthy: bool, detail: str) -> Response:
    return text(200 if healthy else 503, detail)


def static(path: str, demo_mode: bool) -> Response | None:
    """The client library or the demo page; None when ``path`` is not a static route."""
    if path not in _STATIC or (path == DEMO and not demo_mode):
        return None
    name, content_type = _STATIC[path]
    resource = resources.files("streamer").joinpath("static", name)
    if not resource.is_file():
        return text(404, "not found")
    return response(200, resource.read_bytes(), content_type)
