"""Redis stream ids: parsing, formatting and neighbours. Pure: no I/O.

A stream id is two unsigned 64-bit integers, ``<ms>-<seq>``, ordered like tuples. Every
module that reads, compares or steps over ids (the gateway's resume, the worker, replay,
the dead-letter tools) uses these, so they cannot disagree about what an id is.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_PART = 2**64 - 1

_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")


class StreamId(NamedTuple):
    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


MIN_ID = StreamId(0, 0)
MAX_ID = StreamId(MAX_PART, MAX_PART)


def parse_id(text: str | bytes, *, seq_default: int | None = None) -> StreamId | None:
    """A full ``ms-seq`` id, or None for anything else. With ``seq_default``, a bare ``ms``
    is accepted too and gets that sequence number (operators type ids that way)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    ms_text, dash, seq_text = text.partition("-")
    # The common case first, without the regex (the gateway parses two ids per delivery).
    if (
        dash
        and 0 < len(ms_text) <= 20
        and 0 < len(seq_text) <= 20
        and ms_text.isdecimal()
        and seq_text.isdecimal()
    ):
        fast = StreamId(int(ms_text), int(seq_text))
        return fast if fast.ms <= MAX_PART and fast.seq <= MAX_PART else None
    match = _ID.match(text)
    if match is None or (match[2] is None and seq_default is None):
        return None
    ms = int(match[1])
    seq = int(match[2]) if match[2] is not None else seq_default
    assert seq is not None
    if ms > MAX_PART or seq > MAX_PART:
        return None
    return StreamId(ms, seq)


def format_id(sid: tuple[int, int]) -> str:
    return f"{sid[0]}-{sid[1]}"


def successor(sid: tuple[int, int]) -> StreamId:
    """The smallest id after ``sid``: an exclusive lower bound, or an XTRIM MINID."""
    ms, seq = sid
    if seq < MAX_PART:
        return StreamId(ms, seq + 1)
    return StreamId(min(ms + 1, MAX_PART), 0)


def predecessor(sid: tuple[int, int]) -> StreamId | None:
    """The largest id before ``sid`` (None before 0-0): the inclusive end of "before"."""
    ms, seq = sid
    if seq > 0:
        return StreamId(ms, seq - 1)
    return None if ms == 0 else StreamId(ms - 1, MAX_PART)


def entry_ms(entry_id: str | bytes) -> int:
    """The millisecond part of a stream entry id (when Redis added it)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode("ascii")
    return int(entry_id.split("-", 1)[0])
