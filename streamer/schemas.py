"""Wire schemas: the ingress event, the socket frame, push content.

Bytes become these Structs here and only here (decode at the edge). Decoders and
encoders are built once, at import.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Channel = Literal["websocket", "push_ios", "push_android"]
CHANNELS: tuple[Channel, ...] = ("websocket", "push_ios", "push_android")
PUSH_CHANNELS: tuple[Channel, ...] = ("push_ios", "push_android")

# No whitespace (URL paths) and no braces (they would break the Redis Cluster hash tag).
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\s{}]+$")]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class NotificationPayload(msgspec.Struct, frozen=True):
    """One user-facing event as producers write it (the seed's NotificationPayload).

    Unknown fields are ignored so producers can add fields before streamer knows them.
    """

    user_id: UserId
    event_type: EventType
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    target_channels: Annotated[list[Channel], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["websocket"]
    )
    device_token: str | None = None
    device_type: str | None = None
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None

    def channels(self) -> tuple[Channel, ...]:
        """Target channels without repeats, in the producer's order."""
        return tuple(dict.fromkeys(self.target_channels))

    def token(self) -> str | None:
        """The device token, from the top level or, failing that, from data."""
        if self.device_token:
            return self.device_token
        nested = self.data.get("device_token")
        return nested if isinstance(nested, str) and nested else None


class PushContent(msgspec.Struct, frozen=True):
    """What a push notification shows: title/body/deep link, the rest as custom data."""

    title: str | None = None
    body: str | None = None
    deep_link_url: str | None = None
    custom: dict[str, Any] = msgspec.field(default_factory=dict)


_PUSH_FIELDS = frozenset({"title", "body", "deep_link_url", "device_token", "device_type"})


def push_content(payload: NotificationPayload) -> PushContent:
    data = payload.data

    def text(key: str) -> str | None:
        value = data.get(key)
        return None if value is None else str(value)

    custom = {k: v for k, v in data.items() if k not in _PUSH_FIELDS}
    return PushContent(text("title"), text("body"), text("deep_link_url"), custom)


class SocketMessage(msgspec.Struct, frozen=True):
    """Server -> client frame (the seed's WebSocketMessage plus the user-log id)."""

    id: str
    type: str
    content: dict[str, Any]


payload_decoder = msgspec.json.Decoder(NotificationPayload)
json_encoder = msgspec.json.Encoder()


def encode_content(payload: NotificationPayload) -> bytes:
    """The event's data as JSON, stored once in the user log and reused for every frame."""
    return json_encoder.encode(payload.data)


def socket_frame(log_id: str, event_type: str, content_json: bytes) -> bytes:
    """Assemble a SocketMessage frame from already-encoded parts, without re-encoding content.

    Equivalent to encoding SocketMessage(id, type, content); the gateway builds each frame
    once and sends the same bytes to every socket of the user.
    """
    return b"".join(
        (
            b'{"id":',
            json_encoder.encode(log_id),
            b',"type":',
            json_encoder.encode(event_type),
            b',"content":',
            content_json,
            b"}",
        )
    )
