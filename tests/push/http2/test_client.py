"""The asyncio HTTP/2 pool over real TLS against the `h2` server (tests.fakes.h2server), a
server gone silent and a CONNECT proxy: connection reuse and limits, deadlines, liveness,
cancellation, proxies."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streamer.push.http2.client import Endpoint, Http2Pool, RequestFailed, Slots
from streamer.push.http2.connection import Response as Answer
from streamer.push.http2.proxy import Proxy
from streamer.push.tls import client_context
from tests.fakes import h2server, lean_h2server, silent
from tests.fakes.certs import PushCredentials, make_credentials
from tests.fakes.h2server import Reply, Request, Response, ServerThread
from tests.fakes.proxy import ConnectProxy
from tests.support.polling import eventually


class Held:
    """Answers 200 at once, except ``/hold`` requests, held until ``release``."""

    def __init__(self) -> None:
        self.seen = 0
        self._gate: asyncio.Event | None = None

    def handle(self, request: Request) -> Reply | asyncio.Future[Reply]:
        self.seen += 1
        if request.path != "/hold":
            return Response(200, b"ok")
        return asyncio.ensure_future(self._held())

    async def _held(self) -> Reply:
        if self._gate is None:
            self._gate = asyncio.Event()
        await self._gate.wait()
        return Response(200, b"late")

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> PushCredentials:
    return make_credentials(tmp_path_factory.mktemp("http2-client"))


def start(
    credentials: PushCredentials, serve: h2server.Serve = h2server.serve, app: Held | None = None
) -> tuple[ServerThread, Held]:
    app = app or Held()
    context = h2server.server_context(credentials.cert_file, credentials.key_file)
    return ServerThread(app.handle, context, serve).start(), app


@pytest.fixture
def server(credentials: PushCredentials) -> Iterator[tuple[ServerThread, Held]]:
    thread, app = start(credentials)
    yield thread, app
    thread.call(app.release)
    thread.stop()


def pool_for(
    credentials: PushCredentials, port: int, proxy: Proxy | None = None, **options: float
) -> Http2Pool:
    context = client_context(str(credentials.ca_file), ("h2",))
    return Http2Pool(Endpoint("127.0.0.1", port, context, proxy), **options)  # type: ignore[arg-type]


def fields(path: str = "/") -> list[tuple[bytes, bytes, bool]]:
    return [
        (b":method", b"POST", True),
        (b":scheme", b"https", True),
        (b":authority", b"127.0.0.1", True),
        (b":path", path.encode(), False),
    ]


def soon(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


def unwrap(outcome: Answer | RequestFailed, seconds: float) -> Answer:
    if isinstance(outcome, RequestFailed):
        raise outcome
    return outcome


def ask(pool: Http2Pool, path: str = "/", body: bytes = b"", seconds: float = 5.0) -> Any:
    """The server's response; raises RequestFailed."""
    return pool.request(fields(path), body, soon(seconds), unwrap)


async def test_concurrent_requests_share_one_connection(
    credentials: PushCredentials, server: tuple[ServerThread, Held]
) -> None:
    """Fifty requests at once travel as streams of one TLS connection."""
    thread, _ = server
    pool = pool_for(credentials, thread.port)
    try:
        answers = await asyncio.gather(*(ask(pool, body=b"{}") for _ in range(50)))
    finally:
        await pool.close()
    assert {(a.status, a.body) for a in answers} == {(200, b"ok")}
    assert thread.stats.connections == 1 and pool.connections_opened == 1


async def test_the_benchmark_fakes_lean_server_answers_alike(credentials: PushCredentials) -> None:
    """The benchmark serves the fakes with a lean HTTP/2 server; it answers this client as the
    `h2` one does, held answers and large bodies included."""
    thread, app = start(credentials, lean_h2server.serve)
    pool = pool_for(credentials, thread.port)
    try:
        held = asyncio.ensure_future(ask(pool, "/hold"))
        answers = await asyncio.gather(*(ask(pool, body=b"x" * 70_000) for _ in range(20)))
        thread.call(app.release)
        assert (await held).body == b"late"
    finally:
        await pool.close()
        thread.stop()
    assert {(a.status, a.body) for a in answers} == {(200, b"ok")}
    assert thread.stats.connections == 1


async def test_another_connection_opens_when_streams_run_out(credentials: PushCredentials) -> None:
    """The server allows 2 streams per connection: a third request opens a second connection
    instead of waiting; once answered, the streams are reused."""
    thread, app = start(credentials, functools.partial(h2server.serve, max_streams=2))
    pool = pool_for(credentials, thread.port)
    try:
        held = [asyncio.ensure_future(ask(pool, "/hold")) for _ in range(3)]
        await eventually(lambda: app.seen == 3, what="three held requests at the server")
        assert thread.stats.connections == 2
        thread.call(app.release)
        assert [a.body for a in await asyncio.gather(*held)] == [b"late"] * 3
        await ask(pool)
        assert thread.stats.connections == 2
    finally:
        await pool.close()
        thread.stop()


async def test_an_unanswered_request_ends_at_its_deadline_and_frees_its_stream(
    credentials: PushCredentials,
) -> None:
    """No answer by the deadline: RequestFailed, the stream is reset (the server sees
    RST_STREAM) and its slot is free for the next request on the same connection."""
    thread, app = start(credentials, functools.partial(h2server.serve, max_streams=1))
    pool = pool_for(credentials, thread.port, max_connections=1)
    try:
        started = time.monotonic()
        with pytest.raises(RequestFailed, match="deadline"):
            await ask(pool, "/hold", seconds=0.2)
        assert time.monotonic() - started < 2.5  # the deadline, plus at most one 1 s check
        await eventually(lambda: thread.stats.resets == 1, what="the server to see the reset")
        answer = await ask(pool)
        assert answer.body == b"ok" and thread.stats.connections == 1
    finally:
        thread.call(app.release)
        await pool.close()
        thread.stop()


async def test_a_server_that_stops_answering_is_dropped_after_an_unanswered_ping(
    credentials: PushCredentials,
) -> None:
    """A deadline passes, the PING that follows is not answered within the grace period: the
    connection is dropped, and the next request goes out on a new one."""
    thread, _ = start(credentials, silent.serve)
    pool = pool_for(credentials, thread.port, ping_grace_s=0.3)
    try:
        with pytest.raises(RequestFailed, match="deadline"):
            await ask(pool, seconds=0.2)
        with pytest.raises(RequestFailed, match="PING"):
            await ask(pool, seconds=10)
        with pytest.raises(RequestFailed):
            await ask(pool, seconds=0.2)
        assert thread.stats.connections == 2
    finally:
        await pool.close()
        thread.stop()


async def test_a_cancelled_request_resets_its_stream_and_returns_its_slot(
    credentials: PushCredentials, server: tuple[ServerThread, Held]
) -> None:
    """The caller gives up (its own timeout): RST_STREAM goes out and, with one request in
    flight allowed, the next request runs at once."""
    thread, app = server
    pool = pool_for(credentials, thread.port, max_in_flight=1)
    try:
        held = asyncio.ensure_future(ask(pool, "/hold", seconds=60))
        await eventually(lambda: app.seen == 1, what="the held request at the server")
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        answer = await asyncio.wait_for(ask(pool), 5)
        assert answer.body == b"ok"
        await eventually(lambda: thread.stats.resets == 1, what="the server to see the reset")
    finally:
        await pool.close()


async def test_a_server_without_http2_fails_the_request(credentials: PushCredentials) -> None:
    """No ALPN agreement on h2: the request fails, saying so."""
    context = h2server.server_context(credentials.cert_file, credentials.key_file, ("http/1.1",))
    thread = ServerThread(Held().handle, context).start()
    pool = pool_for(credentials, thread.port)
    try:
        with pytest.raises(RequestFailed, match="HTTP/2"):
            await ask(pool)
    finally:
        await pool.close()
        thread.stop()


async def test_a_refused_connection_fails_the_request(credentials: PushCredentials) -> None:
    """Nothing listening: RequestFailed naming the connection error, not a hang."""
    thread, _ = start(credentials)
    port = thread.port
    thread.stop()
    pool = pool_for(credentials, port)
    try:
        with pytest.raises(RequestFailed, match="cannot connect"):
            await ask(pool)
    finally:
        await pool.close()


async def test_requests_go_through_a_connect_proxy(
    credentials: PushCredentials, server: tuple[ServerThread, Held]
) -> None:
    """With a proxy, the connection is a CONNECT tunnel (with Proxy-Authorization), and TLS
    and HTTP/2 run end to end inside it."""
    target, _ = server
    proxy_app = ConnectProxy(authorization="Basic dTpw")
    proxy = ServerThread(Held().handle, None, proxy_app.serve).start()  # type: ignore[arg-type]
    pool = pool_for(credentials, target.port, Proxy("127.0.0.1", proxy.port, "Basic dTpw"))
    try:
        answer = await ask(pool, body=b"{}")
    finally:
        await pool.close()
        proxy.stop()
    assert answer.body == b"ok"
    line, headers = proxy_app.requests[0]
    assert line == f"CONNECT 127.0.0.1:{target.port} HTTP/1.1"
    assert headers["Proxy-Authorization"] == "Basic dTpw"


async def test_a_proxy_refusing_the_tunnel_fails_the_request(
    credentials: PushCredentials, server: tuple[ServerThread, Held]
) -> None:
    """A 407 from the proxy is a failed request naming the status."""
    target, _ = server
    proxy_app = ConnectProxy(authorization="Basic right")
    proxy = ServerThread(Held().handle, None, proxy_app.serve).start()  # type: ignore[arg-type]
    pool = pool_for(credentials, target.port, Proxy("127.0.0.1", proxy.port, "Basic wrong"))
    try:
        with pytest.raises(RequestFailed, match="407"):
            await ask(pool)
    finally:
        await pool.close()
        proxy.stop()


async def test_slots_serve_waiters_in_order_and_pass_on_a_cancelled_handover() -> None:
    """First come, first served; a waiter cancelled after being handed a slot passes it on."""
    slots, order = Slots(1), []
    await slots.acquire()

    async def take(name: str) -> None:
        await slots.acquire()
        order.append(name)

    first, second, third = (asyncio.ensure_future(take(n)) for n in "abc")
    await asyncio.sleep(0)
    slots.release()  # handed to "a"
    first.cancel()  # ... which is cancelled before it runs: "b" gets the slot
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["b"] and not third.done()
    slots.release()
    await third
    assert order == ["b", "c"] and first.cancelled() and second.done()
