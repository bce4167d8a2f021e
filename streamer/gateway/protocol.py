"""The socket protocol's pure parts: request paths, client frames, control frames."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

WS_PREFIX = "/ws/"
CLOSE_TOKEN_EXPIRED = 4001  # the token's exp passed on an open socket: fetch a new one
CLOSE_SLOW_CLIENT = 4008  # the send buffer overflowed: reconnect and resume
CLOSE_RESYNC = 1012  # this gateway may have missed deliveries: reconnect and resume

# Close codes worth their own metric series; any other (a client may send anything) is "other".
_KNOWN_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 4001, 4008}
)


def close_code_label(code: int) -> str:
    """A bounded metric label for a close code."""
    return str(code) if code in _KNOWN_CLOSE_CODES else "other"


# Same rule as schemas.UserId: no whitespace (URL paths), no braces (cluster hash tags).
_USER_ID = re.compile(r"^[^\s{}/]{1,256}$")

PONG = b'{"type":"pong"}'


@dataclass(frozen=True, slots=True)
class SocketRequest:
    """What a ``/ws/{user_id}`` request asks for."""

    user_id: str
    token: str | None
    last_event_id: str | None


def parse_socket_path(target: str) -> SocketRequest | None:
    """``/ws/{user_id}?token=…&last_event_id=…`` -> SocketRequest; None for other paths."""
    parts = urlsplit(target)
    if not parts.path.startswith(WS_PREFIX):
        return None
    user_id = unquote(parts.path[len(WS_PREFIX) :])
    if not _USER_ID.match(user_id):
        return None
    query = parse_qs(parts.query)
    return SocketRequest(user_id, _first(query, "token"), _first(query, "last_event_id"))


def route_path(target: str) -> str:
    """The path of a request target without its query."""
    return urlsplit(target).path


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values and values[0] else None


class ClientFrame(msgspec.Struct, frozen=True):
    """A client -> server frame. Unknown types and fields are ignored."""

    type: str = ""
    last_event_id: str | None = None


_client_frame = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.json.Encoder()


def parse_client_frame(message: str | bytes) -> ClientFrame | None:
    """None for anything that is not a JSON object of the expected shape."""
    try:
        return _client_frame.decode(message)
    except msgspec.DecodeError:
        return None


class _Recovery(msgspec.Struct, frozen=True, tag_field="type", tag="_recovery"):
    recovered: bool
    replayed: int


def recovery_frame(recovered: bool, replayed: int) -> bytes:
    return _encoder.encode(_Recovery(recovered, replayed))
