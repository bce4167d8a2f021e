"""Where an event's work is done: here, in other partitions, or both. Pure: no I/O.

Each user and topic lives in one partition (``streamer.contract.partitions``); its owner
appends the user's (topic's) events to its log in stream order. An entry read from a unit
is split accordingly:
- the compatibility stream only routes: every entry goes to the partitions of its targets
  (a broadcast to partition 0, an undecodable entry to the compatibility DLQ);
- a partition handles its own users and topic (and the pushes of a single user it owns), and
  forwards the entry once to each other partition that owns one of its targets, unless the
  entry was itself forwarded (``routed_from``): then the other targets are their own
  partitions' business, which the origin has already forwarded to.
"""

from __future__ import annotations

import msgspec

from streamer.contract.event import NotificationPayload
from streamer.contract.partitions import topic_partition, user_partition
from streamer.worker.assignment import COMPAT

BROADCAST_PARTITION = 0


class Plan(msgspec.Struct, frozen=True):
    users: tuple[str, ...] = ()  # users whose logs this unit appends to
    topic: str | None = None  # the topic whose log this unit appends to
    broadcast: bool = False  # deliver to every live gateway, here
    pushes: bool = False  # this unit sends the event's pushes (it has push channels)
    forward: tuple[int, ...] = ()  # partitions the entry is forwarded to, in order

    @property
    def websocket(self) -> bool:
        return bool(self.users or self.topic is not None or self.broadcast)


def plan(payload: NotificationPayload, here: int, partitions: int, routed: bool) -> Plan:
    """What unit ``here`` (a partition index, or COMPAT) does with an event."""
    if payload.user_id is not None and here != COMPAT:
        home = user_partition(payload.user_id, partitions)
        if home == here:  # the usual case, first: one user, in the partition read
            channels = payload.target_channels
            websocket = "websocket" in channels
            return Plan(
                users=(payload.user_id,) if websocket else (),
                pushes=len(channels) > channels.count("websocket"),
            )
    users = payload.users()
    homes = [user_partition(u, partitions) for u in users]
    topic_home = None if payload.topic is None else topic_partition(payload.topic, partitions)
    if here == COMPAT:
        targets = [*homes, *([] if topic_home is None else [topic_home])]
        if payload.broadcast:
            targets.append(BROADCAST_PARTITION)
        return Plan(forward=tuple(sorted(set(targets))))
    local = tuple(u for u, home in zip(users, homes, strict=True) if home == here)
    forward: tuple[int, ...] = ()
    if not routed:
        elsewhere = {home for home in homes if home != here}
        if topic_home is not None and topic_home != here:
            elsewhere.add(topic_home)
        forward = tuple(sorted(elsewhere))
    return Plan(
        users=local if "websocket" in payload.target_channels else (),
        topic=payload.topic if topic_home == here else None,
        broadcast=payload.broadcast,
        pushes=payload.user_id is not None
        and bool(local)
        and any(c != "websocket" for c in payload.target_channels),
        forward=forward,
    )
