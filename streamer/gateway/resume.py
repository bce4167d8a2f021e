"""Resume logic (pure): the recovered decision, merging replay with live frames.

Recovered rule: a resume from ``last_event_id`` is recovered iff that exact entry is still in
the user's log and at most ``max_replay`` entries follow it. The log is only trimmed from the
front, so if the entry is there, everything after it is there too: the replay is whole.
Otherwise (trimmed, expired, never existed, malformed, or too much to replay) nothing is
replayed and the client hears ``recovered:false``: no partial replay pretending to be whole.
Works on Redis 6.2 (no XINFO first-entry tricks needed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from streamer.contract.ids import StreamId


class Frame(msgspec.Struct, frozen=True):
    """One event frame for a socket: its user-log id and the encoded bytes.

    ``prev`` is the log entry that preceded this one when it was appended (live deliveries
    only): a socket whose last sent id is below it has missed something in between.
    """

    sid: StreamId
    data: bytes
    prev: StreamId | None = None


def has_gap(frame: Frame, last_sent: StreamId | None) -> bool:
    """True when ``frame`` overtook an entry the socket has not had yet: two workers
    appending for one user can reach the inboxes in the opposite order of the log."""
    return frame.prev is not None and last_sent is not None and frame.prev > last_sent


@dataclass(frozen=True, slots=True)
class ResumePlan:
    recovered: bool
    replay: tuple[Frame, ...]  # entries after last_event_id, in order; empty unless recovered
    floor: StreamId | None  # frames at or below this id are already with the client


def fetch_count(max_replay: int) -> int:
    """How many entries to read from ``last_event_id`` (inclusive) to decide: the entry
    itself, up to ``max_replay`` after it, and one more to detect overflow."""
    return max_replay + 2


def plan_resume(requested: StreamId | None, fetched: list[Frame], max_replay: int) -> ResumePlan:
    """Decide a resume from the log entries read starting at ``requested`` (inclusive)."""
    if requested is None or not fetched or fetched[0].sid != requested:
        return ResumePlan(False, (), None)
    after = fetched[1:]
    if len(after) > max_replay:
        return ResumePlan(False, (), None)
    return ResumePlan(True, tuple(after), requested)


def merge(frames: Iterable[Frame], floor: StreamId | None) -> list[Frame]:
    """Frames in id order, each id once, none at or below ``floor``."""
    seen: dict[StreamId, Frame] = {}
    for frame in frames:
        if floor is None or frame.sid > floor:
            seen.setdefault(frame.sid, frame)
    return [seen[sid] for sid in sorted(seen)]
