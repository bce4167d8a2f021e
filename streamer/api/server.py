"""`streamer api`: the HTTP publish API, for producers that speak neither Redis nor AMQP.

Its own process kind (not a route of the gateway): it scales with producers, not sockets;
a burst of publishes never competes with socket writes for the gateway's event loop; and its
credentials (API keys) differ from the sockets' (JWTs). It is a thin shell over
``streamer.producer``: the same checks, partitions and pipelining as a Python producer,
with the idempotency window on (PUBLISH_DEDUPE_TTL_S).

Routes (``ROUTES``; the OpenAPI document, ``streamer.api.openapi``, lists exactly these):
- ``POST /api/publish``: one event, the body is its JSON, as on the stream;
- ``POST /api/publish/batch``: ``{"events": [...]}``, at most API_MAX_BATCH, all or none;
- ``GET /api/openapi.json``, ``/healthz``, ``/livez``, ``/readyz``, ``/metrics``.

Answers: 202 with the stream ids; 400 for an invalid body (nothing written); 401 without a
valid ``Authorization: apikey <key>``; 413 for a body over API_MAX_BODY_BYTES; 503 with
Retry-After while Redis fails (a retry with the same ids writes each event once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.api import openapi
from streamer.api.auth import CHALLENGE, authorized
from streamer.api.settings import ApiSettings
from streamer.infra import metrics
from streamer.infra.errors import InvalidEvent, RetryableError
from streamer.infra.http import HealthTracker, alive, bind_error
from streamer.infra.redis import REDIS_ERRORS
from streamer.producer import Entry, Producer, Published

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLISH = "/api/publish"
PUBLISH_BATCH = "/api/publish/batch"
OPENAPI = "/api/openapi.json"
_PING_INTERVAL_S = 2.0  # how often Redis is pinged for /readyz and /healthz when idle


class BatchBody(msgspec.Struct, frozen=True):
    """``POST /api/publish/batch``: the events stay raw JSON, checked one by one (so an error
    names its index) and written as sent."""

    events: list[msgspec.Raw]


_batch_decoder = msgspec.json.Decoder(BatchBody)
_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An answer other than 2xx: status, a stable code, and a detail for humans."""

    def __init__(self, status: int, code: str, detail: str, **headers: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode(body), content_type="application/json", headers=headers
    )


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status, {"error": exc.code, "detail": exc.detail}, exc.headers)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def decode_batch(raw: bytes, max_batch: int) -> list[bytes]:
    """The events of a batch body, each as sent; raises ApiError (400)."""
    try:
        events = _batch_decoder.decode(raw).events
    except msgspec.ValidationError as exc:
        raise ApiError(400, "schema", f"batch: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"batch: {exc}") from None
    if not events:
        raise ApiError(400, "empty_batch", "events: at least one event is required")
    if len(events) > max_batch:
        raise ApiError(400, "too_many_events", f"events: {len(events)}, limit {max_batch}")
    return [bytes(e) for e in events]


class Api:
    """The routes, over one producer (with its idempotency window) and a health tracker."""

    def __init__(self, producer: Producer, settings: ApiSettings, health: HealthTracker) -> None:
        self.producer = producer
        self.settings = settings
        self.health = health

    def routes(self) -> dict[tuple[str, str], Handler]:
        """(method, path) -> handler: everything this server answers."""
        return {
            ("POST", PUBLISH): self.publish,
            ("POST", PUBLISH_BATCH): self.publish_batch,
            ("GET", OPENAPI): self.openapi,
            ("GET", "/healthz"): self.probe(self.health),
            ("GET", "/livez"): self.probe(alive),
            ("GET", "/readyz"): self.probe(self.health.ready),
            ("GET", "/metrics"): self.metrics,
        }

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self.observe]
        )
        for (method, path), handler in self.routes().items():
            app.router.add_route(method, path, handler)
        app.cleanup_ctx.append(self._pinger)
        return app

    # --- publish --------------------------------------------------------------------------

    async def publish(self, request: web.Request) -> web.Response:
        raw = await self._authorized_body(request)
        (result,) = await self._append(self._prepare(raw))
        return _json(202, _result(result))

    async def publish_batch(self, request: web.Request) -> web.Response:
        raw = await self._authorized_body(request)
        results = await self._append(self._prepare(decode_batch(raw, self.settings.max_batch)))
        return _json(202, {"results": [_result(r) for r in results]})

    async def _authorized_body(self, request: web.Request) -> bytes:
        # Authenticate before reading: an unauthenticated body is never buffered.
        if not authorized(request.headers.get("Authorization"), self.settings.api_keys):
            raise ApiError(401, "unauthorized", "send Authorization: apikey <key>",
                           **{"WWW-Authenticate": CHALLENGE})  # fmt: skip
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self.settings.max_body_bytes
            raise ApiError(413, "too_large", f"body over {limit} bytes") from None

    def _prepare(self, body: bytes | list[bytes]) -> list[Entry]:
        """One event (a body) or a batch's events, checked; a batch's error names its index."""
        try:
            if isinstance(body, bytes):
                return [self.producer.prepare(body)]
            return self.producer.prepare_many(body)
        except InvalidEvent as exc:
            raise ApiError(400, exc.reason, str(exc)) from None

    async def _append(self, entries: list[Entry]) -> list[Published]:
        try:
            results = await self.producer.append(entries)
        except RetryableError as exc:
            if self.health.ready()[0]:  # once per outage, not once per request
                log.warning("publishing fails, answering 503 until Redis answers: %s", exc)
            self.health.failed("redis")
            retry = str(self.settings.retry_after_s)
            raise ApiError(503, "unavailable", "Redis is unreachable; retry later",
                           **{"Retry-After": retry}) from None  # fmt: skip
        self.health.ok("redis")
        for result in results:
            metrics.API_EVENTS.labels("duplicate" if result.duplicate else "written").inc()
        return results

    # --- everything else ------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(200, openapi.document())

    def probe(self, check: Callable[[], tuple[bool, str]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            healthy, detail = check()
            return _text(200 if healthy else 503, detail)

        return handler

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @web.middleware
    async def observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn ApiErrors into JSON answers, and count and time every request by route."""
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error(exc)
        except web.HTTPException as exc:  # aiohttp's own 404, 405 (which names the methods)
            response = _text(exc.status, f"{exc.reason.lower()}\n")
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        metrics.API_REQUESTS.labels(route, str(response.status)).inc()
        metrics.API_LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

    async def _pinger(self, app: web.Application) -> AsyncIterator[None]:
        """Ping Redis in the background, so an idle API's /readyz knows Redis is down."""
        closing = asyncio.Event()
        task = asyncio.create_task(self._ping_until(closing))
        yield
        # The flag as well as the cancel: redis-py may swallow a cancel that lands while it
        # connects, and the loop must still end (seen in the tests: a 15 s shutdown).
        closing.set()
        task.cancel()
        await asyncio.wait({task}, timeout=_PING_INTERVAL_S)

    async def _ping_until(self, closing: asyncio.Event) -> None:
        while not closing.is_set():
            try:
                await self.producer.client.ping()  # type: ignore[misc]  # typed sync or async
                self.health.ok("redis")
            except REDIS_ERRORS:
                self.health.failed("redis")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), _PING_INTERVAL_S)


def _result(result: Published) -> dict[str, Any]:
    return {"id": result.stream_id, "duplicate": result.duplicate}


async def start(api: Api, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``api`` on host:port (0: a free one); the runner and the port bound."""
    runner = web.AppRunner(api.app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise bind_error("API_PORT", host, port, exc) from None
    return runner, int(runner.addresses[0][1])


async def run_api(settings: ApiSettings) -> None:
    producer = Producer.from_settings(settings.producer, client_name="streamer-api")
    health = HealthTracker(settings.health_threshold_s, time.monotonic)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, port = await start(Api(producer, settings, health), settings.host, settings.port)
        log.info("publish API on http://%s:%d%s", settings.host, port, PUBLISH)
        await stop.wait()
        log.info("stopping: finishing requests in flight")
        await runner.cleanup()
    finally:
        await producer.aclose()
