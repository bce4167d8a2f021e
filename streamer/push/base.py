"""The PushSender interface the worker calls for push channels.

A sender turns one PushRequest into a ChannelResult; it never raises for provider
answers (those are outcomes), only for bugs. Real APNs/FCM senders live beside this file.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from streamer.contract.event import Channel, PushContent
from streamer.core.policy import ChannelResult


class PushRequest(NamedTuple):
    """One push for one channel. A NamedTuple: the worker makes one per push, and a frozen
    dataclass costs several times as much to construct."""

    channel: Channel
    user_id: str
    event_key: str
    event_type: str
    device_token: str
    content: PushContent
    data: dict[str, object]


class PushSender(Protocol):
    """Delivers pushes for one channel (push_ios or push_android)."""

    channel: Channel

    async def send(self, request: PushRequest) -> ChannelResult: ...

    async def close(self) -> None: ...
