"""The PushSender of every provider: a provider client (payloads, credential, answers) over
the shared HTTP/2 client.

Per push: build the request (a verdict instead when it cannot be sent), send it with the
current credential (at most PUSH_CONCURRENCY requests in flight per provider), and when the
provider calls that credential expired, send once more with a fresh one. Every request has a
deadline of PUSH_TIMEOUT_S from the start of the push; no answer by then is a transient
failure, and the stream is reset so a hung provider cannot hold the slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from streamer.contract.event import Channel
from streamer.core.policy import ChannelResult
from streamer.push.base import PushRequest
from streamer.push.http2.client import Http2Pool, RequestFailed
from streamer.push.http2.connection import Response
from streamer.push.observe import PushObserver
from streamer.push.provider import Outbound, ProviderClient
from streamer.push.registry import ProviderEntry
from streamer.push.settings import PushSettings
from streamer.push.verdict import Kind, Verdict, connection_failure

# A new connection only when every open one has no free stream; a few allow for a provider
# that advertises few concurrent streams on a new connection.
MAX_CONNECTIONS = 4
# Sends of a request the server never processed (GOAWAY, REFUSED_STREAM): safe to repeat.
ATTEMPTS = 3


class HttpPushSender:
    """Create inside the running event loop."""

    def __init__(
        self,
        entry: ProviderEntry,
        client: ProviderClient,
        push: PushSettings,
        observer: PushObserver,
    ) -> None:
        self.channel: Channel = entry.channel
        self._name = entry.name
        self._client = client
        self._observer = observer
        self._pool = Http2Pool(
            client.endpoint,
            client.response_headers,
            max_in_flight=push.concurrency,
            max_connections=MAX_CONNECTIONS,
            attempts=ATTEMPTS,
        )
        self._timeout_s = push.timeout_s
        self._loop = asyncio.get_running_loop()
        method_scheme = ((b":method", b"POST", True), (b":scheme", b"https", True))
        self._pseudo = (*method_scheme, (b":authority", client.endpoint.authority, True))

    async def send(self, request: PushRequest) -> ChannelResult:
        # One coroutine per push (see MarkedSender.send).
        built = self._client.outbound(request)
        if isinstance(built, Verdict):
            return self._done(request, built)
        deadline = self._loop.time() + self._timeout_s
        credential = await self._client.credential()
        if isinstance(credential, Verdict):
            return self._done(request, credential)
        verdict = await self._exchange(built, credential, deadline)
        if verdict.kind is Kind.REFRESH_AUTH:  # ours was called expired: once more, fresh
            fresh = await self._client.refreshed(credential)
            if isinstance(fresh, Verdict):
                return self._done(request, fresh)
            verdict = await self._exchange(built, fresh, deadline)
            if verdict.kind is Kind.REFRESH_AUTH:
                verdict = self._client.refused_again(verdict)
        return self._done(request, verdict)

    def _done(self, request: PushRequest, verdict: Verdict) -> ChannelResult:
        self._observer.outcome(verdict, request.device_token)
        return verdict.result(self.channel)

    def _exchange(
        self, outbound: Outbound, credential: bytes, deadline: float
    ) -> Awaitable[Verdict]:
        fields = (
            *self._pseudo,
            (b":path", outbound.path, outbound.same_path),
            (b"authorization", credential, True),
            *outbound.fields,
        )
        return self._pool.request(fields, outbound.body, deadline, self._answer)

    def _answer(self, response: Response | RequestFailed, seconds: float) -> Verdict:
        self._observer.request_done(seconds)
        if isinstance(response, RequestFailed):
            return connection_failure(self._name, str(response))
        return self._client.verdict(response, time.time())

    async def close(self) -> None:
        await self._pool.close()
        await self._client.close()
