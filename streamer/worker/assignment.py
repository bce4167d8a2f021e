"""Which worker owns what: the units of work and their assignment. Pure: no I/O.

A unit is one stream read by one worker at a time: each ingress partition, plus the
compatibility stream (``STREAM_KEY``), whose entries are routed to the partitions. Units are
dealt round-robin over the live workers in id order, so every worker computes the same
assignment from the same membership; workers beyond the number of units stand by. Leases
(``streamer.worker.leases``) make the assignment safe while views of the membership differ
for a moment: a unit changes hands only once its old owner released it or its lease expired.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from streamer.contract.keys import Keys
from streamer.contract.partitions import sibling_key

COMPAT = -1  # the index of the compatibility stream's unit


class Unit(msgspec.Struct, frozen=True):
    """One stream with its consumer group, and where its decisions go. (A msgspec Struct:
    units key the worker's per-batch dictionaries, and its hash is computed in C.)"""

    index: int  # partition index, or COMPAT
    stream: str
    lease: str
    dlq: str
    feedback: str
    dlq_marks: str  # routing marks of the DLQ (the compatibility stream dead-letters by routing)

    @property
    def name(self) -> str:
        return "compat" if self.index == COMPAT else f"p{self.index}"


def units(keys: Keys) -> tuple[Unit, ...]:
    """Every unit: the partitions in order, then the compatibility stream. The compatibility
    stream's own DLQ takes what cannot be routed (undecodable entries), through a routing
    mark, since in Redis Cluster it lies in another slot than the stream."""
    parts = tuple(
        Unit(p.index, p.stream, p.lease, p.dlq, p.feedback, sibling_key(p.dlq, ":routed"))
        for p in keys.partitions
    )
    compat = Unit(
        COMPAT,
        keys.stream,
        sibling_key(keys.stream, ":lease"),
        keys.dlq,
        keys.feedback,
        sibling_key(keys.dlq, ":routed"),
    )
    return (*parts, compat)


def assign(unit_count: int, live_workers: Sequence[str], me: str) -> frozenset[int]:
    """The positions (0 .. unit_count-1) of the units ``me`` should own: position i goes to
    the (i mod W)-th of the W live workers sorted by id. Nothing while ``me`` is not live."""
    workers = sorted(set(live_workers))
    if me not in workers:
        return frozenset()
    mine = workers.index(me)
    return frozenset(i for i in range(unit_count) if i % len(workers) == mine)
