"""Unit tests: where an event's work is done, and who owns which unit (no I/O)."""

from __future__ import annotations

from collections import Counter

from streamer.contract.event import NotificationPayload
from streamer.contract.partitions import topic_partition, user_partition
from streamer.worker.assignment import COMPAT, assign
from streamer.worker.routing import BROADCAST_PARTITION, Plan, plan

P = 16


def event(**fields: object) -> NotificationPayload:
    return NotificationPayload(event_type="x", **fields)  # type: ignore[arg-type]


def users_in(partition: int, count: int) -> list[str]:
    found = [f"u{n}" for n in range(10_000) if user_partition(f"u{n}", P) == partition]
    return found[:count]


def test_a_single_user_event_is_handled_in_its_partition_only() -> None:
    """Its own partition appends and pushes; the compatibility stream forwards it there;
    another partition (a producer's mistake) forwards it there too, doing nothing itself."""
    home = user_partition("u1", P)
    payload = event(user_id="u1", target_channels=["websocket", "push_ios"])
    assert plan(payload, home, P, routed=False) == Plan(users=("u1",), pushes=True)
    assert plan(payload, COMPAT, P, routed=False) == Plan(forward=(home,))
    other = (home + 1) % P
    assert plan(payload, other, P, routed=False) == Plan(forward=(home,))


def test_websocket_only_events_have_no_pushes() -> None:
    """No push channel: nothing to push (the worker acks it once the log append is done)."""
    home = user_partition("u1", P)
    payload = event(user_id="u1")
    assert plan(payload, home, P, routed=False) == Plan(users=("u1",))
    twice = event(user_id="u1", target_channels=["websocket", "websocket"])
    assert plan(twice, home, P, routed=False) == Plan(users=("u1",))


def test_push_only_events_append_nothing() -> None:
    """An event for push channels only is pushed, not appended to the log."""
    home = user_partition("u1", P)
    payload = event(user_id="u1", target_channels=["push_android"])
    assert plan(payload, home, P, routed=False) == Plan(pushes=True)


def test_many_users_split_by_partition_and_forward_once() -> None:
    """The origin appends for its users and forwards once to each other partition; a
    forwarded copy only appends for its own users."""
    local, remote_a, remote_b = users_in(3, 2), users_in(5, 2), users_in(9, 1)
    payload = event(user_ids=[*local, *remote_a, *remote_b, local[0]])
    origin = plan(payload, 3, P, routed=False)
    assert origin == Plan(users=tuple(local), forward=(5, 9))
    assert plan(payload, 5, P, routed=True) == Plan(users=tuple(remote_a))
    assert plan(payload, COMPAT, P, routed=False).forward == (3, 5, 9)


def test_topics_and_broadcasts_have_homes() -> None:
    """A topic is appended in its partition; a broadcast is delivered wherever it is read,
    and the compatibility stream sends it to one partition."""
    home = topic_partition("project:7", P)
    payload = event(topic="project:7")
    assert plan(payload, home, P, routed=False) == Plan(topic="project:7")
    assert plan(payload, (home + 1) % P, P, routed=False) == Plan(forward=(home,))
    broadcast = event(broadcast=True)
    assert plan(broadcast, 4, P, routed=False) == Plan(broadcast=True)
    assert plan(broadcast, COMPAT, P, routed=False) == Plan(forward=(BROADCAST_PARTITION,))


def test_units_are_dealt_evenly_and_deterministically() -> None:
    """Every live worker computes the same assignment; each unit has exactly one owner;
    shares differ by at most one; a worker not (yet) live owns nothing."""
    workers = ["w-c", "w-a", "w-b"]
    shares = {w: assign(17, workers, w) for w in workers}
    owners = Counter(unit for share in shares.values() for unit in share)
    assert sorted(owners) == list(range(17)) and set(owners.values()) == {1}
    assert {len(s) for s in shares.values()} <= {5, 6}
    assert shares["w-a"] == assign(17, list(reversed(workers)), "w-a")
    assert assign(17, workers, "w-z") == frozenset()
    assert assign(3, [f"w{n}" for n in range(5)], "w4") == frozenset()  # stands by
