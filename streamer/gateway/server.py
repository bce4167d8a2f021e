"""The `streamer gateway` process: socket server, inbox reader, heartbeat, ownership.

Start-up order matters: take the lease on this gateway's id, remove stale ownership left by
an earlier process with this id, skip the inbox to its end, heartbeat, and only then accept
sockets. A socket's ownership entry is written before its handshake completes, so once a
client's socket is open every later event reaches it through the inbox.

Connections (``connection.py``) have no task of their own; one sweeper task pings them,
drops the ones that stall, and closes sockets whose token expired. A watchdog closes every
socket with 1012 as soon as the heartbeat has failed for GATEWAY_DEAD_AFTER_MS (workers may
then skip this gateway's inbox), without waiting for Redis to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from streamer.contract.ids import MIN_ID, StreamId, parse_id
from streamer.contract.inbox import TOPIC
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
from streamer.gateway.connection import Connection, text_frame
from streamer.gateway.inbox import InboxReader
from streamer.gateway.ownership import LeaseLost, OwnershipBook, Presence
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
_SWEEP_S = 1.0  # how often the sweeper looks at every connection
_SWEEP_SLICE = 500  # connections looked at between two yields to the event loop


@dataclass(frozen=True, slots=True)
class _Admission:
    granted: Granted
    last_event_id: str | None
    history: int | None
    topics: tuple[str, ...]


class Gateway:
    def __init__(self, redis: aioredis.Redis, settings: GatewaySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = Keys.from_settings(settings.redis)
        self._verifier = TokenVerifier(settings.auth)
        self.gateway_id = gid = settings.gateway_id
        self.hub = Hub()
        self._users = OwnershipBook(
            redis, self._keys.owners, self._keys.gateway_users(gid), gid, self._vanished_users
        )
        self._topics = OwnershipBook(
            redis,
            self._keys.topic_owners,
            self._keys.gateway_topics(gid),
            gid,
            self._vanished_topics,
        )
        self._inbox = InboxReader(
            redis,
            self._keys.inbox(gid),
            self.hub.deliver,
            settings.inbox_read_count,
            settings.inbox_block_ms,
        )
        self.logs = _Logs(redis, self._keys, asyncio.Semaphore(settings.replay_concurrency))
        self._connections: set[Connection] = set()
        self._all_closed = asyncio.Event()
        self._admitting: set[asyncio.Task[None]] = set()
        self._refusals = http.RefusalLog()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._last_beat = time.monotonic()
        self._resynced = False  # every socket was told to resume during this outage
        self._failure: str | None = None
        self.port = settings.port

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection, s.host, s.port, start_serving=False, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._presence = Presence(
            self._redis,
            self._keys,
            self.gateway_id,
            self.port,
            int(time.time() * 1000),
            s.dead_after_ms,
        )
        try:
            await self._presence.claim(
                s.dead_after_ms / 1000 + 2 * s.heartbeat_ms / 1000, self._stopping
            )
            await self._prepare()
        except BaseException:
            self._server.close()
            raise
        self._tasks = [
            asyncio.create_task(self._users.run(), name="user-ownership"),
            asyncio.create_task(self._topics.run(), name="topic-ownership"),
            asyncio.create_task(self._inbox.run(), name="inbox"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._sweep(), name="sweeper"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        await self._server.start_serving()
        log.info("gateway %s listening on %s:%d", self.gateway_id, s.host, self.port)

    async def _prepare(self) -> None:
        stale = await self._users.clear() + await self._topics.clear()
        if stale:
            log.info("removed %d stale ownership entries of gateway %s", stale, self.gateway_id)
        await self._inbox.start_at_end()
        await self._presence.beat(0, 0, 0)
        self._last_beat = time.monotonic()

    async def stop(self) -> None:
        """Close sockets with 1001, remove this gateway's ownership and presence."""
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for task in self._admitting:
            task.cancel()
        for session in self.hub.all():
            session.close(CloseCode.GOING_AWAY, "going away")
        await self._await_closed(self._settings.sockets.close_timeout_s)
        self._inbox.stop()
        with contextlib.suppress(asyncio.TimeoutError, *REDIS_ERRORS):
            flushed = asyncio.gather(self._users.flushed(), self._topics.flushed())
            await asyncio.wait_for(flushed, self._settings.sockets.close_timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._users.clear()
            await self._topics.clear()
        await self._presence.withdraw()
        log.info("gateway %s stopped", self.gateway_id)

    async def _await_closed(self, timeout_s: float) -> None:
        """Until every connection is gone; the stragglers are dropped after ``timeout_s``."""
        if self._connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for conn in list(self._connections):
            conn.abort()

    # --- heartbeat, watchdog, sweeper -----------------------------------------------------

    async def _heartbeat(self) -> None:
        s = self._settings
        interval_s = s.heartbeat_ms / 1000
        verify = min(1.0, interval_s / s.ownership_verify_s)
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            if self._stopping.is_set():
                return
            self._watchdog()
            try:
                kept = await self._presence.beat(self.hub.sockets, self.hub.users, self.hub.topics)
            except LeaseLost:
                self._failure = f"another gateway took over the id {self.gateway_id!r}"
                log.error("%s; closing every socket", self._failure)
                self._resync_all("id taken over")
                self._stopping.set()
                return
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            self._last_beat = time.monotonic()
            if not kept or self._resynced:
                # Back after looking dead: workers may have removed our entries.
                self._users.reassert()
                self._topics.reassert()
                self._resynced = False
            else:
                self._users.verify(verify)
                self._topics.verify(verify)

    def _watchdog(self) -> None:
        gap_ms = (time.monotonic() - self._last_beat) * 1000
        if gap_ms > self._settings.dead_after_ms and not self._resynced:
            # Workers may have declared this gateway dead and routed events only to the logs:
            # live sockets could have gaps. Reconnecting clients resume from their last id.
            log.warning(
                "no heartbeat for %.0f ms; asking %d sockets to resume", gap_ms, self.hub.sockets
            )
            self._resync_all("resync")

    def _resync_all(self, reason: str) -> None:
        self._resynced = True
        for session in self.hub.all():
            session.close(CloseCode.RESYNC, reason)

    async def _sweep(self) -> None:
        s = self._settings.sockets
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _SWEEP_S)
            now, wall = time.monotonic(), time.time()
            self._watchdog()
            for n, conn in enumerate(list(self._connections), 1):
                if n % _SWEEP_SLICE == 0:
                    # Thousands of sockets (and their due pings, a write each) in one pass
                    # would hold the loop for tens of milliseconds: deliveries go between.
                    await asyncio.sleep(0)
                if conn.overdue(
                    now,
                    s.handshake_timeout_s,
                    s.close_timeout_s,
                    s.ping_interval_s,
                    s.ping_timeout_s,
                ):
                    conn.abort()
                    continue
                session = conn.session
                if isinstance(session, Session) and wall >= session.expires_at:
                    session.close(CloseCode.TOKEN_EXPIRED, "token expired")

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

    @property
    def failed(self) -> bool:
        """The gateway must stop (its id was taken over)."""
        return self._failure is not None and self._stopping.is_set()

    # --- connections ----------------------------------------------------------------------

    def _new_connection(self) -> Connection:
        s = self._settings.sockets
        conn = Connection(self, s.max_client_frame_bytes, s.kernel_send_buffer_bytes)
        self._connections.add(conn)
        return conn

    def on_request(self, conn: Connection, request: Request) -> None:
        """A handshake request: plain HTTP routes answer at once; a socket is admitted in a
        task (it writes ownership to Redis before the handshake completes)."""
        path = route_path(request.path)
        answer = self._route(path, request)
        if answer is not None:
            conn.respond(answer)
            return
        task = asyncio.create_task(self._admit(conn, request))
        self._admitting.add(task)
        task.add_done_callback(self._admitting.discard)

    def on_message(self, conn: Connection, message: bytes) -> None:
        session = conn.session
        if isinstance(session, Session):
            session.on_message(message)

    def on_closed(self, conn: Connection) -> None:
        self._connections.discard(conn)
        if not self._connections:
            self._all_closed.set()
        session = conn.session
        if not isinstance(session, Session):
            return
        session.ended()
        held, topics = self.hub.discard(session)
        if held:
            self._users.remove(session.user_id)
            for topic in topics:
                self._topics.remove(topic)
            metrics.SOCKETS_OPEN.dec()
            metrics.SOCKETS_CLOSED.labels(close_code_label(session.close_code())).inc()

    # --- handshake ------------------------------------------------------------------------

    def _route(self, path: str, request: Request) -> Response | None:
        if path in ("/livez", "/readyz", "/healthz"):
            return http.health(*self._probe(path))
        if path == "/metrics":
            return http.metrics()
        if path.startswith(http.AUTH_CHECK):
            return self._auth_check(request)
        static = http.static(path, self._settings.demo_mode)
        if static is not None:
            return static
        if parse_socket_path(request.path) is None:
            return http.text(404, "not found")
        return None

    async def _admit(self, conn: Connection, request: Request) -> None:
        admission = self._admission(request)
        if isinstance(admission, Response):
            conn.respond(admission)
            return
        chosen = admission.granted.subprotocol
        response = conn.accept(request, Subprotocol(chosen) if chosen else _bearer(request))
        if response.status_code != 101:
            conn.respond(response)
            return
        user_id = admission.granted.user_id
        session = Session(
            conn,
            user_id,
            admission.granted.expires_at,
            admission.granted.topics,
            self._settings.sockets,
            self.logs,
            self._topics,
            self.hub,
        )
        try:
            await self._users.add(user_id)
            # Read after the ownership is in place: every later entry reaches this socket.
            session.user.floor = await _tail(self._redis, self._keys.user_log(user_id))
        except REDIS_ERRORS:
            self._users.remove(user_id)
            conn.respond(self._reject(_HTTP_UNAVAILABLE, "redis"))
            return
        if conn.transport is None or conn.transport.is_closing() or self._stopping.is_set():
            self._users.remove(user_id)  # the client left meanwhile
            return
        if self.hub.count(user_id) >= self._settings.sockets.max_sockets_per_user:
            self._users.remove(user_id)
            conn.respond(self._reject(_HTTP_TOO_MANY, "too_many_sockets"))
            return
        conn.session = session
        self.hub.add(session)
        conn.respond(response)
        metrics.SOCKETS_OPENED.inc()
        metrics.SOCKETS_OPEN.inc()
        session.start(admission.last_event_id, admission.history, admission.topics)

    def _admission(self, request: Request) -> _Admission | Response:
        target = parse_socket_path(request.path)
        assert target is not None  # routed here only for socket paths
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
        return _Admission(verdict, target.last_event_id, history, target.topics)

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

    def _reject(self, status: int, reason: str) -> Response:
        metrics.HANDSHAKES_REJECTED.labels(str(status)).inc()
        line = self._refusals.refused(status, reason)
        if line is not None:
            log.info("%s", line)
        return http.rejection(status)

    # --- ownership that vanished ------------------------------------------------------------

    def _vanished_users(self, users: set[str]) -> None:
        # Our ownership entries were gone (a worker thought us dead, Redis lost data): events
        # for these users may have skipped our inbox. Their sockets reconnect and resume.
        log.warning(
            "ownership of %d users had vanished; asking their sockets to resume", len(users)
        )
        for session in self.hub.all():
            if session.user_id in users:
                session.close(CloseCode.RESYNC, "resync")

    def _vanished_topics(self, topics: set[str]) -> None:
        log.warning(
            "subscriptions to %d topics had vanished; asking their sockets to resume",
            len(topics),
        )
        for session in self.hub.all():
            if session.topics is not None and not topics.isdisjoint(session.topics):
                session.close(CloseCode.RESYNC, "resync")


class _Logs:
    """The replay logs a session reads (users' and topics'), framed for sending. Replays
    are bounded in number at once (they can be large)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, slots: asyncio.Semaphore) -> None:
        self._redis = redis
        self._keys = keys
        self._slots = slots

    def _key(self, kind: str, name: str) -> str:
        return self._keys.topic_log(name) if kind == TOPIC else self._keys.user_log(name)

    async def read_from(self, kind: str, name: str, start: str, count: int) -> list[Frame]:
        async with self._slots:
            entries = await self._redis.xrange(
                self._key(kind, name), min=start, max="+", count=count
            )
        return _frames(entries, name if kind == TOPIC else None)

    async def read_newest(self, kind: str, name: str, count: int) -> list[Frame]:
        async with self._slots:
            entries = await self._redis.xrevrange(self._key(kind, name), count=count)
        return _frames(list(reversed(entries)), name if kind == TOPIC else None)

    async def tail(self, kind: str, name: str) -> StreamId:
        return await _tail(self._redis, self._key(kind, name))


def _frames(entries: list[Any], topic: str | None) -> list[Frame]:
    frames = []
    for raw_id, fields in entries:
        log_id = raw_id.decode()
        sid = parse_id(log_id)
        assert sid is not None  # Redis hands out well-formed ids
        payload = event_frame(log_id, fields[b"type"].decode(), fields[b"content"], topic)
        frames.append(Frame(sid, text_frame(payload)))
    return frames


async def _tail(redis: aioredis.Redis, key: str) -> StreamId:
    newest = await redis.xrevrange(key, count=1)
    sid = parse_id(newest[0][0].decode()) if newest else None
    return sid if sid is not None else MIN_ID


def _offered(headers: Headers) -> list[str]:
    return [
        part.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for part in value.split(",")
        if part.strip()
    ]


def _bearer(request: Request) -> Subprotocol | None:
    """The offered ``bearer.*`` subprotocol, if any: browsers fail a handshake that offered
    subprotocols and got none back."""
    offered = _offered(request.headers)
    return next((Subprotocol(p) for p in offered if p.startswith(SUBPROTOCOL_PREFIX)), None)


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
        stopped = asyncio.create_task(gateway._stopping.wait())
        asked = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping: closing %d sockets", gateway.hub.sockets)
        await gateway.stop()
        if gateway.failed:
            raise SystemExit(1)
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
