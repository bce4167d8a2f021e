"""The OAuth 2.0 access token for FCM, from a service account, as google-auth does it.

google-auth signs the assertion with the service account's key and posts it to its
``token_uri``. It is synchronous, so refreshes run in a thread, and start ahead of expiry so
requests rarely wait for one; the token request goes through the standard library's HTTPS
client there, with the same trust (PUSH_CA_FILE) as FCM itself.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC
from email.message import Message
from ssl import SSLContext
from typing import Any

import google.auth.transport
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2 import service_account

from streamer.push.verdict import Kind, Verdict

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


def auth_failure(exc: GoogleAuthError) -> Verdict:
    """The token endpoint said no (our key or account is wrong) or could not be reached."""
    if isinstance(exc, RefreshError) and not exc.retryable:
        return Verdict(Kind.CONFIG, "fcm:oauth_rejected", str(exc)[:500])
    return Verdict(Kind.RETRY, "fcm:oauth_unavailable", str(exc)[:500])


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
    rarely). urllib honours HTTPS_PROXY / NO_PROXY as the push connections do."""

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


def credentials_of(account: dict[str, str]) -> service_account.Credentials:
    """Raises ValueError when google-auth cannot load the key."""
    credentials: service_account.Credentials = (
        service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            account, scopes=[SCOPE]
        )
    )
    return credentials


class AccessTokens:
    """The current ``Bearer`` value; at most one refresh runs at a time."""

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
        self._header: bytes | None = None
        self._expires_at: float | None = None
        self._refreshing: asyncio.Task[None] | None = None

    async def header(self) -> bytes | Verdict:
        """The value, or a verdict when no valid token can be had."""
        state = token_state(self._expires_at, self._clock(), self._margin_s)
        if state is TokenState.EXPIRED or self._header is None:
            try:
                await asyncio.shield(self._start_refresh())
            except GoogleAuthError as exc:
                return auth_failure(exc)
        elif state is TokenState.REFRESH_SOON:
            self._start_refresh()
        assert self._header is not None
        return self._header

    async def invalidate(self, stale: bytes) -> bytes | Verdict:
        """FCM refused ``stale``: get a new token unless one was fetched meanwhile."""
        if stale == self._header:
            self._expires_at = None
        return await self.header()

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
        self._header = f"Bearer {credentials.token}".encode()
        self._on_refresh()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("FCM access token refresh failed: %s", exc)
