"""Integration tests: `streamer replay` against a private Redis, with the real worker."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import shlex
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.exceptions import ResponseError

from streamer.contract.ids import MAX_ID, MIN_ID, successor
from streamer.ops.replay import runner
from streamer.ops.replay.cli import plan_from_args, register, replay_command
from streamer.ops.replay.entries import EntryFilter, replayed_fields
from streamer.ops.replay.ids import require_id
from streamer.worker.main import Worker
from tests.support.events import (
    KEYS,
    add_events,
    dead_letter_streams,
    ingress_streams,
    payload,
    user_log_numbers,
    users_in_distinct_partitions,
    worker_settings,
)
from tests.support.servers import RedisServer

COMPAT_LANE = runner.Lane("compat", KEYS.stream, KEYS.stream)
USER_1 = EntryFilter(user="u1")  # a payload filter: page by page


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
    streams = [*ingress_streams(), *dead_letter_streams()]
    return (await redis.dbsize(), *[await redis.xrange(s) for s in streams])


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
    code, out, _ = await replay(redis, "--from", "-", "--to", "+", *flags)
    await worker.drain()
    expected = [n for n in range(24) if wanted(n)]
    assert code == 0 and out.startswith(f"replayed {len(expected)} of ")
    if "--user" not in flags:  # from the compatibility stream, where the producer wrote
        assert await replayed_origins(redis) == [ids[n] for n in expected]
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
    ids = await add_events(redis, [payload(f"u{n % 2}", n) for n in range(20)], direct=True)
    before = await snapshot(redis)
    code, out, _ = await replay(redis, "--from", "-", "--to", "+", "--user", "u1", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    scanned = await redis.xlen(KEYS.ingress("u1"))  # u1's partition only
    assert lines[0] == f"dry run: 10 of {scanned} entries match; nothing written"
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
            "none of the 17 streams to replay exists (notify:{p0.",
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
    assert code == 2 and "none of the 17 streams to replay exists" in err
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
    plan = runner.ReplayPlan((COMPAT_LANE,), MIN_ID, MAX_ID, USER_1, False, batch=10)
    plan, _ = await runner.freeze(redis, plan)
    first, stop = runner.ReplayState(), asyncio.Event()
    await runner.run(redis, plan, first, StopAfterPages(stop, 2), stop)
    assert not first.finished and first.matched == 20
    assert await replayed_origins(redis) == ids[:20]
    rest = runner.ReplayPlan((COMPAT_LANE,), first.resume_from(plan), plan.end,
                             USER_1, False, batch=10)  # fmt: skip
    rest, _ = await runner.freeze(redis, rest)
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
    lane = runner.Lane("compat", KEYS.dlq, KEYS.stream)
    plan = runner.ReplayPlan((lane,), MIN_ID, MAX_ID, EntryFilter(), True, batch=10)
    plan, _ = await runner.freeze(redis, plan)
    state, breaker = runner.ReplayState(), BreakTarget(redis_server.url)
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await runner.run(redis, plan, state, breaker, asyncio.Event())
    finally:
        breaker.client.close()
    assert (state.matched, str(state.resume_from(plan))) == (10, str(successor(require_id(ids[9]))))


async def test_replay_of_every_partition_and_compat_delivers_each_event_once_more(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Events written to three partitions, to the compatibility stream and to several users
    across partitions (forwarded copies) are each delivered exactly once more by a replay
    of the whole range: forwarded copies are skipped, their origin forwards them again."""
    a, b, c = users_in_distinct_partitions(3)
    direct = [payload(u, n) for n, u in enumerate([a, b, c, a, b, c])]
    await add_events(redis, direct, direct=True)
    await add_events(redis, [payload(a, 6), payload(c, 7)])  # through the compat stream
    await add_events(redis, [payload(a, 8, user_id=None, user_ids=[a, b, c])], direct=True)
    worker = Worker(redis, worker_settings(redis_server.url))
    await worker.drain()
    before = {u: sorted(await user_log_numbers(redis, u)) for u in (a, b, c)}
    assert before == {a: [0, 3, 6, 8], b: [1, 4, 8], c: [2, 5, 7, 8]}
    code, out, err = await replay(redis, "--from", "-", "--to", "+")
    assert code == 0 and out.startswith("replayed 9 of "), out
    assert "17 streams" in err
    await worker.drain()
    for user, numbers in before.items():
        assert sorted(await user_log_numbers(redis, user)) == sorted(numbers * 2), user


async def test_replay_with_user_reads_only_that_users_partition(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """--user U reads U's partition only (routed copies included) and writes there only."""
    a, b = users_in_distinct_partitions(2)
    await add_events(redis, [payload(a, 0), payload(b, 1)], direct=True)
    await add_events(redis, [payload(a, 2), payload(b, 3)])  # routed into the partitions
    worker = Worker(redis, worker_settings(redis_server.url))
    await worker.drain()
    lengths = {s: await redis.xlen(s) for s in ingress_streams()}
    code, out, _ = await replay(redis, "--from", "-", "--to", "+", "--user", a)
    assert code == 0 and out.startswith("replayed 2 of 2 entries")
    grown = {s for s in ingress_streams() if await redis.xlen(s) != lengths[s]}
    assert grown == {KEYS.ingress(a)}
    await worker.drain()
    assert await user_log_numbers(redis, a) == [0, 2, 0, 2]
    assert await user_log_numbers(redis, b) == [1, 3]


@pytest.mark.parametrize("flags", [[], ["--event-type", "test"]], ids=["in-redis", "pages"])
async def test_a_stopped_replay_of_several_partitions_resumes_from_one_bound(
    redis: aioredis.Redis, flags: list[str]
) -> None:
    """Stopped after two rounds, the replay of three partitions resumes from the single
    position it reports, and every entry of every partition is replayed exactly once."""
    users = users_in_distinct_partitions(3)
    originals = []
    for n in range(40):  # one a millisecond, some milliseconds shared by two partitions
        fields = {"payload": payload(users[n % 3], n)}
        entry_id = await redis.xadd(KEYS.ingress(users[n % 3]), fields, id=f"{1000 + n // 2}-*")
        originals.append(entry_id.decode())
    args = parse("--from", "-", "--to", "+", "--batch", "4", *flags)
    plan, _ = await runner.freeze(redis, plan_from_args(args, KEYS, 2**62))
    first, stop = runner.ReplayState(), asyncio.Event()
    await runner.run(redis, plan, first, StopAfterPages(stop, 2), stop)
    assert not first.finished and 0 < first.matched < 40
    rest = dataclasses.replace(plan, start=first.resume_from(plan))
    second, never = runner.ReplayState(), asyncio.Event()
    await runner.run(redis, rest, second, StopAfterPages(never, -1), never)
    assert second.finished and first.matched + second.matched == 40
    replayed = []
    for stream in ingress_streams():
        replayed += [
            f[b"replay_of"].decode() for _, f in await redis.xrange(stream) if b"replay_of" in f
        ]
    assert sorted(replayed) == sorted(originals)


async def test_replay_from_every_dlq_appends_each_to_its_own_stream(
    redis: aioredis.Redis,
) -> None:
    """--source dlq reads every DLQ and appends each dead letter to its own ingress stream,
    as a requeued copy; the dead letters stay."""
    p2, p9 = KEYS.partitions[2], KEYS.partitions[9]
    for dlq, n in ((p2.dlq, 1), (p9.dlq, 2), (KEYS.dlq, 3), (p2.dlq, 4)):
        await redis.xadd(
            dlq, {"payload": payload("u", n), "reason": "schema", "source_id": f"{n}-0"}
        )
    code, out, _ = await replay(redis, "--from", "-", "--to", "+", "--source", "dlq")
    assert code == 0 and out.startswith("replayed 4 of 4 entries")
    origins = {
        s: [f[b"replay_of"] for _, f in await redis.xrange(s)]
        for s in (p2.stream, p9.stream, KEYS.stream)
    }
    assert origins == {p2.stream: [b"1-0", b"4-0"], p9.stream: [b"2-0"], KEYS.stream: [b"3-0"]}
    assert sum([await redis.xlen(d) for d in dead_letter_streams()]) == 4


async def test_the_in_redis_copy_writes_the_fields_replayed_fields_defines(
    redis: aioredis.Redis,
) -> None:
    """replay_copy.lua and entries.replayed_fields agree, field for field, on entries with
    and without earlier replay marks; forwarded copies are skipped when asked."""
    stream = KEYS.partitions[4].stream
    rows = [
        {b"payload": payload("u", 1)},
        {b"payload": payload("u", 2), b"replay_of": b"1-1", b"requeued_from": b"2-2"},
        {b"payload": payload("u", 3), b"routed_from": b"notify:events/3-3"},
    ]
    ids = [await redis.xadd(stream, r) for r in rows]  # type: ignore[arg-type]
    plan, _ = await runner.freeze(
        redis,
        runner.ReplayPlan(
            (runner.Lane("p4", stream, stream),), MIN_ID, MAX_ID,
            EntryFilter(originals_only=True), False,
        ),
    )  # fmt: skip
    assert plan.in_redis
    await runner.run(
        redis, plan, runner.ReplayState(), StopAfterPages(asyncio.Event(), -1), asyncio.Event()
    )
    copies = [f for _, f in (await redis.xrange(stream))[3:]]
    assert copies == [replayed_fields(i, r) for i, r in zip(ids[:2], rows[:2], strict=True)]
