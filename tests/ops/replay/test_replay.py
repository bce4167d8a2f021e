"""Integration tests: `streamer replay` against a private Redis, with the real worker."""

from __future__ import annotations

import argparse
import asyncio
import io
import shlex
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.exceptions import ResponseError

from streamer.contract.ids import MAX_ID, MIN_ID, successor
from streamer.ops.replay import runner
from streamer.ops.replay.cli import register, replay_command
from streamer.ops.replay.entries import EntryFilter
from streamer.ops.replay.ids import require_id
from streamer.worker.main import Worker
from tests.support.events import KEYS, add_events, payload, user_log_numbers, worker_settings
from tests.support.servers import RedisServer


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["replay", *argv])


async def replay(redis: aioredis.Redis, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await replay_command(redis, KEYS, parse(*argv), out, err, asyncio.Event())
    return code, out.getvalue(), err.getvalue()


async def replayed_origins(redis: aioredis.Redis) -> list[str]:
    """The replay_of of every replayed entry in the ingress stream, in stream order."""
    entries = await redis.xrange(KEYS.stream)
    return [f[b"replay_of"].decode() for _, f in entries if b"replay_of" in f]


async def snapshot(redis: aioredis.Redis) -> tuple[object, ...]:
    return (await redis.dbsize(), await redis.xrange(KEYS.stream), await redis.xrange(KEYS.dlq))


async def test_replay_of_a_range_delivers_exactly_those_entries_again(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Entries 10..19 are delivered once more, despite their producer ids; no others are."""
    ids = await add_events(redis, [payload(f"u{n % 3}", n, id=f"evt-{n}") for n in range(30)])
    worker = Worker(redis, worker_settings(redis_server.url))
    await worker.drain()
    code, out, _ = await replay(redis, "--from", ids[10], "--to", ids[19])
    assert code == 0 and out.startswith("replayed 10 of 10 entries")
    await worker.drain()
    assert await replayed_origins(redis) == ids[10:20]
    for user in range(3):
        again = [n for n in range(10, 20) if n % 3 == user]
        assert await user_log_numbers(redis, f"u{user}") == list(range(user, 30, 3)) + again


def _event(n: int) -> bytes:
    channels = ["websocket", "push_android"] if n % 4 == 0 else ["websocket"]
    kind = "a" if n % 3 == 0 else "b"
    return payload(f"u{n % 2}", n, event_type=kind, target_channels=channels, device_token="t")


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        (["--user", "u1"], lambda n: n % 2 == 1),
        (["--event-type", "a"], lambda n: n % 3 == 0),
        (["--channel", "push_android"], lambda n: n % 4 == 0),
        (
            ["--user", "u0", "--event-type", "b", "--channel", "websocket"],
            lambda n: n % 6 in (2, 4),
        ),
    ],
)
async def test_replay_filters_select_only_matching_entries(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    flags: list[str],
    wanted: Callable[[int], bool],
) -> None:
    """User, event type and channel filters replay exactly the matching entries."""
    ids = await add_events(redis, [_event(n) for n in range(24)])
    worker = Worker(redis, worker_settings(redis_server.url))
    await worker.drain()
    code, _, _ = await replay(redis, "--from", "-", "--to", "+", *flags)
    await worker.drain()
    assert code == 0
    assert await replayed_origins(redis) == [ids[n] for n in range(24) if wanted(n)]
    for user in range(2):
        again = [n for n in range(24) if n % 2 == user and wanted(n)]
        assert await user_log_numbers(redis, f"u{user}") == list(range(user, 24, 2)) + again


async def test_time_bounds_select_whole_milliseconds(redis: aioredis.Redis) -> None:
    """ISO 8601 and epoch-ms bounds are inclusive and cover every entry of their millisecond."""
    for entry_id in ("1000-0", "1000-1", "2000-0", "3000-0", "4000-0"):
        await redis.xadd(KEYS.stream, {"payload": payload("u1", 1)}, id=entry_id)
    assert (await replay(redis, "--from", "1970-01-01T00:00:02Z", "--to", "3000"))[0] == 0
    assert await replayed_origins(redis) == ["2000-0", "3000-0"]
    assert (await replay(redis, "--from", "1000", "--to", "1000"))[0] == 0
    assert await replayed_origins(redis) == ["2000-0", "3000-0", "1000-0", "1000-1"]


async def test_dry_run_counts_and_samples_but_writes_nothing(redis: aioredis.Redis) -> None:
    """--dry-run prints the match count and a sample; Redis is left exactly as it was."""
    ids = await add_events(redis, [payload(f"u{n % 2}", n) for n in range(20)])
    before = await snapshot(redis)
    code, out, _ = await replay(redis, "--from", "-", "--to", "+", "--user", "u1", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "dry run: 10 of 20 entries match; nothing written"
    assert [line.split()[0] for line in lines[1:]] == ids[1:10:2]
    assert all("user=u1 type=test" in line for line in lines[1:])
    assert await snapshot(redis) == before


async def test_interrupted_dry_run_exits_130_with_a_dry_resume_command(
    redis: aioredis.Redis,
) -> None:
    """A dry run stopped early says its count is partial, exits 130 and prints a resume
    command that is itself a dry run and counts exactly the rest."""
    await add_events(redis, [payload("u1", n) for n in range(35)])
    before = await snapshot(redis)
    out, err, stop = io.StringIO(), io.StringIO(), asyncio.Event()
    stop.set()  # Ctrl-C already pressed: the run stops after its first page
    args = parse("--from", "-", "--to", "+", "--dry-run", "--batch", "10")
    code = await replay_command(redis, KEYS, args, out, err, stop)
    lines = out.getvalue().splitlines()
    assert code == 130
    assert (
        lines[0]
        == "interrupted dry run: 10 of 10 entries match so far (incomplete); nothing written"
    )
    assert lines[-1].startswith("resume with: streamer replay --from ")
    argv = shlex.split(lines[-1].removeprefix("resume with: "))
    assert "--dry-run" in argv
    code, rest, _ = await replay(redis, *argv[2:])
    assert code == 0 and rest.startswith("dry run: 25 of 25 entries match; nothing written")
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--from", "300", "--to", "100"], "reversed range"),
        (["--from", "nope", "--to", "+"], "not a stream id or time: 'nope'"),
        (
            ["--from", "-", "--to", "+", "--source", "dlq"],
            "stream notify:events:dlq does not exist",
        ),
        (["--from", "-", "--to", "+", "--channel", "fax"], "unknown channel 'fax'"),
        (["--from", "-", "--to", "+", "--source", "other"], "unknown source 'other'"),
        (["--from", "-", "--to", "+", "--rate", "inf"], "--rate must be a finite number > 0"),
        (["--from", "-", "--to", "+", "--rate", "nan"], "--rate must be a finite number > 0"),
    ],
)
async def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    redis: aioredis.Redis, flags: list[str], message: str
) -> None:
    """A reversed range, a bad id, a missing stream: one error line, exit 2, nothing written."""
    await add_events(redis, [payload("u1", n) for n in range(5)])
    before = await snapshot(redis)
    code, out, err = await replay(redis, *flags)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("streamer replay: ") and message in err
    assert await snapshot(redis) == before


async def test_missing_ingress_stream_is_bad_input(redis: aioredis.Redis) -> None:
    """Replaying from a stream that does not exist fails with exit 2 and creates nothing."""
    code, _, err = await replay(redis, "--from", "-", "--to", "+")
    assert code == 2 and "stream notify:events does not exist" in err
    assert await redis.dbsize() == 0


async def test_replay_from_the_dlq_delivers_copies_and_keeps_the_dead_letters(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """--source dlq appends dead letters as replays of their source; the DLQ keeps them."""
    big = {"blob": "x" * 200}
    ids = await add_events(redis, [payload("u1", n, data={"n": n, **big}) for n in range(3)])
    await Worker(redis, worker_settings(redis_server.url, MAX_PAYLOAD_BYTES="64")).drain()
    dead = await redis.xrange(KEYS.dlq)
    code, _, _ = await replay(redis, "--from", "-", "--to", "+", "--source", "dlq")
    await Worker(redis, worker_settings(redis_server.url)).drain()
    assert code == 0
    assert await replayed_origins(redis) == ids
    copies = [f for _, f in await redis.xrange(KEYS.stream) if b"requeued_from" in f]
    assert [f[b"requeued_from"] for f in copies] == [eid for eid, _ in dead]
    assert all(b"reason" not in f for f in copies)
    assert await user_log_numbers(redis, "u1") == [0, 1, 2]
    assert await redis.xrange(KEYS.dlq) == dead


class StopAfterPages:
    """A progress reporter that asks the replay to stop after ``pages`` pages."""

    def __init__(self, stop: asyncio.Event, pages: int) -> None:
        self.stop, self.pages = stop, pages

    def update(self, scanned: int, matched: int) -> None:
        self.pages -= 1
        if self.pages == 0:
            self.stop.set()


async def test_stopped_replay_resumes_without_loss_or_double(redis: aioredis.Redis) -> None:
    """Stopping between pages and resuming from the reported position writes each entry once."""
    ids = await add_events(redis, [payload("u1", n) for n in range(35)])
    plan = runner.ReplayPlan(
        KEYS.stream, KEYS.stream, MIN_ID, MAX_ID, EntryFilter(), False, batch=10
    )
    plan, _ = await runner.freeze(redis, plan)
    first, stop = runner.ReplayState(), asyncio.Event()
    await runner.run(redis, plan, first, StopAfterPages(stop, 2), stop)
    assert not first.finished and first.matched == 20
    assert await replayed_origins(redis) == ids[:20]
    rest = runner.ReplayPlan(KEYS.stream, KEYS.stream, first.resume_from(plan), plan.end,
                             EntryFilter(), False, batch=10)  # fmt: skip
    second, never = runner.ReplayState(), asyncio.Event()
    await runner.run(redis, rest, second, StopAfterPages(never, -1), never)
    assert second.finished and second.matched == 15
    assert await replayed_origins(redis) == ids


class BreakTarget:
    """A progress reporter that turns the ingress stream into a string after the first page."""

    def __init__(self, url: str) -> None:
        self.client = SyncRedis.from_url(url)

    def update(self, scanned: int, matched: int) -> None:
        self.client.delete(KEYS.stream)
        self.client.set(KEYS.stream, "not a stream")


async def test_failed_page_does_not_advance_the_resume_position(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """When appending a page fails, the reported position stays after the last good page."""
    await redis.xadd(KEYS.stream, {"payload": payload("u0", 0)})
    ids = [(await redis.xadd(KEYS.dlq, {"payload": payload("u1", n)})).decode() for n in range(25)]
    plan = runner.ReplayPlan(KEYS.dlq, KEYS.stream, MIN_ID, MAX_ID, EntryFilter(), True, batch=10)
    plan, _ = await runner.freeze(redis, plan)
    state, breaker = runner.ReplayState(), BreakTarget(redis_server.url)
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await runner.run(redis, plan, state, breaker, asyncio.Event())
    finally:
        breaker.client.close()
    assert (state.matched, str(state.resume_from(plan))) == (10, str(successor(require_id(ids[9]))))
