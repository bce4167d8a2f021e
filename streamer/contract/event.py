"""The ingress event (contract): its schema, the user-id rule, push content.

Bytes become these Structs here and only here (decode at the edge). Decoders and
encoders are built once, at import.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from streamer.push.registry import PUSH_CHANNEL_NAMES

# The channels an event may target: the WebSocket, and one per push provider in the
# registry (streamer.push.registry, the one home of push channel names: push_ios for APNs,
# push_android for FCM). A closed set: msgspec refuses any other name in target_channels.
PUSH_CHANNELS: tuple[str, ...] = PUSH_CHANNEL_NAMES
CHANNELS: tuple[str, ...] = ("websocket", *PUSH_CHANNELS)
if TYPE_CHECKING:
    Channel = str  # type checkers cannot follow a Literal built from the registry
else:
    Channel = Literal[CHANNELS]

# The one user-id rule, used by the event schema, the gateway's URL, the CLI and the browser
# client (notify-client.js repeats it; a test checks they agree): 1 to 256 characters, none
# of them a control character, a space of any kind, or a brace (braces would break the Redis
# Cluster hash tag of the user's keys). Spelled out rather than ``\s`` so that Python and
# JavaScript mean exactly the same characters.
USER_ID_PATTERN = (
    r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff{}]{1,256}$"
)
_USER_ID = re.compile(USER_ID_PATTERN)
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=USER_ID_PATTERN)]


def valid_user_id(text: str) -> bool:
    return _USER_ID.match(text) is not None


EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# Topic names follow the user-id rule too (they name Redis keys and travel in URLs).
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=USER_ID_PATTERN)]

# Most users one event may name in ``user_ids``; a longer list is dead-lettered
# (``too_many_users``). Each listed user costs a log append and an inbox delivery.
MAX_USER_IDS = 1000


class NotificationPayload(msgspec.Struct, frozen=True):
    """One user-facing event as producers write it (the seed's NotificationPayload).

    It names its audience in exactly one way: ``user_id`` (one user), ``user_ids`` (several,
    each getting it once), ``topic`` (every socket subscribed to it) or ``broadcast`` (every
    connected socket, best effort). Push channels need a single ``user_id``: a device token
    belongs to one user. Unknown fields are ignored so producers can add fields before
    streamer knows them.
    """

    event_type: EventType
    user_id: UserId | None = None
    user_ids: list[UserId] | None = None
    topic: Topic | None = None
    broadcast: bool = False
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    target_channels: Annotated[list[Channel], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["websocket"]
    )
    device_token: str | None = None
    device_type: str | None = None
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None

    def __post_init__(self) -> None:
        audiences = sum(
            (self.user_id is not None, self.user_ids is not None, self.topic is not None)
        ) + bool(self.broadcast)
        if audiences != 1:
            raise ValueError("name exactly one of user_id, user_ids, topic, broadcast")
        if self.user_ids is not None and not self.user_ids:
            raise ValueError("user_ids must not be empty")
        if self.user_id is None and any(c != "websocket" for c in self.target_channels):
            raise ValueError("push channels need a single user_id (a device has one user)")

    def channels(self) -> tuple[Channel, ...]:
        """Target channels without repeats, in the producer's order."""
        return tuple(dict.fromkeys(self.target_channels))

    def users(self) -> tuple[str, ...]:
        """The users this event is for, each once, in the producer's order (none for a topic
        or a broadcast)."""
        if self.user_id is not None:
            return (self.user_id,)
        return tuple(dict.fromkeys(self.user_ids or ()))

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


payload_decoder = msgspec.json.Decoder(NotificationPayload)
json_encoder = msgspec.json.Encoder()


def encode_content(payload: NotificationPayload) -> bytes:
    """The event's data as JSON, stored once in the user log and reused for every frame."""
    return json_encoder.encode(payload.data)
