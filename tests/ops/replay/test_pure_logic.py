"""Unit tests: replay ranges, times, filters, field rewriting and pacing (no I/O)."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from streamer.contract.ids import MAX_ID, MAX_PART, MIN_ID, StreamId, predecessor, successor
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from streamer.ops.replay.cli import plan_from_args, register, resume_command
from streamer.ops.replay.entries import EntryFilter, replayed_fields, requeued_fields
from streamer.ops.replay.ids import BadInput, parse_bound, parse_range
from streamer.ops.replay.pacing import Estimate, batch_size, estimate_entries, pause_s
from streamer.ops.replay.progress import LineOutput, progress_output

NOW_MS = 1_700_000_000_000
KEYS = Keys.from_settings(RedisSettings.from_env(Env({})))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["replay", *argv])


def fields(payload: dict[str, object] | bytes, **extra: bytes) -> dict[bytes, bytes]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {b"payload": raw, **{k.encode(): v for k, v in extra.items()}}


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("-", False, MIN_ID),
        ("+", True, MAX_ID),
        ("1700-5", False, StreamId(1700, 5)),
        ("1700-5", True, StreamId(1700, 5)),
        ("1700", False, StreamId(1700, 0)),
        ("1700", True, StreamId(1700, MAX_PART)),
        ("2023-11-14T22:13:20Z", False, StreamId(NOW_MS, 0)),
        ("2023-11-14T22:13:20.250", False, StreamId(NOW_MS + 250, 0)),
        ("2023-11-15T00:13:20+02:00", True, StreamId(NOW_MS, MAX_PART)),
        ("15m", False, StreamId(NOW_MS - 900_000, 0)),
        ("7d", True, StreamId(NOW_MS - 7 * 86_400_000, MAX_PART)),
    ],
)
def test_bounds_accept_ids_epoch_ms_iso_times_and_ages(
    text: str, end: bool, expected: StreamId
) -> None:
    """Ids, -/+, epoch ms, ISO 8601 (naive = UTC) and ages become inclusive stream ids."""
    assert parse_bound(text, end=end, now_ms=NOW_MS) == expected


@pytest.mark.parametrize("text", ["abc", "12-x", "1-2-3", "-5", "99999999999999999999999", "2h30"])
def test_malformed_bounds_are_bad_input(text: str) -> None:
    """Anything that is not an id, time or age is refused with a message naming it."""
    with pytest.raises(BadInput, match="stream id"):
        parse_bound(text, end=False, now_ms=NOW_MS)


def test_reversed_range_is_bad_input_and_a_single_millisecond_is_not() -> None:
    """--from after --to is refused; --from T --to T covers that whole millisecond."""
    with pytest.raises(BadInput, match="reversed range"):
        parse_range("2000", "1000", NOW_MS)
    assert parse_range("5", "5", NOW_MS) == (StreamId(5, 0), StreamId(5, MAX_PART))


def test_successor_and_predecessor_step_over_sequence_limits() -> None:
    """The next/previous id wraps the sequence into the millisecond."""
    assert successor(StreamId(7, 3)) == StreamId(7, 4)
    assert successor(StreamId(7, MAX_PART)) == StreamId(8, 0)
    assert predecessor(StreamId(8, 0)) == StreamId(7, MAX_PART)
    assert predecessor(StreamId(8, 2)) == StreamId(8, 1)
    assert predecessor(MIN_ID) is None


def test_filters_match_user_type_and_channel_together() -> None:
    """Every given condition must hold; default channels count as websocket."""
    event = fields({"user_id": "u1", "event_type": "done", "target_channels": ["push_ios"]})
    plain = fields({"user_id": "u1", "event_type": "done"})
    assert EntryFilter(user="u1", event_type="done", channel="push_ios").matches(event)
    assert not EntryFilter(user="u2").matches(event)
    assert not EntryFilter(event_type="progress").matches(event)
    assert not EntryFilter(channel="websocket").matches(event)
    assert EntryFilter(channel="websocket").matches(plain)


def test_undecodable_entries_match_only_filters_that_ignore_the_payload() -> None:
    """Poison has no user to compare: payload filters skip it, no filter takes it."""
    poison = fields(b"{nope", reason=b"invalid_json")
    assert EntryFilter().matches(poison)
    assert EntryFilter(reason="invalid_json").matches(poison)
    assert not EntryFilter(reason="schema").matches(poison)
    assert not EntryFilter(user="u1").matches(poison)
    assert not EntryFilter(user="u1").matches({b"other": b"x"})


def test_unknown_channel_is_bad_input() -> None:
    """A channel filter must name a real channel, or it would silently match nothing."""
    with pytest.raises(BadInput, match="unknown channel"):
        EntryFilter(channel="sms")


def test_replayed_entry_keeps_its_fields_and_points_at_the_original() -> None:
    """A replay copies the fields, sets replay_of and drops a stale requeued_from."""
    original = fields({"user_id": "u1", "event_type": "x"}, replay_of=b"1-1", requeued_from=b"9-9")
    assert replayed_fields(b"5-0", original) == {
        b"payload": original[b"payload"],
        b"replay_of": b"5-0",
    }


def test_requeued_dead_letter_drops_dlq_bookkeeping() -> None:
    """A requeued dead letter loses reason/error/deliveries and points at its source."""
    dead = fields(
        {"user_id": "u1", "event_type": "x"},
        reason=b"schema", error=b"bad", source_id=b"3-0", deliveries=b"1", extra=b"kept",
    )  # fmt: skip
    assert requeued_fields(b"8-0", dead) == {
        b"payload": dead[b"payload"],
        b"extra": b"kept",
        b"replay_of": b"3-0",
        b"requeued_from": b"8-0",
    }
    assert requeued_fields(b"8-0", {b"payload": b"{}"})[b"replay_of"] == b"8-0"


def test_rate_limit_shrinks_batches_and_paces_writes() -> None:
    """Under --rate, batches are about a tenth of a second of writes, and pauses keep pace."""
    assert batch_size(1000, None) == 1000
    assert batch_size(1000, 50) == 5
    assert batch_size(1000, 3) == 1
    assert batch_size(1000, 1e6) == 1000
    assert pause_s(100, 0.4, 100.0) == pytest.approx(0.6)
    assert pause_s(100, 2.0, 100.0) == 0.0
    assert pause_s(100, 0.0, None) == 0.0


def test_estimate_is_exact_for_the_whole_stream_and_proportional_otherwise() -> None:
    """The progress total is XLEN for a whole-stream range, a time share for part of it."""
    first, last = StreamId(1000, 0), StreamId(1999, 0)
    assert estimate_entries(MIN_ID, MAX_ID, first, last, 500) == Estimate(500, True)
    assert estimate_entries(StreamId(1500, 0), MAX_ID, first, last, 500) == Estimate(250, False)
    assert estimate_entries(StreamId(3000, 0), MAX_ID, first, last, 500) == Estimate(0, True)
    assert estimate_entries(MIN_ID, MAX_ID, None, None, 0) == Estimate(0, True)


def test_plan_validates_source_rate_and_batch() -> None:
    """The command line becomes a plan; bad source, rate or batch are bad input."""
    plan = plan_from_args(parse("--from", "-", "--to", "+", "--source", "dlq"), KEYS, NOW_MS)
    assert [(lane.source, lane.target) for lane in plan.lanes] == [
        *((p.dlq, p.stream) for p in KEYS.partitions), (KEYS.dlq, KEYS.stream),
    ]  # fmt: skip
    assert plan.from_dlq and not plan.filter.originals_only and not plan.in_redis
    plan = plan_from_args(parse("--from", "-", "--to", "+"), KEYS, NOW_MS)
    assert [lane.source for lane in plan.lanes] == [
        *(p.stream for p in KEYS.partitions), KEYS.stream,
    ]  # fmt: skip
    assert plan.filter.originals_only and plan.in_redis and not plan.from_dlq
    plan = plan_from_args(parse("--from", "-", "--to", "+", "--user", "u7"), KEYS, NOW_MS)
    assert [lane.source for lane in plan.lanes] == [KEYS.ingress("u7")]
    assert not plan.filter.originals_only and not plan.in_redis
    for argv in (["--source", "elsewhere"], ["--rate", "0"], ["--batch", "0"]):
        with pytest.raises(BadInput):
            plan_from_args(parse("--from", "-", "--to", "+", *argv), KEYS, NOW_MS)


def test_resume_command_repeats_the_filters_with_a_concrete_range() -> None:
    """The printed resume command starts after the last written id and keeps every filter."""
    args = parse("--from", "-", "--to", "+", "--user", "u 1", "--rate", "50")
    command = resume_command(args, StreamId(12, 1), StreamId(99, 0))
    assert command == (
        "streamer replay --from 12-1 --to 99-0 --source events --user 'u 1' --rate 50.0"
    )


def test_line_progress_prints_at_most_once_per_interval() -> None:
    """Without a terminal, progress is a plain line every interval, with rate and ETA."""
    now = [0.0]
    out = io.StringIO()
    lines = LineOutput(out, Estimate(1000, True), "written", clock=lambda: now[0], interval_s=2)
    for step in range(1, 6):
        now[0] = step * 1.0
        lines.update(step * 100, step * 100)
    assert out.getvalue().splitlines() == [
        "replay: scanned 200/1000, written 200, 100 entries/s, eta 8s",
        "replay: scanned 400/1000, written 400, 100 entries/s, eta 6s",
    ]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_is_a_bar_with_count_and_rate() -> None:
    """On a terminal the progress is a rich bar showing scanned/total and written counts."""
    out = FakeTerminal()
    bar = progress_output(out, Estimate(100, True), "written")
    bar.update(40, 10)
    bar.close()
    assert "40/100" in out.getvalue() and "10 written" in out.getvalue()
    assert isinstance(progress_output(io.StringIO(), Estimate(1, True), "written"), LineOutput)
