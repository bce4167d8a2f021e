"""A tiny asyncio HTTP endpoint for /metrics and /healthz on worker and bridge processes.

It runs on the process's own event loop, so a blocked loop also fails its health check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthCheck = Callable[[], tuple[bool, str]]

_MAX_REQUEST_BYTES = 8192


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def render(path: str, health: HealthCheck) -> bytes:
    if path == "/metrics":
        return _response("200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
    if path == "/healthz":
        healthy, detail = health()
        status = "200 OK" if healthy else "503 Service Unavailable"
        return _response(status, "text/plain; charset=utf-8", detail.encode())
    return _response("404 Not Found", "text/plain; charset=utf-8", b"not found\n")


async def serve_metrics(host: str, port: int, health: HealthCheck) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            parts = head[:_MAX_REQUEST_BYTES].split(b" ", 2)
            path = parts[1].decode("ascii", "replace").split("?", 1)[0] if len(parts) > 1 else "/"
            writer.write(render(path, health))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
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
