"""Unit tests: stream ids, the one definition every module uses (no I/O)."""

from __future__ import annotations

from streamer.contract.ids import MAX_PART, entry_ms, format_id, parse_id, predecessor, successor


def test_stream_ids_parse_strictly_and_order() -> None:
    """Only full <ms>-<seq> ids parse; successor gives the next id; ids order numerically."""
    assert parse_id("1700000000000-5") == (1700000000000, 5)
    for bad in ("", "123", "1-2-3", "a-1", "-1-0", "1-0 ", "99999999999999999999999-0"):
        assert parse_id(bad) is None, bad
    assert successor((5, 1)) == (5, 2)
    assert successor((5, (1 << 64) - 1)) == (6, 0)
    assert format_id((10, 2)) == "10-2"
    assert parse_id("9-0") < parse_id("10-0")  # type: ignore[operator]


def test_short_ids_parse_only_when_asked_and_neighbours_step_over_limits() -> None:
    """A bare ms parses only with a sequence default; neighbours cross the 64-bit sequence."""
    assert parse_id("17") is None
    assert parse_id("17", seq_default=MAX_PART) == (17, MAX_PART)
    assert parse_id(b"3-4") == (3, 4)
    assert predecessor((8, 0)) == (7, MAX_PART)
    assert predecessor((0, 0)) is None
    assert entry_ms("1700-3") == 1700 and entry_ms(b"5-0") == 5
