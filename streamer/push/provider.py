"""What a provider package declares (``PROVIDER``), and the client the sender drives.

A provider is its settings reader and a factory for its ``ProviderClient``: the endpoint,
the credential (with its refresh), the pure payload builder and the pure answer classifier.
Everything else, HTTP/2, concurrency, timeouts, retry after a refreshed credential, metrics,
is the shared sender's (``streamer.push.sender``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from streamer.push.base import PushRequest
from streamer.push.http2.client import Endpoint
from streamer.push.http2.connection import Response
from streamer.push.http2.hpack import Field
from streamer.push.registry import ProviderEntry
from streamer.push.verdict import Verdict

if TYPE_CHECKING:
    from streamer.infra.settings import Env
    from streamer.push.settings import Problems, PushSettings

S = TypeVar("S")


class Outbound(NamedTuple):
    """One provider request: its path, the provider's own header fields, its body."""

    path: bytes
    fields: tuple[Field, ...]
    body: bytes
    same_path: bool = False  # the path repeats on every request: index it (HPACK)


class ProviderClient(Protocol):
    endpoint: Endpoint
    response_headers: tuple[bytes, ...]  # besides :status, the fields ``verdict`` reads

    async def credential(self) -> bytes | Verdict:
        """The ``authorization`` value, or a verdict when none can be had."""
        ...

    async def refreshed(self, stale: bytes) -> bytes | Verdict:
        """A new credential after ``stale`` was refused (unless one was got meanwhile)."""
        ...

    def outbound(self, request: PushRequest) -> Outbound | Verdict:
        """The request, or a verdict when it cannot be sent (refused before any I/O)."""
        ...

    def verdict(self, response: Response, now_s: float) -> Verdict: ...

    def refused_again(self, verdict: Verdict) -> Verdict:
        """What a refusal of a freshly refreshed credential means."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Provider(Generic[S]):
    # Reads the provider's variables, noting every missing or invalid one in Problems;
    # None when any was.
    read_settings: Callable[[Env, Problems], S | None]
    # Builds the client inside the running loop; the callback counts credential refreshes.
    client: Callable[[S, PushSettings, Callable[[], None]], ProviderClient]


def load(entry: ProviderEntry) -> Provider[Any]:
    provider = importlib.import_module(entry.package).PROVIDER
    if not isinstance(provider, Provider):
        raise TypeError(f"{entry.package}.PROVIDER is not a Provider")
    return provider
