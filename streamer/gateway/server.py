"""The `streamer gateway` process: websockets server, inbox reader, heartbeat, ownership.

Start-up order matters: remove stale ownership left by an earlier process with this id,
skip the inbox to its end, heartbeat, and only then accept sockets. A socket's ownership
entry is written before its handshake completes, so once a client's socket is open every
later event reaches it through the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from streamer.contract.ids import MIN_ID, StreamId, parse_id
from streamer.contract.keys import Keys
from streamer.contract.websocket import (
    SUBPROTOCOL_PREFIX,
    CloseCode,
    close_code_label,
    event_frame,
    parse_history,
    parse_socket_path,
    route_path,
)
from streamer.gateway import http
from streamer.gateway.auth import (
    Denied,
    Granted,
    TokenVerifier,
    find_credentials,
    origin_allowed,
)
from streamer.gateway.inbox import InboxReader
from streamer.gateway.ownership import OwnershipBook, Presence
from streamer.gateway.resume import Frame
from streamer.gateway.session import Hub, Session
from streamer.gateway.settings import GatewaySettings
from streamer.infra import metrics
from streamer.infra.http import bind_error, serve_metrics
from streamer.infra.logs import redact
from streamer.infra.redis import REDIS_ERRORS, connect

log = logging.getLogger(__name__)

_HTTP_BAD_REQUEST = 400
_HTTP_TOO_MANY = 429
_HTTP_UNAVAILABLE = 503
# The send-buffer bound is enforced by Session before each send; websockets' own flow
# control must never make send() wait on drain(), or one slow socket would stall the fan-out.
_NEVER_PAUSE_WRITES = (1 << 31) - 1  # uvloop takes a C int


@dataclass(frozen=True, slots=True)
class _Admission:
    granted: Granted
    last_event_id: str | None
    history: int | None = None


class Gateway:
    def __init__(self, redis: aioredis.Redis, settings: GatewaySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = Keys.from_settings(settings.redis)
        self._verifier = TokenVerifier(settings.auth)
        self.gateway_id = settings.gateway_id
        self.hub = Hub()
        self._book = OwnershipBook(redis, self._keys, self.gateway_id, self._vanished)
        self._inbox = InboxReader(
            redis,
            self._keys.inbox(self.gateway_id),
            self.hub.deliver,
            settings.inbox_read_count,
            settings.inbox_block_ms,
        )
        self._replay_slots = asyncio.Semaphore(settings.replay_concurrency)
        self._admissions: dict[ServerConnection, _Admission] = {}
        self._sessions: dict[ServerConnection, tuple[Session, str | None, int | None]] = {}
        self._refusals = http.RefusalLog()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self._stopping = asyncio.Event()
        self._last_beat = time.monotonic()
        self._failure: str | None = None
        self.port = settings.port

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self._settings
        self._server = await serve(
            self._handle,
            s.host,
            s.port,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=self._select_subprotocol,
            compression=None,  # frames are encoded once and shared; per-socket deflate is not
            max_size=s.sockets.max_client_frame_bytes,
            ping_interval=s.sockets.ping_interval_s,
            ping_timeout=s.sockets.ping_timeout_s,
            close_timeout=s.sockets.close_timeout_s,
            write_limit=_NEVER_PAUSE_WRITES,
            start_serving=False,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._presence = Presence(
            self._redis, self._keys, self.gateway_id, self.port, int(time.time() * 1000)
        )
        try:
            await self._prepare()
        except BaseException:
            self._server.close()
            raise
        self._tasks = [
            asyncio.create_task(self._book.run(), name="ownership"),
            asyncio.create_task(self._inbox.run(), name="inbox"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        await self._server.start_serving()
        log.info("gateway %s listening on %s:%d", self.gateway_id, s.host, self.port)

    async def _prepare(self) -> None:
        stale = await self._book.clear()
        if stale:
            log.info("removed %d stale ownership entries of gateway %s", stale, self.gateway_id)
        await self._inbox.start_at_end()
        await self._presence.beat(0, 0)
        self._last_beat = time.monotonic()

    async def stop(self) -> None:
        """Close sockets with 1001, remove this gateway's ownership and presence."""
        self._stopping.set()
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        self._inbox.stop()
        with contextlib.suppress(asyncio.TimeoutError, *REDIS_ERRORS):
            await asyncio.wait_for(self._book.flushed(), self._settings.sockets.close_timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._book.clear()
        await self._presence.withdraw()
        log.info("gateway %s stopped", self.gateway_id)

    async def _heartbeat(self) -> None:
        interval_s = self._settings.heartbeat_ms / 1000
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            if self._stopping.is_set():
                return
            try:
                await self._presence.beat(self.hub.sockets, self._book.users)
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            self._book.reassert()  # rewrites every entry; reports any that had vanished
            now = time.monotonic()
            gap_ms = (now - self._last_beat) * 1000
            self._last_beat = now
            if gap_ms > self._settings.dead_after_ms:
                self._resync(gap_ms)

    def _resync(self, gap_ms: float) -> None:
        # Workers may have declared this gateway dead and routed events only to the user
        # logs: live sockets could have gaps. Reconnecting clients resume from their last id.
        log.warning(
            "no heartbeat for %.0f ms; asking %d sockets to resume", gap_ms, self.hub.sockets
        )
        self._book.reassert()
        for session in self.hub.all():
            session.close(CloseCode.RESYNC, "resync")

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # These tasks run until stop(): ending earlier is a bug. Fail health so the
        # orchestrator restarts the gateway instead of leaving sockets without deliveries.
        if task.cancelled() or self._stopping.is_set():
            return
        error = task.exception()
        self._failure = f"{task.get_name()} task ended: {error!r}"
        log.error("gateway %s: %s", self.gateway_id, self._failure, exc_info=error)

    def health(self) -> tuple[bool, str]:
        if self._failure is not None:
            return False, self._failure
        age_ms = (time.monotonic() - self._last_beat) * 1000
        if age_ms > self._settings.dead_after_ms:
            return False, f"no heartbeat for {age_ms:.0f} ms"
        return True, "ok"

    # --- handshake ------------------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = route_path(request.path)
        if path in ("/livez", "/readyz", "/healthz"):
            return http.health(*self._probe(path))
        if path == "/metrics":
            return http.metrics()
        if path.startswith(http.AUTH_CHECK):
            return self._auth_check(request)
        static = http.static(path, self._settings.demo_mode)
        if static is not None:
            return static
        target = parse_socket_path(request.path)
        if target is None:
            return http.text(404, "not found")
        if self._stopping.is_set():
            return self._reject(_HTTP_UNAVAILABLE, "stopping")
        if not origin_allowed(request.headers.get("Origin"), self._settings.auth.allowed_origins):
            return self._reject(403, "origin")
        credentials = find_credentials(
            request.headers.get("Authorization"), target.token, _offered(request.headers)
        )
        verdict = self._verifier.verify(credentials, target.user_id)
        if isinstance(verdict, Denied):
            return self._reject(verdict.status, verdict.reason)
        try:
            history = parse_history(target.history, self._settings.sockets.max_replay)
        except ValueError as exc:
            self._reject(_HTTP_BAD_REQUEST, "bad_history")
            return http.text(_HTTP_BAD_REQUEST, str(exc))
        if self.hub.count(target.user_id) >= self._settings.sockets.max_sockets_per_user:
            return self._reject(_HTTP_TOO_MANY, "too_many_sockets")
        self._admissions[conn] = _Admission(verdict, target.last_event_id, history)
        return None

    def _probe(self, path: str) -> tuple[bool, str]:
        """/livez: answering is the proof; /readyz: heartbeating now and not stopping;
        /healthz: as before (fails once the heartbeat is older than GATEWAY_DEAD_AFTER_MS)."""
        if path == "/livez":
            return True, "ok"
        if path == "/healthz":
            return self.health()
        beat_age_ms = (time.monotonic() - self._last_beat) * 1000
        return http.readiness(
            self.health(), self._stopping.is_set(), beat_age_ms, self._settings.heartbeat_ms
        )

    def _auth_check(self, request: Request) -> Response:
        """``GET /auth-check/{user_id}?token=JWT``: the status a handshake with this token
        would get from authentication (200, 401 or 403), for browsers, which cannot read a
        refused handshake's status."""
        target = http.auth_check_target(request.path)
        origin = request.headers.get("Origin")
        allowed = origin_allowed(origin, self._settings.auth.allowed_origins)
        if target is None:
            return http.auth_answer(404, origin if allowed else None)
        credentials = find_credentials(
            request.headers.get("Authorization"), target.token, _offered(request.headers)
        )
        verdict = self._verifier.verify(credentials, target.user_id)
        status = verdict.status if isinstance(verdict, Denied) else 200
        return http.auth_answer(status if allowed else 403, origin if allowed else None)

    def _select_subprotocol(
        self, conn: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        # Browsers fail a handshake that offered subprotocols and got none back.
        admission = self._admissions.get(conn)
        chosen = None if admission is None else admission.granted.subprotocol
        if chosen is not None and chosen in offered:
            return Subprotocol(chosen)
        return next((p for p in offered if p.startswith(SUBPROTOCOL_PREFIX)), None)

    async def _process_response(
        self, conn: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        admission = self._admissions.pop(conn, None)
        if admission is None or response.status_code != 101:
            return None
        user_id = admission.granted.user_id
        if self.hub.count(user_id) >= self._settings.sockets.max_sockets_per_user:
            return self._reject(_HTTP_TOO_MANY, "too_many_sockets")
        session = Session(
            conn,
            user_id,
            admission.granted.expires_at,
            self._settings.sockets,
            self._read_log,
            self._fetch_log,
            self._read_newest,
        )
        self.hub.add(session)
        self._sessions[conn] = (session, admission.last_event_id, admission.history)
        # The handler may never run (client gone, server closing): release with the task.
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _: self._release(conn))
        try:
            await self._book.add(user_id)
            # Read after the ownership is in place: every later entry reaches this socket.
            session.live_floor = await self._log_tail(user_id)
        except REDIS_ERRORS:
            self._release(conn)
            return self._reject(_HTTP_UNAVAILABLE, "redis")
        return None

    def _reject(self, status: int, reason: str) -> Response:
        metrics.HANDSHAKES_REJECTED.labels(str(status)).inc()
        line = self._refusals.refused(status, reason)
        if line is not None:
            log.info("%s", line)
        return http.rejection(status)

    def _release(self, conn: ServerConnection) -> None:
        entry = self._sessions.pop(conn, None)
        if entry is not None and self.hub.discard(entry[0]):
            self._book.remove(entry[0].user_id)

    # --- sockets --------------------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        entry = self._sessions.get(conn)
        if entry is None:
            return
        session, last_event_id, history = entry
        metrics.SOCKETS_OPENED.inc()
        metrics.SOCKETS_OPEN.inc()
        try:
            await session.run(last_event_id, history)
        except REDIS_ERRORS as exc:
            log.warning("socket of a user failed: %s", exc)
            await conn.close(CloseCode.INTERNAL_ERROR, "try again")
        finally:
            self._release(conn)
            metrics.SOCKETS_OPEN.dec()
            metrics.SOCKETS_CLOSED.labels(close_code_label(session.close_code())).inc()

    async def _read_log(self, user_id: str, start: str, count: int) -> list[Frame]:
        """Replays are bounded in number at once (they can be large)."""
        async with self._replay_slots:
            return await self._fetch_log(user_id, start, count)

    async def _fetch_log(self, user_id: str, start: str, count: int) -> list[Frame]:
        entries = await self._redis.xrange(
            self._keys.user_log(user_id), min=start, max="+", count=count
        )
        frames = []
        for raw_id, fields in entries:
            log_id = raw_id.decode()
            sid = parse_id(log_id)
            assert sid is not None  # Redis hands out well-formed ids
            frames.append(
                Frame(sid, event_frame(log_id, fields[b"type"].decode(), fields[b"content"]))
            )
        return frames

    async def _read_newest(self, user_id: str, count: int) -> list[Frame]:
        """The newest ``count`` entries of the user's log, oldest first (``?history=``)."""
        async with self._replay_slots:
            entries = await self._redis.xrevrange(self._keys.user_log(user_id), count=count)
        frames = []
        for raw_id, fields in reversed(entries):
            log_id = raw_id.decode()
            sid = parse_id(log_id)
            assert sid is not None  # Redis hands out well-formed ids
            frames.append(
                Frame(sid, event_frame(log_id, fields[b"type"].decode(), fields[b"content"]))
            )
        return frames

    async def _log_tail(self, user_id: str) -> StreamId:
        newest = await self._redis.xrevrange(self._keys.user_log(user_id), count=1)
        sid = parse_id(newest[0][0].decode()) if newest else None
        return sid if sid is not None else MIN_ID

    def _vanished(self, users: set[str]) -> None:
        # Our ownership entries were gone (a worker thought us dead, Redis lost data): events
        # for these users may have skipped our inbox. Their sockets reconnect and resume.
        log.warning(
            "ownership of %d users had vanished; asking their sockets to resume", len(users)
        )
        for session in self.hub.all():
            if session.user_id in users:
                session.close(CloseCode.RESYNC, "resync")


def _offered(headers: Headers) -> list[str]:
    return [
        part.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for part in value.split(",")
        if part.strip()
    ]


async def run_gateway(settings: GatewaySettings) -> None:
    if settings.log.level != "debug":
        # websockets logs every open and rejected connection at INFO.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    redis = connect(
        settings.redis.url,
        client_name=f"streamer-gateway-{settings.gateway_id}",
        block_ms=settings.inbox_block_ms,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        gateway = await _start_when_redis_answers(redis, settings, stop)
        if gateway is None:
            return
        await stop.wait()
        log.info("stopping: closing %d sockets", gateway.hub.sockets)
        await gateway.stop()
    finally:
        await redis.aclose()


_START_BACKOFF_S = (0.5, 10.0)  # first wait, cap: doubled after each failed attempt


async def _start_when_redis_answers(
    redis: aioredis.Redis, settings: GatewaySettings, stop: asyncio.Event
) -> Gateway | None:
    """Start the gateway once Redis answers, retrying with capped backoff (one warning per
    attempt) instead of exiting, like the worker. Meanwhile the port answers the probes
    (/livez 200, /readyz and /healthz 503), so an orchestrator neither restarts the gateway
    nor sends it clients. None when stopped before Redis answered. A port that cannot be
    bound is not retried: StartupError."""
    delay, waiting = _START_BACKOFF_S[0], None
    try:
        while not stop.is_set():
            try:
                await redis.ping()  # type: ignore[misc]  # redis-py types it sync or async
                if waiting is not None:
                    waiting.close()
                    await waiting.wait_closed()
                    waiting = None
                gateway = Gateway(redis, settings)
                await _bind(gateway.start(), settings)
                return gateway
            except REDIS_ERRORS as exc:
                url = redact(settings.redis.url)
                log.warning("redis unreachable at %s (%s); retrying in %.1fs", url, exc, delay)
                waiting = waiting or await _serve_waiting(settings)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, _START_BACKOFF_S[1])
        return None
    finally:
        if waiting is not None:
            waiting.close()


async def _serve_waiting(settings: GatewaySettings) -> asyncio.Server:
    def waiting() -> tuple[bool, str]:
        return False, "waiting for redis\n"

    return await serve_metrics(settings.host, settings.port, waiting, variable="GATEWAY_PORT")


_T = TypeVar("_T")


async def _bind(start: Coroutine[Any, Any, _T], settings: GatewaySettings) -> _T:
    """Await a start-up that binds GATEWAY_HOST:GATEWAY_PORT; a port in use (or forbidden)
    becomes one StartupError naming the variable, never a retry."""
    try:
        return await start
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise bind_error("GATEWAY_PORT", settings.host, settings.port, exc) from None
