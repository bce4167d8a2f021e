"""Plain HTTP answers on the gateway's port: probes, /metrics, /auth-check, static files,
and handshake rejections (with their rate-limited log lines)."""

from __future__ import annotations

import email.utils
import http
import time
from collections.abc import Callable
from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST
from websockets.datastructures import Headers
from websockets.http11 import Response

from streamer.contract.websocket import WS_PREFIX, SocketRequest, parse_socket_path
from streamer.infra import metrics as exported

TEXT = "text/plain; charset=utf-8"
CLIENT_JS = "/client.js"
DEMO = "/demo"
AUTH_CHECK = "/auth-check/"
# /readyz fails once the last successful heartbeat is this many periods old.
READY_HEARTBEATS = 3
REFUSAL_LOG_WINDOW_S = 10.0
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
    return response(200, exported.exposition(), CONTENT_TYPE_LATEST)


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


def readiness(
    health: tuple[bool, str], stopping: bool, beat_age_ms: float, heartbeat_ms: int
) -> tuple[bool, str]:
    """/readyz: take clients only while heartbeating (Redis reachable now), healthy and not
    shutting down (so load balancers drain a stopping gateway first)."""
    if stopping:
        return False, "stopping"
    if beat_age_ms > READY_HEARTBEATS * heartbeat_ms:
        return False, f"no heartbeat for {beat_age_ms:.0f} ms (redis unreachable?)"
    return health


def auth_check_target(target: str) -> SocketRequest | None:
    """``/auth-check/{user_id}?token=…`` read as the socket URL it stands for."""
    return parse_socket_path(WS_PREFIX + target[len(AUTH_CHECK) :])


def auth_answer(status: int, allow_origin: str | None) -> Response:
    """The verdict of /auth-check: the status only (as a handshake gives), readable by a
    page of an allowed origin (CORS)."""
    extra: tuple[tuple[str, str], ...] = (("Vary", "Origin"),)
    if allow_origin is not None:
        extra += (("Access-Control-Allow-Origin", allow_origin),)
    return response(status, f"{http.HTTPStatus(status).phrase}\n".encode(), TEXT, extra)


class RefusalLog:
    """Log lines for refused handshakes: one per (status, reason) per window, with how many
    more were refused since the last line, so a client retrying a bad token every second
    (or a scanner) cannot flood the log. Reasons come from a small fixed vocabulary."""

    def __init__(
        self, window_s: float = REFUSAL_LOG_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._logged_at: dict[tuple[int, str], float] = {}
        self._suppressed: dict[tuple[int, str], int] = {}

    def refused(self, status: int, reason: str) -> str | None:
        """The line to log for this refusal, or None while its window is still open."""
        key, now = (status, reason), self._clock()
        logged_at = self._logged_at.get(key)
        if logged_at is not None and now - logged_at < self._window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._logged_at[key] = now
        line = f"handshake refused: {status} {reason}"
        more = self._suppressed.pop(key, 0)
        if more and logged_at is not None:
            line += f" (and {more} more since {now - logged_at:.0f} s ago)"
        return line
