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

from streamer.contract.event import Channel
from streamer.core.policy import ChannelResult
from streamer.push.base import PushRequest
from streamer.push.http2.client import Http2Pool, RequestFailed
from streamer.push.http2.hpack import Field
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
        built = self._client.outbound(request)
        verdict = built if isinstance(built, Verdict) else await self._send(built)
        self._observer.outcome(verdict, request.device_token)
        return verdict.result(self.channel)

    async def _send(self, outbound: Outbound) -> Verdict:
        deadline = self._loop.time() + self._timeout_s
        credential = await self._client.credential()
        if isinstance(credential, Verdict):
            return credential
        verdict = await self._attempt(outbound, credential, deadline)
        if verdict.kind is not Kind.REFRESH_AUTH:
            return verdict
        credential = await self._client.refreshed(credential)
        if isinstance(credential, Verdict):
            return credential
        verdict = await self._attempt(outbound, credential, deadline)
        if verdict.kind is Kind.REFRESH_AUTH:
            return self._client.refused_again(verdict)
        return verdict

    async def _attempt(self, outbound: Outbound, credential: bytes, deadline: float) -> Verdict:
        fields: list[Field] = [
            *self._pseudo,
            (b":path", outbound.path, outbound.same_path),
            (b"authorization", credential, True),
            *outbound.fields,
        ]
        started = time.perf_counter()
        try:
            response = await self._pool.request(fields, outbound.body, deadline)
        except RequestFailed as exc:
            return connection_failure(self._name, str(exc))
        finally:
            self._observer.request_done(time.perf_counter() - started)
        return self._client.verdict(response, time.time())

    async def close(self) -> None:
        await self._pool.close()
        await self._client.close()
