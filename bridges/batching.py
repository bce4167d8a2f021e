"""How a batch of stream writes reaches Redis exactly once. Pure: no I/O.

A bridge writes each batch it holds with one script call per target stream
(``lua/xadd_batch.lua``), all pipelined in one round trip. A bridge process (an *instance*,
named at random when it starts) writes its batches one after the other, numbered by a
sequence; each call keeps a progress record per instance and stream
(``p:<instance>:<chunk>``) holding the sequence number of the last batch it wrote there and
the outcome of each entry of it so far. Running a call again resumes after what that batch
already wrote, and a try of an older batch (a reply that never came, its request held by a
frozen Redis or retransmitted after a partition) writes nothing at all. So retrying a write
that may have happened never doubles it, whichever entries it had reached, and the records
cost a few keys per process, not one per batch or message.

A batch spans several streams (one per ingress partition), and in Redis Cluster a script
may only touch one slot: hence one call per stream, each with its records in that stream's
slot. A call that succeeded is skipped whole by the retry; one that failed is resumed.

Redeliveries are another matter: RabbitMQ sends a message again when the bridge lost its
connection or crashed before acking it, in a new batch. Each AMQP message's digest is
recorded with its entry in a hash per stream and time bucket (cheaper than one key per
message); a redelivered message, or one with a ``message_id``, is skipped when its digest
is found in the buckets that cover the marker TTL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bridges.core import StreamWrite
from streamer.contract.keys import Keys

# Entries per script call: bounds one call's time inside Redis (~2 ms), its argument count
# and the Lua stack (digests are recorded with one HSET per call).
MAX_CALL_ENTRIES = 1000
# Width of a digest bucket (a hash per stream and period): lookups check about TTL/BUCKET_S
# + 2 buckets per checked message (5 at the default hour), and digests outlive their TTL by
# at most this long.
BUCKET_S = 1800


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script call: the writes at ``positions`` of the batch, all to ``stream``, with
    the progress record ``progress`` (a key in the stream's slot)."""

    stream: str
    progress: str
    positions: tuple[int, ...]


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first non-empty {...}, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def marker_key(keys: Keys, stream: str, marker: str) -> str:
    """A bridge bookkeeping key in the same cluster slot as ``stream``, so that one script
    may touch both."""
    return f"{keys.prefix}bridged:{{{hash_tag(stream)}}}:{marker}"


def plan_calls(writes: Sequence[StreamWrite], keys: Keys, instance: str) -> list[ScriptCall]:
    """The script calls that write ``writes``: grouped by stream, in batch order within each
    stream, at most MAX_CALL_ENTRIES each. The same writes always give the same calls,
    which is what makes a retry resume instead of repeat. A stream's n-th call of every
    batch of ``instance`` shares one progress record."""
    by_stream: dict[str, list[int]] = {}
    for position, write in enumerate(writes):
        by_stream.setdefault(write.stream, []).append(position)
    calls: list[ScriptCall] = []
    for stream, positions in by_stream.items():
        for chunk, start in enumerate(range(0, len(positions), MAX_CALL_ENTRIES)):
            progress = marker_key(keys, stream, f"p:{instance}:{chunk}")
            calls.append(
                ScriptCall(stream, progress, tuple(positions[start : start + MAX_CALL_ENTRIES]))
            )
    return calls


def digest_buckets(keys: Keys, stream: str, now_s: float, ttl_s: int) -> tuple[list[str], int]:
    """The digest hashes of ``stream`` a lookup checks, the current one (the one written
    to) first, and how many seconds the current one must live.

    Buckets are BUCKET_S wide whatever the TTL, so a bridge restarted with another
    BRIDGE_DEDUPE_TTL_S still finds what its predecessor recorded. A digest recorded at
    ``t`` in bucket ``b`` must be found until ``t + ttl_s``, when the current bucket is at
    most ``b + ceil(ttl_s / BUCKET_S)``: lookups check that many buckets back, and bucket
    ``b`` lives ``ttl_s`` past its end (a digest is kept between one TTL and one TTL plus
    BUCKET_S). The time is this bridge's clock; lookups also check the next bucket, so
    a bridge whose clock is behind another's by less than BUCKET_S finds what it recorded."""
    current = int(now_s // BUCKET_S)
    back = math.ceil(ttl_s / BUCKET_S)
    buckets = [current, current + 1, *range(current - 1, current - back - 1, -1)]
    names = [marker_key(keys, stream, f"d:{b}") for b in buckets]
    return names, math.ceil((current + 1) * BUCKET_S + ttl_s - now_s)


def outcomes(calls: Sequence[ScriptCall], replies: Sequence[bytes], total: int) -> list[bool]:
    """Per write of the batch, in order: True if appended, False if skipped as a duplicate.
    ``replies`` are the scripts' outcome strings (one letter per entry of its call)."""
    written = [False] * total
    for call, reply in zip(calls, replies, strict=True):
        if len(reply) != len(call.positions):
            raise ValueError(f"script reply {reply!r} for {len(call.positions)} entries")
        for position, letter in zip(call.positions, reply, strict=True):
            written[position] = letter == ord("W")
    return written
