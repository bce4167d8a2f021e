"""FCM HTTP v1 over one aiohttp session (HTTP/1.1 keep-alive pool), authorised with a
service account.

aiohttp rather than httpx: its C parser and plain connection pool cost ~0.2 ms of CPU per
request where httpx over HTTP/2 cost ~1.3 ms (BENCHMARKS.md, "Push"); FCM serves HTTP/1.1
and HTTP/2 alike. The OAuth access token comes from google-auth (the assertion is signed
with the service account's key and posted to its ``token_uri``). google-auth is
synchronous, so refreshes run in a thread, and start ahead of expiry so requests rarely
wait for one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC
from email.message import Message
from ssl import SSLContext
from typing import Any

import aiohttp
import google.auth.transport
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2 import service_account

from streamer.contract.event import Channel
from streamer.core.policy import ChannelResult
from streamer.push.base import PushRequest
from streamer.push.observe import PushObserver
from streamer.push.outcomes import Kind, Verdict, fcm_connection_failure, fcm_verdict
from streamer.push.payloads import fcm_message
from streamer.push.settings import FcmSettings, PushSettings
from streamer.push.tls import client_context

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
REFRESH_MARGIN_S = 300.0  # refresh this long before expiry, in the background


class TokenState(enum.Enum):
    FRESH = "fresh"
    REFRESH_SOON = "refresh_soon"  # still valid: use it, refresh in the background
    EXPIRED = "expired"  # missing or expired: wait for a refresh


def token_state(expires_at: float | None, now: float, margin_s: float) -> TokenState:
    if expires_at is None or now >= expires_at:
        return TokenState.EXPIRED
    return TokenState.REFRESH_SOON if now >= expires_at - margin_s else TokenState.FRESH


class _AuthResponse(google.auth.transport.Response):
    def __init__(self, status: int, headers: Message, data: bytes) -> None:
        self._status = status
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._data = data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class AuthTransport(google.auth.transport.Request):
    """google-auth's HTTP hook over the standard library (called in a thread only, and
    rarely), so the token endpoint gets the same TLS trust (PUSH_CA_FILE) as FCM itself."""

    def __init__(self, ssl_context: SSLContext, timeout_s: float) -> None:
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context))
        self._timeout_s = timeout_s

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _AuthResponse:
        request = urllib.request.Request(url, body, dict(headers or {}), method=method)
        try:
            with self._opener.open(request, timeout=timeout or self._timeout_s) as response:
                return _AuthResponse(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:  # an answer all the same: google-auth reads it
            with exc:
                return _AuthResponse(exc.code, exc.headers, exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._opener.close()


class AccessTokens:
    """The current ``Bearer`` header; at most one refresh runs at a time."""

    def __init__(
        self,
        credentials: service_account.Credentials,
        transport: AuthTransport,
        on_refresh: Callable[[], None],
        clock: Callable[[], float] = time.time,
        margin_s: float = REFRESH_MARGIN_S,
    ) -> None:
        self._credentials = credentials
        self._transport = transport
        self._on_refresh = on_refresh
        self._clock = clock
        self._margin_s = margin_s
        self._header: str | None = None
        self._expires_at: float | None = None
        self._refreshing: asyncio.Task[None] | None = None

    async def header(self) -> str:
        """Raises GoogleAuthError when no valid token can be had."""
        state = token_state(self._expires_at, self._clock(), self._margin_s)
        if state is TokenState.EXPIRED or self._header is None:
            await asyncio.shield(self._start_refresh())
        elif state is TokenState.REFRESH_SOON:
            self._start_refresh()
        assert self._header is not None
        return self._header

    async def invalidate(self, stale: str) -> None:
        """FCM refused ``stale``: get a new token unless one was fetched meanwhile."""
        if stale == self._header:
            self._expires_at = None
        await self.header()

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
            self._refreshing.add_done_callback(_log_failure)
        return self._refreshing

    async def _refresh(self) -> None:
        credentials = self._credentials
        await asyncio.to_thread(credentials.refresh, self._transport)
        expiry = credentials.expiry  # naive UTC, as google-auth keeps it
        self._expires_at = None if expiry is None else expiry.replace(tzinfo=UTC).timestamp()
        self._header = f"Bearer {credentials.token}"
        self._on_refresh()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("FCM access token refresh failed: %s", exc)


def env_proxy(url: str) -> str | None:
    """The proxy HTTPS_PROXY / NO_PROXY name for ``url`` (as the token endpoint's urllib and
    httpx before aiohttp honour them), read once: aiohttp's trust_env reads them per request."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def auth_failure(exc: GoogleAuthError) -> Verdict:
    """The token endpoint said no (our key or account is wrong) or could not be reached."""
    if isinstance(exc, RefreshError) and not exc.retryable:
        return Verdict(Kind.CONFIG, "fcm:oauth_rejected", str(exc)[:500])
    return Verdict(Kind.RETRY, "fcm:oauth_unavailable", str(exc)[:500])


class FcmSender:
    """PushSender for push_android. Create inside the running event loop."""

    channel: Channel = "push_android"

    def __init__(
        self, settings: FcmSettings, push: PushSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self._observer = PushObserver("fcm")
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            settings.service_account, scopes=[SCOPE]
        )
        self._auth_transport = AuthTransport(client_context(push.ca_file), push.timeout_s)
        self._tokens = AccessTokens(
            credentials, self._auth_transport, self._observer.credential_refreshed, clock
        )
        # One keep-alive connection per request in flight at most (PUSH_CONCURRENCY).
        connector = aiohttp.TCPConnector(
            limit=push.concurrency, ssl=client_context(push.ca_file, ("http/1.1",))
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=push.timeout_s)
        )
        self._url = f"{settings.endpoint}/v1/projects/{settings.project_id}/messages:send"
        self._proxy = env_proxy(self._url)
        self._slots = asyncio.Semaphore(push.concurrency)
        self._timeout_s = push.timeout_s

    async def send(self, request: PushRequest) -> ChannelResult:
        body = fcm_message(request)
        verdict = body if isinstance(body, Verdict) else await self._send(body)
        self._observer.outcome(verdict, request.device_token)
        return verdict.result(self.channel)

    async def _send(self, body: bytes) -> Verdict:
        async with self._slots:
            verdict, header = await self._attempt(body)
            if verdict.kind is not Kind.REFRESH_AUTH or header is None:
                return verdict
            try:
                await self._tokens.invalidate(header)
            except GoogleAuthError as exc:
                return auth_failure(exc)
            verdict, _ = await self._attempt(body)
        if verdict.kind is Kind.REFRESH_AUTH:  # a fresh token refused as well
            return Verdict(Kind.CONFIG, verdict.reason, verdict.detail)
        return verdict

    async def _attempt(self, body: bytes) -> tuple[Verdict, str | None]:
        try:
            header = await self._tokens.header()
        except GoogleAuthError as exc:
            return auth_failure(exc), None
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers={"authorization": header, "content-type": "application/json"},
                proxy=self._proxy,
            ) as response:
                content = await response.read()
        except TimeoutError:
            return fcm_connection_failure(f"no answer within {self._timeout_s}s"), header
        except aiohttp.ClientError as exc:
            return fcm_connection_failure(f"{type(exc).__name__} {exc}".strip()), header
        finally:
            self._observer.request_done(time.perf_counter() - started)
        retry_after = response.headers.get("retry-after")
        return fcm_verdict(response.status, content, retry_after, time.time()), header

    async def close(self) -> None:
        await self._session.close()
        self._auth_transport.close()
