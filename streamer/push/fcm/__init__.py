"""Firebase Cloud Messaging HTTP v1 (channel ``push_android``), over HTTP/2 with an OAuth
access token from a service account.

``settings`` reads FCM_*, ``oauth`` keeps the access token, ``payload`` and ``outcome`` are
the pure request builder and answer classifier. The client below joins them for the shared
sender (``streamer.push.sender``). The legacy FCM API (server keys) is gone; see settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamer.infra.errors import ConfigError
from streamer.push.base import PushRequest
from streamer.push.fcm.oauth import AccessTokens, AuthTransport, credentials_of
from streamer.push.fcm.outcome import fcm_verdict
from streamer.push.fcm.payload import fcm_message
from streamer.push.fcm.settings import FcmSettings, read_settings
from streamer.push.http2.client import Endpoint
from streamer.push.http2.connection import Response
from streamer.push.http2.proxy import proxy_for
from streamer.push.provider import Outbound, Provider
from streamer.push.settings import PushSettings
from streamer.push.tls import client_context
from streamer.push.verdict import Kind, Verdict

_FIELDS = ((b"content-type", b"application/json", True),)


class FcmClient:
    response_headers: tuple[bytes, ...] = (b"retry-after",)

    def __init__(
        self,
        settings: FcmSettings,
        push: PushSettings,
        on_refresh: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            credentials = credentials_of(settings.service_account)
        except ValueError as exc:  # google-auth could not load the key
            raise ConfigError(
                f"FCM_SERVICE_ACCOUNT_FILE: unusable service account: {exc}"
            ) from None
        self._auth_transport = AuthTransport(client_context(push.ca_file), push.timeout_s)
        self._tokens = AccessTokens(credentials, self._auth_transport, on_refresh, clock)
        context = client_context(push.ca_file, ("h2",))
        proxy = proxy_for(settings.host, settings.port)
        self.endpoint = Endpoint(settings.host, settings.port, context, proxy)
        path = f"{settings.path_prefix}/v1/projects/{settings.project_id}/messages:send"
        self._path = path.encode()

    async def credential(self) -> bytes | Verdict:
        return await self._tokens.header()

    async def refreshed(self, stale: bytes) -> bytes | Verdict:
        return await self._tokens.invalidate(stale)

    def outbound(self, request: PushRequest) -> Outbound | Verdict:
        body = fcm_message(request)
        if isinstance(body, Verdict):
            return body
        return Outbound(self._path, _FIELDS, body, same_path=True)

    def verdict(self, response: Response, now_s: float) -> Verdict:
        retry_after = response.headers.get(b"retry-after")
        text = None if retry_after is None else retry_after.decode("latin-1")
        return fcm_verdict(response.status, response.body, text, now_s)

    def refused_again(self, verdict: Verdict) -> Verdict:
        # A freshly issued token refused as well: the account lacks the permission.
        return Verdict(Kind.CONFIG, verdict.reason, verdict.detail)

    async def close(self) -> None:
        self._auth_transport.close()


PROVIDER = Provider(read_settings=read_settings, client=FcmClient)
