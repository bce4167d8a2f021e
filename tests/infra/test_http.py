"""The /metrics and probe endpoint of worker and bridges (/livez, /readyz, /healthz), its
health tracker, and what a registered process exposes."""

from __future__ import annotations

import asyncio

import pytest

from streamer.infra import metrics
from streamer.infra.errors import StartupError
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


def test_readiness_follows_current_failures_liveness_never_does() -> None:
    """/readyz fails while a dependency is failing now (no threshold); /livez always answers
    200, so a Redis outage never gets a process restarted; /healthz keeps its threshold."""
    clock = FakeClock()
    health = HealthTracker(threshold_s=30, clock=clock)
    health.failed("redis")
    assert render("/readyz", health).startswith(b"HTTP/1.1 503 ")
    assert render("/livez", health).startswith(b"HTTP/1.1 200 ")
    assert render("/healthz", health).startswith(b"HTTP/1.1 200 ")
    clock.now += 31
    assert render("/healthz", health).startswith(b"HTTP/1.1 503 ")
    assert render("/livez", health).startswith(b"HTTP/1.1 200 ")
    health.ok("redis")
    assert render("/readyz", health).startswith(b"HTTP/1.1 200 ")


async def test_a_taken_port_is_a_startup_error_naming_the_variable() -> None:
    """Binding a port someone else holds fails with one StartupError naming the variable."""
    holder = await serve_metrics("127.0.0.1", 0, lambda: (True, "ok\n"))
    port = holder.sockets[0].getsockname()[1]
    try:
        with pytest.raises(
            StartupError, match=rf"^METRICS_PORT: cannot listen on 127.0.0.1:{port}"
        ):
            await serve_metrics("127.0.0.1", port, lambda: (True, "ok\n"))
    finally:
        holder.close()
        await holder.wait_closed()


def test_a_registered_process_exposes_only_what_it_owns() -> None:
    """After register("gateway") the exposition has the gateway's metrics and its build
    info, never the worker's stream lag (a gateway must not report a reassuring 0)."""
    try:
        metrics.register("gateway")
        text = metrics.exposition().decode()
        assert "streamer_gateway_open_sockets" in text
        assert 'streamer_build_info{component="gateway",version=' in text
        assert "streamer_stream_lag_entries" not in text
        assert "streamer_worker_" not in text
        metrics.register("worker")
        text = metrics.exposition().decode()
        assert "streamer_stream_lag_entries" in text and "streamer_push_sent_total" in text
        assert "streamer_gateway_" not in text
    finally:
        metrics.expose_everything()
