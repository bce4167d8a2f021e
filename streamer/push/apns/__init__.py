"""Apple Push Notification service (channel ``push_ios``): HTTP/2 with token authentication.

``settings`` reads APNS_*, ``token`` keeps the provider JWT, ``payload`` and ``outcome`` are
the pure request builder and answer classifier. The client below joins them for the shared
sender (``streamer.push.sender``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamer.push.apns.outcome import response_verdict
from streamer.push.apns.payload import apns_request, topic_field
from streamer.push.apns.settings import ApnsSettings, read_settings
from streamer.push.apns.token import ProviderToken
from streamer.push.base import PushRequest
from streamer.push.http2.client import Endpoint
from streamer.push.http2.connection import Response
from streamer.push.http2.proxy import proxy_for
from streamer.push.provider import Outbound, Provider
from streamer.push.settings import PushSettings
from streamer.push.tls import client_context
from streamer.push.verdict import Verdict


class ApnsClient:
    response_headers: tuple[bytes, ...] = ()

    def __init__(
        self,
        settings: ApnsSettings,
        push: PushSettings,
        on_refresh: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        context = client_context(push.ca_file, ("h2",))
        proxy = proxy_for(settings.host, settings.port)
        self.endpoint = Endpoint(settings.host, settings.port, context, proxy)
        self._token = ProviderToken(settings, on_refresh, clock)
        self._topic = topic_field(settings.topic)
        self._clock = clock

    async def credential(self) -> bytes:
        return self._token.header()

    async def refreshed(self, stale: bytes) -> bytes:
        return self._token.refresh(stale)

    def outbound(self, request: PushRequest) -> Outbound | Verdict:
        return apns_request(request, self._topic, self._clock())

    def verdict(self, response: Response, now_s: float) -> Verdict:
        return response_verdict(response)

    def refused_again(self, verdict: Verdict) -> Verdict:
        # A fresh JWT called expired: our clock is off. Retried, bounded by MAX_DELIVERIES.
        return verdict

    async def close(self) -> None:
        return None


PROVIDER = Provider(read_settings=read_settings, client=ApnsClient)
