"""Stream ids, times and ranges as operators type them. Pure: no I/O.

A bound is a stream id (``ms-seq`` or ``ms``), ``-`` or ``+``, a time (epoch milliseconds,
ISO 8601, or an age such as ``15m``, ``2h``, ``7d``). Both ends of a range are inclusive;
a time or a bare ``ms`` covers every entry of that millisecond.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from streamer.contract.ids import MAX_ID, MAX_PART, MIN_ID, StreamId, parse_id
from streamer.infra.errors import StreamerError

__all__ = ["MAX_ID", "MAX_PART", "MIN_ID", "BadInput", "StreamId", "require_id"]

_ID = re.compile(r"^\d+(?:-\d+)?$")
_AGE = re.compile(r"^(\d+)([smhd])$")
_AGE_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadInput(StreamerError):
    """Operator input that cannot be acted on (bad id, reversed range, missing stream).
    Commands print the message as one line and exit 2 without writing anything."""


def require_id(text: str | bytes, *, seq_default: int = 0) -> StreamId:
    """A full (``ms-seq``) or short (``ms``) stream id; anything else is bad input."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    sid = parse_id(text.strip(), seq_default=seq_default)
    if sid is None:
        raise BadInput(f"not a stream id: {text!r}")
    return sid


def parse_time_ms(text: str, now_ms: int) -> int | None:
    """Milliseconds since the epoch for an ISO 8601 time or an age; None if neither.
    A time without an offset is taken as UTC."""
    age = _AGE.match(text)
    if age is not None:
        return max(0, now_ms - int(age.group(1)) * _AGE_MS[age.group(2)])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def parse_bound(text: str, *, end: bool, now_ms: int) -> StreamId:
    """One end of an inclusive range. ``end`` widens a millisecond to its last sequence."""
    text = text.strip()
    if text in ("-", "+"):
        return MIN_ID if text == "-" else MAX_ID
    seq_default = MAX_PART if end else 0
    if _ID.match(text):
        return require_id(text, seq_default=seq_default)
    ms = parse_time_ms(text, now_ms)
    if ms is None or ms < 0:
        raise BadInput(
            f"not a stream id or time: {text!r} "
            "(use an id, -, +, epoch ms, ISO 8601 or an age like 15m, 2h, 7d)"
        )
    return StreamId(ms, seq_default)


def parse_range(start: str, end: str, now_ms: int) -> tuple[StreamId, StreamId]:
    """Both bounds of an inclusive range; a reversed range is bad input."""
    low = parse_bound(start, end=False, now_ms=now_ms)
    high = parse_bound(end, end=True, now_ms=now_ms)
    if low > high:
        raise BadInput(
            f"reversed range: --from {start} ({describe(low)}) is after --to {end} "
            f"({describe(high)})"
        )
    if low.ms > now_ms:
        raise BadInput(f"--from {start} ({describe(low)}) is in the future: nothing to replay")
    return low, high


def format_bound(entry_id: StreamId) -> str:
    """A bound as an operator types it (and ``parse_bound`` reads it back): ``-``, ``+`` or a
    bare ``ms`` for a whole millisecond; never an internal sentinel (``…-18446744073709551615``)."""
    if entry_id == MIN_ID:
        return "-"
    if entry_id == MAX_ID:
        return "+"
    if entry_id.seq == MAX_PART:
        return str(entry_id.ms)
    return str(entry_id)


def describe(entry_id: StreamId) -> str:
    """A bound with its time in UTC, for humans checking what a range covers."""
    text = format_bound(entry_id)
    if entry_id == MIN_ID:
        return f"{text} (the oldest entry)"
    if entry_id.ms >= MAX_PART:
        return f"{text} (the newest entry)"
    try:
        moment = _EPOCH + timedelta(milliseconds=entry_id.ms)
    except OverflowError:
        return text
    return f"{text} ({moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')})"
