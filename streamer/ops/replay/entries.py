"""Which entries a replay or requeue takes, and the fields it appends for them. Pure.

A replayed or requeued entry carries ``replay_of`` (the id of the entry it repeats), so
the worker treats it as a deliberate second delivery and dedupes it on its own new id
(streamer.contract.decode). A requeued dead letter also carries ``requeued_from`` (its DLQ id) and
loses the DLQ's bookkeeping fields, so it looks like any ingress entry again.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.contract.decode import decode_payload
from streamer.contract.event import CHANNELS, NotificationPayload
from streamer.ops.replay.ids import BadInput

Fields = dict[bytes, bytes]

REPLAY_OF = b"replay_of"
REQUEUED_FROM = b"requeued_from"
ROUTED_FROM = b"routed_from"  # a copy a worker forwarded from another stream
# What the worker adds when it dead-letters an entry (the DLQ contract).
DLQ_FIELDS = (b"reason", b"error", b"source_id", b"deliveries")


def payload_of(fields: Fields) -> NotificationPayload | None:
    """The entry's decoded payload, or None when the worker could not decode it either."""
    raw = fields.get(b"payload")
    if raw is None:
        return None
    # No size limit here: a filter only reads the payload, the worker enforces the limit.
    result = decode_payload(raw, len(raw))
    return None if isinstance(result, tuple) else result


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Conditions an entry must all meet. Payload conditions never match an entry whose
    payload cannot be decoded (there is no user or type to compare)."""

    user: str | None = None
    event_type: str | None = None
    channel: str | None = None
    reason: str | None = None  # dead letters only
    originals_only: bool = False  # skip copies forwarded from another stream (routed_from)

    def __post_init__(self) -> None:
        if self.channel is not None and self.channel not in CHANNELS:
            raise BadInput(f"unknown channel {self.channel!r} (one of {', '.join(CHANNELS)})")

    @property
    def on_payload(self) -> bool:
        return any(v is not None for v in (self.user, self.event_type, self.channel))

    def matches(self, fields: Fields) -> bool:
        if self.originals_only and ROUTED_FROM in fields:
            return False
        if self.reason is not None and fields.get(b"reason") != self.reason.encode():
            return False
        if not self.on_payload:
            return True
        payload = payload_of(fields)
        return payload is not None and self._payload_matches(payload)

    def _payload_matches(self, payload: NotificationPayload) -> bool:
        return (
            (self.user is None or payload.user_id == self.user)
            and (self.event_type is None or payload.event_type == self.event_type)
            and (self.channel is None or self.channel in payload.channels())
        )


def replayed_fields(entry_id: bytes, fields: Fields) -> Fields:
    """An ingress entry appended again: the same fields, marked as a replay of it."""
    out = {k: v for k, v in fields.items() if k not in (REQUEUED_FROM, REPLAY_OF)}
    out[REPLAY_OF] = entry_id
    return out


def requeued_fields(dlq_id: bytes, fields: Fields) -> Fields:
    """A dead letter appended to the ingress stream again: its original fields, marked as
    a replay of the entry that was dead-lettered and as requeued from this DLQ entry."""
    out = {k: v for k, v in fields.items() if k not in DLQ_FIELDS}
    out[REPLAY_OF] = fields.get(b"source_id") or dlq_id
    out[REQUEUED_FROM] = dlq_id
    return out


def summary(fields: Fields) -> str:
    """One line describing an entry: user, type and channels, or why it is undecodable."""
    payload = payload_of(fields)
    if payload is None:
        return "(payload not decodable)"
    return (
        f"user={payload.user_id} type={payload.event_type} channels={','.join(payload.channels())}"
    )
