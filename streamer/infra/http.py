"""A tiny asyncio HTTP endpoint for /metrics and the probes of worker and bridge processes.

- ``/livez``: 200 whenever the process answers at all. It runs on the process's own event
  loop (a thread for the bridges), so a stuck loop fails it; a dependency being down never
  does, so an orchestrator restarts a process only when restarting can help.
- ``/readyz``: 503 while a dependency (Redis, the broker) is failing right now.
- ``/healthz``: 503 once a dependency has been failing for longer than HEALTH_THRESHOLD_S
  (unchanged, for existing checks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

from streamer.infra import metrics
from streamer.infra.errors import StartupError

HealthCheck = Callable[[], tuple[bool, str]]

_MAX_REQUEST_BYTES = 8192
_TEXT = "text/plain; charset=utf-8"


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def render(path: str, health: HealthCheck, method: str = "GET") -> bytes:
    """The whole HTTP response for one request. HEAD gets the headers of GET, no body.
    ``/readyz`` asks ``health.ready`` when ``health`` is a HealthTracker, else ``health``."""
    if not method:
        response = _response("400 Bad Request", _TEXT, b"bad request\n")
    elif method not in ("GET", "HEAD"):
        response = _response("405 Method Not Allowed", _TEXT, b"method not allowed\n")
    elif path == "/metrics":
        response = _response("200 OK", CONTENT_TYPE_LATEST, metrics.exposition())
    elif path in _PROBES:
        response = _verdict(*_PROBES[path](health)())
    else:
        response = _response("404 Not Found", _TEXT, b"not found\n")
    return response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == "HEAD" else response


def _verdict(healthy: bool, detail: str) -> bytes:
    status = "200 OK" if healthy else "503 Service Unavailable"
    return _response(status, _TEXT, detail.encode())


def alive() -> tuple[bool, str]:
    """The liveness verdict: answering at all is the proof."""
    return True, "ok\n"


def _ready(health: HealthCheck) -> HealthCheck:
    return health.ready if isinstance(health, HealthTracker) else health


_PROBES: dict[str, Callable[[HealthCheck], HealthCheck]] = {
    "/livez": lambda _: alive,
    "/readyz": _ready,
    "/healthz": lambda health: health,
}


def parse_request_line(head: bytes) -> tuple[str, str]:
    """(method, path without query) of a request head; ("", "/") when it is garbage."""
    parts = head[:_MAX_REQUEST_BYTES].split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return "", "/"
    method, target = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")
    return method, target.split("?", 1)[0]


async def serve_metrics(
    host: str, port: int, health: HealthCheck, *, variable: str = "METRICS_PORT"
) -> asyncio.Server:
    """Serve /metrics and the probes on ``host:port``. A port that cannot be bound raises
    StartupError naming ``variable``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path = parse_request_line(head)
            writer.write(render(path, health, method))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a scraper that sends no complete head within 5 s gets nothing
        except ConnectionError:
            pass
        finally:
            writer.close()

    try:
        return await asyncio.start_server(handle, host, port)
    except OSError as exc:
        raise bind_error(variable, host, port, exc) from None


def bind_error(variable: str, host: str, port: int, exc: OSError) -> StartupError:
    """The one-line error for a port that cannot be listened on."""
    return StartupError(
        f"{variable}: cannot listen on {host}:{port}: {exc.strerror or exc} "
        "(another process uses it? a `streamer up` still running?)"
    )


class HealthTracker:
    """Healthy unless a dependency has been unreachable for longer than a threshold."""

    def __init__(self, threshold_s: float, clock: Callable[[], float]) -> None:
        self._threshold_s = threshold_s
        self._clock = clock
        self._failing_since: dict[str, float] = {}

    def ok(self, dependency: str) -> None:
        self._failing_since.pop(dependency, None)

    def failed(self, dependency: str) -> None:
        self._failing_since.setdefault(dependency, self._clock())

    def __call__(self) -> tuple[bool, str]:
        """/healthz: unhealthy once a dependency has been down longer than the threshold."""
        now = self._clock()
        down = [d for d, since in self._failing_since.items() if now - since > self._threshold_s]
        if down:
            return False, f"unreachable: {', '.join(sorted(down))}\n"
        return True, "ok\n"

    def ready(self) -> tuple[bool, str]:
        """/readyz: not ready while any dependency is failing now."""
        if self._failing_since:
            return False, f"unreachable: {', '.join(sorted(self._failing_since))}\n"
        return True, "ok\n"
