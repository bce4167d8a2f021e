"""A gateway's inbox (the worker -> gateway contract). Pure: no I/O.

Workers append ONE inbox entry per gateway per batch, holding every delivery of that batch
for that gateway, each with its frame already encoded: the gateway decodes one msgpack array
per entry and writes the frames to sockets without any JSON work of its own.

    XADD {prefix}gw:{<gid>} * b <msgpack [[kind, target, id, prev, ts, frame], ...]>

``kind`` is ``u`` (``target`` is a user id), ``t`` (a topic) or ``b`` (a broadcast, target
``''``); ``id`` is the entry's id in the target's replay log (``''`` for a broadcast);
``prev`` the id before it in that log when it was appended (``''``: none known), so a socket
that has not seen ``prev`` yet is first sent the entries in between; ``ts`` the ingress
entry's time (ms), for latency metrics; ``frame`` the server -> client frame.
"""

from __future__ import annotations

import msgspec

BATCH_FIELD = b"b"
USER, TOPIC, BROADCAST = "u", "t", "b"


class Delivery(msgspec.Struct, array_like=True, frozen=True):
    kind: str
    target: str
    id: str
    prev: str
    ts: int
    frame: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Delivery])


def encode_batch(deliveries: list[Delivery]) -> bytes:
    return _encoder.encode(deliveries)


def decode_batch(raw: bytes) -> list[Delivery] | None:
    """The deliveries of one inbox entry; None when it is malformed."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
