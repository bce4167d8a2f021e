"""The WebSocket protocol between the gateway and browsers (contract). Pure: no I/O.

Everything a client depends on is defined here, once: the URL, how the token travels, the
server's frames, the client's frames and the close codes. The browser client
(``streamer/static/notify-client.js``) repeats the constants a client needs, and
``docs/asyncapi.yaml`` describes the protocol in AsyncAPI 3; tests check that both agree
with this module.

    URL      ws(s)://HOST/ws/{user_id}?token=JWT&last_event_id=ID   (resume after ID)
             ws(s)://HOST/ws/{user_id}?token=JWT&history=N          (first open: the newest
             N log entries, 1 <= N <= WS_MAX_REPLAY; ignored with last_event_id)
             ...&topics=a,b                                         (subscribe on connect)
    token    Authorization: Bearer JWT, ?token=JWT, or the subprotocol "bearer.JWT". Its
             optional ``topics`` claim lists the topics the user may join: exact names, or
             prefixes ending in "*" ("project:*" allows "project:42").
    server   {"id": "<log id>", "type": "<event type>", "content": {...}}   a user's event
             {"id", "type", "content", "topic": "<name>"}                   a topic's event
                                   ("id" is then the topic log's id)
             {"type", "broadcast": true, "content"}                         a broadcast
             {"type": "_recovery", "recovered": bool, "replayed": n}         after a resume
                                   or after the history (then recovered is true)
             {"type": "subscribed", "topic", "recovered": bool, "replayed": n}
                                   after a subscribe and its replay (recovered: the topic's
                                   log still had last_event_id; without one, true)
             {"type": "subscribe_refused", "topic", "reason"}   forbidden | invalid |
                                   too_many | unavailable
             {"type": "unsubscribed", "topic"}
             {"type": "pong"}                                               after a ping
    client   {"type": "ping"}
             {"type": "resume", "last_event_id": "<id>"}         (first frame: see README)
             {"type": "subscribe", "topic": "<name>", "last_event_id": "<id>"?}
             {"type": "unsubscribe", "topic": "<name>"}
             anything else is ignored
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from streamer.contract.event import valid_user_id

WS_PREFIX = "/ws/"
SUBPROTOCOL_PREFIX = "bearer."


class CloseCode(enum.IntEnum):
    """Close codes the gateway sends, and what the client should do on each."""

    NORMAL = 1000  # the client closed
    GOING_AWAY = 1001  # the gateway is shutting down: reconnect (any gateway) and resume
    INVALID_DATA = 1007  # a text frame that is not UTF-8: fix the client
    MESSAGE_TOO_BIG = 1009  # a client frame over WS_MAX_CLIENT_FRAME: fix the client
    INTERNAL_ERROR = 1011  # Redis failed while resuming: reconnect and resume
    RESYNC = 1012  # this gateway may have missed deliveries: reconnect and resume
    TOKEN_EXPIRED = 4001  # the token's exp passed on the open socket: new token, resume
    SLOW_CLIENT = 4008  # the send buffer overflowed: reconnect and resume


# Codes a peer may also send, worth their own metric series; anything else is "other".
_PEER_CLOSE_CODES = frozenset({1002, 1003, 1005, 1006, 1007, 1008})


def close_code_label(code: int) -> str:
    """A bounded metric label for a close code."""
    known = code in CloseCode._value2member_map_ or code in _PEER_CLOSE_CODES
    return str(code) if known else "other"


# --- the URL ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SocketRequest:
    """What a ``/ws/{user_id}`` request asks for. ``history`` is the raw ``?history=`` value
    (the gateway checks it against WS_MAX_REPLAY: see ``parse_history``)."""

    user_id: str
    token: str | None
    last_event_id: str | None
    history: str | None = None
    topics: tuple[str, ...] = ()  # ?topics=a,b: subscribe on connect (checked by the gateway)


def parse_history(text: str | None, max_replay: int) -> int | None:
    """``?history=N`` as a count: None when absent; ValueError unless 1 <= N <= max_replay."""
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= max_replay:
        raise ValueError(f"history must be an integer from 1 to {max_replay}")
    return int(text)


def parse_socket_path(target: str) -> SocketRequest | None:
    """``/ws/{user_id}?token=…&last_event_id=…`` -> SocketRequest; None for other paths
    and for a user id the event schema would refuse (one rule: ``valid_user_id``)."""
    parts = urlsplit(target)
    if not parts.path.startswith(WS_PREFIX):
        return None
    user_id = unquote(parts.path[len(WS_PREFIX) :])
    if not valid_user_id(user_id):
        return None
    query = parse_qs(parts.query)
    topics = tuple(t for value in query.get("topics", ()) for t in value.split(",") if t)
    return SocketRequest(
        user_id,
        _first(query, "token"),
        _first(query, "last_event_id"),
        _first(query, "history"),
        tuple(dict.fromkeys(topics)),
    )


def route_path(target: str) -> str:
    """The path of a request target without its query."""
    return urlsplit(target).path


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values and values[0] else None


# --- server frames ------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


class EventFrame(msgspec.Struct, frozen=True, omit_defaults=True):
    """Server -> client event (the seed's WebSocketMessage plus the log id, and the topic
    for a topic's event)."""

    id: str
    type: str
    content: dict[str, object]
    topic: str | None = None


class BroadcastFrame(msgspec.Struct, frozen=True):
    type: str
    broadcast: bool
    content: dict[str, object]


def event_frame(
    log_id: str, event_type: str, content_json: bytes, topic: str | None = None
) -> bytes:
    """An EventFrame assembled from already-encoded content, byte-for-byte what encoding
    the Struct gives: content is encoded once per event and reused for every socket."""
    parts = [b'{"id":', _encoder.encode(log_id), b',"type":', _encoder.encode(event_type)]
    parts += [b',"content":', content_json]
    if topic is not None:
        parts += [b',"topic":', _encoder.encode(topic)]
    parts.append(b"}")
    return b"".join(parts)


def broadcast_frame(event_type: str, content_json: bytes) -> bytes:
    """A BroadcastFrame from already-encoded content (no id: broadcasts are not logged)."""
    return b"".join(
        (
            b'{"type":',
            _encoder.encode(event_type),
            b',"broadcast":true,"content":',
            content_json,
            b"}",
        )
    )


class _Recovery(msgspec.Struct, frozen=True, tag_field="type", tag="_recovery"):
    recovered: bool
    replayed: int


def recovery_frame(recovered: bool, replayed: int) -> bytes:
    return _encoder.encode(_Recovery(recovered, replayed))


PONG = b'{"type":"pong"}'


# --- client frames ------------------------------------------------------------------------


# The types of the client frames the gateway acts on (any other type is ignored).
PING = "ping"  # answered with {"type": "pong"}
RESUME = "resume"  # the first frame only: replay after last_event_id (later: recovered false)
SUBSCRIBE = "subscribe"  # join a topic, replaying after last_event_id when given
UNSUBSCRIBE = "unsubscribe"
CLIENT_FRAME_TYPES = (PING, RESUME, SUBSCRIBE, UNSUBSCRIBE)


class ClientFrame(msgspec.Struct, frozen=True):
    """A client -> server frame. Unknown types and fields are ignored."""

    type: str = ""
    last_event_id: str | None = None
    topic: str | None = None


_client_frame = msgspec.json.Decoder(ClientFrame)


def parse_client_frame(message: str | bytes) -> ClientFrame | None:
    """None for anything that is not a JSON object of the expected shape."""
    try:
        return _client_frame.decode(message)
    except msgspec.DecodeError:
        return None


# --- topics ---------------------------------------------------------------------------------

TOPIC_FORBIDDEN = "forbidden"  # the token's topics claim does not allow it
TOPIC_INVALID = "invalid"  # not a valid topic name (the user-id rule)
TOPIC_TOO_MANY = "too_many"  # over WS_MAX_TOPICS_PER_SOCKET subscriptions on this socket
TOPIC_UNAVAILABLE = "unavailable"  # Redis failed while subscribing: try again
TOPIC_REFUSALS = (TOPIC_FORBIDDEN, TOPIC_INVALID, TOPIC_TOO_MANY, TOPIC_UNAVAILABLE)


def topic_allowed(topic: str, allowed: tuple[str, ...]) -> bool:
    """Whether a token's ``topics`` claim allows ``topic``: an exact name, or a prefix
    ending in ``*``."""
    for pattern in allowed:
        if pattern.endswith("*"):
            if topic.startswith(pattern[:-1]):
                return True
        elif topic == pattern:
            return True
    return False


class _Subscribed(msgspec.Struct, frozen=True, tag_field="type", tag="subscribed"):
    topic: str
    recovered: bool
    replayed: int


class _Refused(msgspec.Struct, frozen=True, tag_field="type", tag="subscribe_refused"):
    topic: str
    reason: str


class _Unsubscribed(msgspec.Struct, frozen=True, tag_field="type", tag="unsubscribed"):
    topic: str


def subscribed_frame(topic: str, recovered: bool, replayed: int) -> bytes:
    return _encoder.encode(_Subscribed(topic, recovered, replayed))


def refused_frame(topic: str, reason: str) -> bytes:
    return _encoder.encode(_Refused(topic, reason))


def unsubscribed_frame(topic: str) -> bytes:
    return _encoder.encode(_Unsubscribed(topic))
