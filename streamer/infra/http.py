"""A tiny asyncio HTTP endpoint for /metrics and /healthz on worker and bridge processes.

It runs on the process's own event loop, so a blocked loop also fails its health check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

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
    """The whole HTTP response for one request. HEAD gets the headers of GET, no body."""
    if not method:
        response = _response("400 Bad Request", _TEXT, b"bad request\n")
    elif method not in ("GET", "HEAD"):
        response = _response("405 Method Not Allowed", _TEXT, b"method not allowed\n")
    elif path == "/metrics":
        response = _response("200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
    elif path == "/healthz":
        healthy, detail = health()
        status = "200 OK" if healthy else "503 Service Unavailable"
        response = _response(status, _TEXT, detail.encode())
    else:
        response = _response("404 Not Found", _TEXT, b"not found\n")
    return response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == "HEAD" else response


def parse_request_line(head: bytes) -> tuple[str, str]:
    """(method, path without query) of a request head; ("", "/") when it is garbage."""
    parts = head[:_MAX_REQUEST_BYTES].split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return "", "/"
    method, target = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")
    return method, target.split("?", 1)[0]


async def serve_metrics(host: str, port: int, health: HealthCheck) -> asyncio.Server:
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

    return await asyncio.start_server(handle, host, port)


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
        now = self._clock()
        down = [d for d, since in self._failing_since.items() if now - since > self._threshold_s]
        if down:
            return False, f"unreachable: {', '.join(sorted(down))}\n"
        return True, "ok\n"
