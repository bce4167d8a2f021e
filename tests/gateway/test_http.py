"""The gateway's plain HTTP answers: probes, /auth-check, and the rate-limited log of
refused handshakes (pure parts without I/O; the rest in-process on a private Redis)."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus

from streamer.gateway.http import RefusalLog, readiness
from tests.support.gateway import open_socket, running_gateway, token
from tests.support.processes import http_get
from tests.support.servers import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refusals_log_one_line_per_reason_per_window_with_a_count() -> None:
    """The first refusal of a reason is logged; the next ones within 10 s only counted and
    reported with the next line; another reason has its own window."""
    clock = Clock()
    refusals = RefusalLog(window_s=10, clock=clock)
    assert refusals.refused(401, "expired") == "handshake refused: 401 expired"
    assert [refusals.refused(401, "expired") for _ in range(5)] == [None] * 5
    assert refusals.refused(403, "wrong_user") == "handshake refused: 403 wrong_user"
    clock.now += 10
    assert refusals.refused(401, "expired") == (
        "handshake refused: 401 expired (and 5 more since 10 s ago)"
    )
    assert refusals.refused(401, "expired") is None


def test_readiness_needs_a_recent_heartbeat_and_no_shutdown() -> None:
    """Ready only while heartbeating (Redis reachable) and not stopping."""
    healthy = (True, "ok")
    assert readiness(healthy, False, 1000, 2000) == healthy
    assert readiness(healthy, False, 7000, 2000)[0] is False
    assert readiness(healthy, True, 0, 2000) == (False, "stopping")
    assert readiness((False, "inbox task ended"), False, 0, 2000)[0] is False


async def test_probes_answer_on_the_gateway_port(redis_server: RedisServer) -> None:
    """/livez and /readyz answer 200 on a running gateway, beside /healthz."""
    async with running_gateway(redis_server.url) as gateway:
        for path in ("/livez", "/readyz", "/healthz"):
            # A blocking client: in a thread, so the gateway's loop (this one) can answer.
            assert (await asyncio.to_thread(http_get, gateway.port, path))[0] == 200, path


async def test_auth_check_tells_a_browser_what_the_handshake_would_answer(
    redis_server: RedisServer,
) -> None:
    """GET /auth-check/{user}?token=…: 200 for a good token, 401 for a bad or expired one,
    403 for another user's; the status only, readable from an allowed origin (CORS)."""
    async with running_gateway(redis_server.url) as gateway:

        def check(path: str, origin: str | None = None) -> tuple[int, str | None]:
            request = urllib.request.Request(f"http://127.0.0.1:{gateway.port}{path}")
            if origin:
                request.add_header("Origin", origin)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(request, timeout=5) as response:
                    return response.status, response.headers.get("Access-Control-Allow-Origin")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers.get("Access-Control-Allow-Origin")

        good = f"/auth-check/mia?token={token('mia')}"
        assert await asyncio.to_thread(check, good, "http://app.example") == (
            200,
            "http://app.example",
        )
        for path, status in (
            (f"/auth-check/mia?token={token('mia', ttl_s=-60)}", 401),
            ("/auth-check/mia?token=not-a-jwt", 401),
            ("/auth-check/mia", 401),
            (f"/auth-check/mia?token={token('nils')}", 403),
            ("/auth-check/a%20b?token=x", 404),
        ):
            assert (await asyncio.to_thread(check, path))[0] == status, path


async def test_refused_handshakes_are_logged_rate_limited(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client retrying a bad token: one log line with the reason, not one per attempt."""
    caplog.set_level(logging.INFO, logger="streamer.gateway.server")
    async with running_gateway(redis_server.url) as gateway:
        for _ in range(5):
            with pytest.raises(InvalidStatus):
                await open_socket(gateway.port, "omar", token="bad")
    lines = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert lines == ["handshake refused: 401 invalid_token"]
