"""Pure decisions of the bridges: what to write, what to reject, what to ack. No I/O.

The adapters (``bridges.rabbitmq``, ``bridges.pubsub``) turn broker messages into the
inputs below, carry the plans out and count the outcomes.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from streamer.contract.decode import decode_payload
from streamer.contract.event import NotificationPayload
from streamer.contract.keys import Keys
from streamer.core.policy import backoff_ms

# DLQ reason of an invalid Pub/Sub message (the decode reason goes into `error`).
BRIDGE_INVALID = "bridge_invalid"
# Reject reason of an AMQP message the bridge failed to plan (a bug, or a broker oddity):
# that one message is dead-lettered instead of crashing the bridge on every redelivery.
BRIDGE_ERROR = "bridge_error"

Fields = dict[str, bytes | str]

# The records made per message are msgspec Structs: built in C, ~0.2 µs each where a frozen
# dataclass takes ~2 µs, and the bridges make two or three per message.


class StreamWrite(msgspec.Struct, frozen=True):
    """One XADD of ``fields`` to ``stream``.

    ``digest`` identifies the message across deliveries (AMQP): it is recorded with the
    entry so that a later redelivery can be recognised. When ``check``, the write is
    skipped if that digest was recorded before. Pub/Sub writes carry neither: nothing
    redelivers them, and the progress records (``bridges.batching``) cover our own
    retries."""

    stream: str
    fields: Fields
    digest: bytes | None = None
    check: bool = False


class AmqpDelivery(msgspec.Struct, frozen=True):
    tag: int
    queue: str
    routing_key: str
    message_id: str | None
    redelivered: bool
    body: bytes


class Rejection(msgspec.Struct, frozen=True):
    tag: int
    queue: str
    reason: str
    error: str


@dataclass(slots=True)
class AmqpPlan:
    """Write ``writes`` in one round trip; then reject ``rejects`` one by one; then ack
    every tag up to ``ack_through`` with ``multiple=True``.

    Rejects go first so that the multiple-ack cannot sweep up a message meant for the
    dead-letter queue (tags are per channel and increase, so all tags up to
    ``ack_through`` still outstanding are this batch's writes)."""

    writes: list[StreamWrite] = field(default_factory=list)
    rejects: list[Rejection] = field(default_factory=list)
    ack_through: int | None = None


class PubSubMessage(msgspec.Struct, frozen=True):
    channel: str
    data: bytes


def target_stream(payload: NotificationPayload, keys: Keys) -> str:
    """The stream a valid event is written to: its ingress partition, as every producer
    chooses it (``Keys.ingress_for``)."""
    return keys.ingress_for(payload)


def dead_letter_stream(keys: Keys) -> str:
    """Where an invalid Pub/Sub message goes. It has no valid user, hence no partition of
    its own: the first partition's dead letters hold them all, so they are in one place."""
    return keys.partitions[0].dlq


def amqp_digest(delivery: AmqpDelivery) -> bytes:
    """What a redelivery is recognised by, within its queue: the producer's message id,
    else the routing key and body. Hashed to a fixed 16 bytes, so recording one costs the
    same few dozen bytes of Redis whatever the queue name and id length."""
    queue = delivery.queue.encode() + b"\0"
    if delivery.message_id:
        identity = queue + b"mid\0" + delivery.message_id.encode()
    else:
        identity = queue + b"body\0" + delivery.routing_key.encode() + b"\0" + delivery.body
    return hashlib.sha256(identity).digest()[:16]  # 128 bits: no collision in practice


def amqp_check(delivery: AmqpDelivery) -> bool:
    """Whether a recorded digest may skip this delivery: a redelivery (it may have been
    written before the bridge lost its connection or crashed), or a message with a
    producer's ``message_id`` (a publisher retrying a publish sends the same id again).

    A first delivery without ``message_id`` is never skipped: two identical bodies are two
    messages. Our own retry of a batch is made safe by its progress records instead
    (``bridges.batching``), not by this check."""
    return delivery.redelivered or bool(delivery.message_id)


def amqp_fields(delivery: AmqpDelivery) -> Fields:
    fields: Fields = {
        "payload": delivery.body,
        "amqp_queue": delivery.queue,
        "amqp_routing_key": delivery.routing_key,
        "amqp_redelivered": "1" if delivery.redelivered else "0",
    }
    if delivery.message_id:
        fields["amqp_message_id"] = delivery.message_id
    return fields


def plan_amqp(deliveries: Sequence[AmqpDelivery], keys: Keys, max_bytes: int) -> AmqpPlan:
    plan = AmqpPlan()
    for delivery in deliveries:
        try:
            write = _amqp_write(delivery, keys, max_bytes)
        except Exception as exc:  # one poison message must not stop the bridge
            write = Rejection(delivery.tag, delivery.queue, BRIDGE_ERROR, repr(exc))
        if isinstance(write, Rejection):
            plan.rejects.append(write)
            continue
        plan.writes.append(write)
        plan.ack_through = max(plan.ack_through or 0, delivery.tag)
    return plan


def _amqp_write(delivery: AmqpDelivery, keys: Keys, max_bytes: int) -> StreamWrite | Rejection:
    payload = decode_payload(delivery.body, max_bytes)
    if isinstance(payload, tuple):
        return Rejection(delivery.tag, delivery.queue, *payload)
    return StreamWrite(
        target_stream(payload, keys),
        amqp_fields(delivery),
        amqp_digest(delivery),
        amqp_check(delivery),
    )


def plan_pubsub(messages: Sequence[PubSubMessage], keys: Keys, max_bytes: int) -> list[StreamWrite]:
    """Valid messages to their ingress partition, invalid ones to the dead letters."""
    writes = []
    for message in messages:
        payload = decode_payload(message.data, max_bytes)
        if isinstance(payload, tuple):
            fields = pubsub_dead_letter(message, *payload)
            writes.append(StreamWrite(dead_letter_stream(keys), fields))
        else:
            fields = {"payload": message.data, "pubsub_channel": message.channel}
            writes.append(StreamWrite(target_stream(payload, keys), fields))
    return writes


class Subscriptions:
    """Which copy of a published message to bridge. Redis delivers one PUBLISH once per
    matching subscription: as a ``message`` on a subscribed channel and as a ``pmessage``
    for each matching pattern. We keep exactly one: the channel's if it is subscribed,
    else the first configured pattern's that matches (Redis' own glob rules, below)."""

    def __init__(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        self._channels = frozenset(c.encode() for c in channels)
        self._patterns = [(p.encode(), redis_glob(p.encode())) for p in patterns]

    def keep(self, channel: bytes, pattern: bytes | None) -> bool:
        if pattern is None:
            return True
        if channel in self._channels:
            return False
        for raw, regex in self._patterns:
            if regex.fullmatch(channel):
                return raw == pattern
        return True  # Redis matched a pattern we do not: keep it rather than lose it


def redis_glob(pattern: bytes) -> re.Pattern[bytes]:
    """Redis' glob (PSUBSCRIBE, KEYS) as a regex, mirroring ``stringmatchlen`` in Redis'
    util.c: ``*``, ``?``, ``\\x`` escapes and ``[...]`` sets with ``^`` negation, ``a-z``
    ranges and escapes. ``fnmatch`` differs (``[!...]``, no escapes), so it could pick an
    owner Redis never matched and drop the only copy."""
    parts, i = [], 0
    while i < len(pattern):
        c, i = pattern[i], i + 1
        if c == ord("*"):
            parts.append(b".*")
        elif c == ord("?"):
            parts.append(b".")
        elif c == ord("["):
            part, i = _glob_set(pattern, i)
            parts.append(part)
        else:
            if c == ord("\\") and i < len(pattern):
                c, i = pattern[i], i + 1
            parts.append(_byte(c))
    return re.compile(b"".join(parts), re.DOTALL)


def _glob_set(pattern: bytes, i: int) -> tuple[bytes, int]:
    """The regex of the set starting at ``pattern[i]`` (after ``[``), and where it ends."""
    negate = i < len(pattern) and pattern[i] == ord("^")
    i += negate
    items = []
    while i < len(pattern) and pattern[i] != ord("]"):
        if pattern[i] == ord("\\") and i + 1 < len(pattern):
            items.append(_byte(pattern[i + 1]))
            i += 2
        elif i + 2 < len(pattern) and pattern[i + 1] == ord("-"):
            low, high = sorted((pattern[i], pattern[i + 2]))
            items.append(_byte(low) + b"-" + _byte(high))
            i += 3
        else:
            items.append(_byte(pattern[i]))
            i += 1
    if not items:  # "[]" matches nothing, "[^]" any one byte
        return (b"." if negate else b"(?!)"), i + 1
    return b"[" + (b"^" if negate else b"") + b"".join(items) + b"]", i + 1


def _byte(c: int) -> bytes:
    return b"\\x%02x" % c


def pubsub_dead_letter(message: PubSubMessage, reason: str, error: str) -> Fields:
    return {
        "payload": message.data,
        "pubsub_channel": message.channel,
        "reason": BRIDGE_INVALID,
        "error": f"{reason}: {error}"[:2000],
        "source_id": f"pubsub:{message.channel}",
        "deliveries": "1",
    }


class Backoff:
    """Capped exponential backoff with jitter for reconnects and write retries."""

    def __init__(self, base_ms: int, max_ms: int, rng: random.Random | None = None) -> None:
        self._base_ms = base_ms
        self._max_ms = max_ms
        self._rng = rng
        self.attempts = 0

    def next_s(self) -> float:
        self.attempts += 1
        delay = backoff_ms(self.attempts, base_ms=self._base_ms, cap_ms=self._max_ms, rng=self._rng)
        return delay / 1000

    def reset(self) -> None:
        self.attempts = 0
