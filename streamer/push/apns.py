"""APNs over HTTP/2 with token (JWT) authentication, through aioapns.

aioapns has no host parameter and mints a provider JWT for every new connection. This
adapter gives its connection pool one long-lived ProviderToken shared by all connections
and an endpoint (a subclass of its TLS protocol with APNS_SERVER / APNS_PORT set, and
cheaper per request), and maps its answers and exceptions to Verdicts once, here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from ssl import SSLContext
from typing import Any, cast

import jwt
from aioapns.common import NotificationRequest, NotificationResult, PushType
from aioapns.connection import (
    APNsBaseClientProtocol,
    APNsBaseConnectionPool,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed, ConnectionError, MaxAttemptsExceeded
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from h2.exceptions import H2Error

from streamer.contract.event import Channel
from streamer.core.policy import ChannelResult
from streamer.push.base import PushRequest
from streamer.push.huffman import CachedHuffmanEncoder
from streamer.push.observe import PushObserver
from streamer.push.outcomes import Kind, Verdict, apns_connection_failure, apns_verdict
from streamer.push.payloads import ApnsNotification, apns_notification
from streamer.push.settings import ApnsSettings, PushSettings
from streamer.push.tls import client_context

# Apple: refresh the provider token no more often than every 20 minutes (else
# TooManyProviderTokenUpdates) and no less often than every 60 (else ExpiredProviderToken).
JWT_REUSE_S = 40 * 60
# aioapns opens another connection only when one has no free stream; a few allow for Apple
# advertising few concurrent streams on a new connection.
MAX_CONNECTIONS = 4
# aioapns itself retries a request on a new connection after GOAWAY or a dropped connection.
CONNECTION_ATTEMPTS = 3
_TRANSPORT_ERRORS = (ConnectionClosed, ConnectionError, MaxAttemptsExceeded, OSError, H2Error)


def jwt_due(issued_at: float | None, now: float, reuse_s: float = JWT_REUSE_S) -> bool:
    """Whether a new provider JWT is needed (none yet, too old, or the clock went back)."""
    return issued_at is None or not 0 <= now - issued_at < reuse_s


class ProviderToken(AuthorizationHeaderProvider):
    """The ES256 provider JWT, shared by every connection and reused for JWT_REUSE_S.

    aioapns asks for the header on every request; signing happens only when due, or when
    Apple said ExpiredProviderToken for the header we are still using.
    """

    def __init__(
        self,
        settings: ApnsSettings,
        on_mint: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = load_pem_private_key(settings.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked by the settings
        self._key = key
        self._key_id = settings.key_id
        self._team_id = settings.team_id
        self._on_mint = on_mint
        self._clock = clock
        self._issued_at: float | None = None
        self._header = ""

    def get_header(self) -> str:
        now = self._clock()
        if jwt_due(self._issued_at, now):
            self._mint(now)
        return self._header

    def refresh(self, stale: str) -> None:
        """Apple refused ``stale``: mint a new JWT unless a concurrent request already did,
        so a burst of rejections costs one new token, not one each."""
        if stale == self._header:
            self._mint(self._clock())

    def _mint(self, now: float) -> None:
        claims = {"iss": self._team_id, "iat": int(now)}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
        self._issued_at = now
        self._header = f"bearer {token}"
        self._on_mint()


class _Protocol(APNsTLSClientProtocol):
    """aioapns' TLS protocol with two per-request costs taken out: a faster HPACK Huffman
    coder, and one idle timer re-armed when it fires instead of a new timer per write.

    Writes stay one per request: coalescing those of a loop iteration saved CPU but put
    client and provider in lockstep (a batch out, a batch back) and measured slower."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.encoder.huffman_coder = CachedHuffmanEncoder()
        self._active_at = 0.0

    def refresh_inactivity_timer(self) -> None:
        self._active_at = self.loop.time()
        if self.inactivity_timer is None:
            self.inactivity_timer = self.loop.call_later(self.INACTIVITY_TIME, self._idle_check)

    def _idle_check(self) -> None:
        idle_s = self.loop.time() - self._active_at
        if idle_s < self.INACTIVITY_TIME:
            delay = self.INACTIVITY_TIME - idle_s
            self.inactivity_timer = self.loop.call_later(delay, self._idle_check)
        else:
            self.close()  # as aioapns does after INACTIVITY_TIME without a write


def _protocol_for(host: str, port: int) -> type[APNsTLSClientProtocol]:
    """aioapns' TLS protocol pointed at host:port (it connects to and names these)."""
    attrs = {"APNS_SERVER": host, "APNS_PORT": port}
    return cast(type[APNsTLSClientProtocol], type("ApnsEndpoint", (_Protocol,), attrs))


class _Pool(APNsBaseConnectionPool):
    """aioapns' connection pool with our endpoint and one shared ProviderToken."""

    def __init__(
        self, settings: ApnsSettings, auth: ProviderToken, ssl_context: SSLContext
    ) -> None:
        super().__init__(
            topic=settings.topic,
            max_connections=MAX_CONNECTIONS,
            max_connection_attempts=CONNECTION_ATTEMPTS,
        )
        self.protocol_class = _protocol_for(settings.host, settings.port)
        self.ssl_context = ssl_context
        self._auth = auth
        self._topic = settings.topic

    async def create_connection(self) -> APNsBaseClientProtocol:
        factory = partial(
            self.protocol_class,
            self._topic,
            self.loop,
            self.discard_connection,  # type: ignore[arg-type]  # aioapns types it NoReturn
            self._auth,
        )
        _, protocol = await self.loop.create_connection(
            factory,
            host=self.protocol_class.APNS_SERVER,
            port=self.protocol_class.APNS_PORT,
            ssl=self.ssl_context,
        )
        return protocol


class ApnsSender:
    """PushSender for push_ios. Create inside the running event loop."""

    channel: Channel = "push_ios"

    def __init__(
        self,
        settings: ApnsSettings,
        push: PushSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._observer = PushObserver("apns")
        self._token = ProviderToken(settings, self._observer.credential_refreshed, clock)
        self._pool = _Pool(settings, self._token, client_context(push.ca_file, ("h2",)))
        self._slots = asyncio.Semaphore(push.concurrency)
        self._timeout_s = push.timeout_s

    async def send(self, request: PushRequest) -> ChannelResult:
        built = apns_notification(request)
        verdict = built if isinstance(built, Verdict) else await self._send(built)
        self._observer.outcome(verdict, request.device_token)
        return verdict.result(self.channel)

    async def _send(self, notification: ApnsNotification) -> Verdict:
        header = self._token.get_header()
        verdict = await self._attempt(notification)
        if verdict.kind is Kind.REFRESH_AUTH:
            self._token.refresh(header)
            verdict = await self._attempt(notification)
        return verdict

    async def _attempt(self, n: ApnsNotification) -> Verdict:
        request = NotificationRequest(
            device_token=n.token,
            message=n.payload,
            time_to_live=n.ttl_s,
            priority=n.priority,
            collapse_key=n.collapse_id,
            push_type=PushType(n.push_type),
        )
        await self._slots.acquire()
        started = time.perf_counter()
        # Never cancel aioapns mid-request: a late answer to a cancelled request breaks the
        # whole connection. On timeout the request runs on, holding its slot until it ends.
        task = asyncio.ensure_future(self._pool.send_notification(request))
        task.add_done_callback(self._release)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self._timeout_s)
        except TimeoutError:
            return apns_connection_failure(f"no answer within {self._timeout_s}s")
        except _TRANSPORT_ERRORS as exc:
            return apns_connection_failure(f"{type(exc).__name__} {exc}".strip())
        finally:
            self._observer.request_done(time.perf_counter() - started)
        return _verdict(result)

    def _release(self, task: asyncio.Future[NotificationResult]) -> None:
        self._slots.release()
        if not task.cancelled():
            task.exception()  # retrieved: a failure after our timeout needs no report

    async def close(self) -> None:
        self._pool.close()


def _verdict(result: NotificationResult) -> Verdict:
    return apns_verdict(int(result.status), result.description, result.timestamp)
