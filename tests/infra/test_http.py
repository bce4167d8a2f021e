"""The /metrics and /healthz endpoint of worker and bridges, and its health tracker."""

from __future__ import annotations

import asyncio

from streamer.infra import metrics
from streamer.infra.http import HealthTracker, parse_request_line, render, serve_metrics


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return response


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_turns_bad_only_after_the_threshold() -> None:
    """A dependency failing for less than the threshold is tolerated; longer is unhealthy."""
    clock = FakeClock()
    health = HealthTracker(30.0, clock)
    health.failed("redis")
    clock.now += 29
    health.failed("redis")  # a repeated failure does not restart the clock
    assert health() == (True, "ok\n")
    clock.now += 2
    assert health() == (False, "unreachable: redis\n")
    health.ok("redis")
    assert health() == (True, "ok\n")


def test_request_line_parsing() -> None:
    """Method and path (query dropped) come from the request line; garbage gives no method."""
    assert parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == (
        "GET",
        "/metrics",
    )
    assert parse_request_line(b"HEAD /healthz HTTP/1.0\r\n\r\n") == ("HEAD", "/healthz")
    assert parse_request_line(b"\x16\x03\x01 garbage\r\n\r\n") == ("", "/")


def test_head_has_headers_and_no_body() -> None:
    """HEAD answers like GET without a body; other methods get 405, garbage 400."""
    head = render("/healthz", lambda: (True, "ok\n"), "HEAD")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(
        b"Content-Length: 3\r\nConnection: close\r\n\r\n"
    )
    assert render("/metrics", lambda: (True, ""), "POST").startswith(b"HTTP/1.1 405 ")
    assert render("/metrics", lambda: (True, ""), "").startswith(b"HTTP/1.1 400 ")


async def test_endpoint_serves_metrics_health_and_404() -> None:
    """GET /metrics is Prometheus text, /healthz follows the check, unknown paths are 404."""
    state = {"healthy": True}
    metrics.ACKED.inc(0)
    server = await serve_metrics("127.0.0.1", 0, lambda: (state["healthy"], "detail\n"))
    port = server.sockets[0].getsockname()[1]
    try:
        body = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert body.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Type: text/plain; version=" in body
        assert b"\n# TYPE streamer_worker_acked_total counter\n" in body
        assert (await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        state["healthy"] = False
        unhealthy = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert unhealthy.startswith(b"HTTP/1.1 503 ") and unhealthy.endswith(b"\r\n\r\ndetail\n")
        assert (await _get(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
    finally:
        server.close()
        await server.wait_closed()
