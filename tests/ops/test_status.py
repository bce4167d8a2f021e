"""`streamer status` and the stream sampling behind it, against the private redis-server."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from streamer.infra.stream_stats import (
    StreamStats,
    count_after,
    dead_letter_reasons,
    sample_stream,
    server_lag,
)
from streamer.ops import status
from streamer.ops.status import Thresholds, Worker, collect, problems, render
from streamer.worker.assignment import units
from tests.support.events import KEYS, add_events, payload
from tests.support.servers import RedisServer, free_port

GROUP, STREAM = KEYS.group, KEYS.stream
LOOSE = Thresholds(max_lag=10_000, max_dlq=1000, live_ms=15_000)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _group_reading(redis: aioredis.Redis, total: int, reads: dict[str, int]) -> None:
    """A group over `total` entries; each consumer in `reads` takes that many (left pending)."""
    await add_events(redis, [payload("u1", n) for n in range(total)])
    await redis.xgroup_create(STREAM, GROUP, "0")
    for consumer, count in reads.items():
        if count:
            await redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
        else:
            await redis.xgroup_createconsumer(STREAM, GROUP, consumer)


class WithoutServerLag:
    """The client as Redis 6.2 answers it: XINFO GROUPS has no `lag` field."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xinfo_groups(self, name: str) -> list[dict[str, Any]]:
        groups = await self._redis.xinfo_groups(name)
        return [{k: v for k, v in g.items() if k not in ("lag", "entries-read")} for g in groups]


def test_server_lag_is_none_when_redis_does_not_report_it() -> None:
    """A missing (6.2) or nil (7.x after deletions) lag field means: compute it."""
    assert server_lag({"lag": 3}) == 3
    assert server_lag({"lag": 0}) == 0
    assert server_lag({"lag": None}) is None
    assert server_lag({"name": b"g"}) is None


async def test_sample_reports_length_lag_pending_and_oldest_age(redis: aioredis.Redis) -> None:
    """Length, server lag, pending count and oldest pending age come from one sample."""
    await _group_reading(redis, 10, {"c1": 3, "c2": 2})
    await redis.xadd(KEYS.dlq, {"reason": "schema"})
    stats = await sample_stream(redis, KEYS.stream, KEYS.group, KEYS.dlq)
    assert (stats.length, stats.group_exists, stats.lag, stats.pending) == (10, True, 5, 5)
    assert stats.dlq_length == 1
    assert stats.oldest_pending_age_ms is not None and 0 <= stats.oldest_pending_age_ms < 60_000


async def test_sample_without_group_reports_missing(redis: aioredis.Redis) -> None:
    """No stream, no group: zero length, group missing, no lag, no pending."""
    assert await sample_stream(redis, KEYS.stream, KEYS.group, KEYS.dlq) == StreamStats(
        0, False, None, 0, None, 0
    )


async def test_lag_is_counted_when_redis_7_answers_nil_after_a_deletion(
    redis: aioredis.Redis,
) -> None:
    """After XDEL Redis 7 reports lag nil; the computed lag counts the undelivered entries."""
    await _group_reading(redis, 600, {"c1": 100})
    last = (await redis.xrevrange(STREAM, count=1))[0][0]
    await redis.xdel(STREAM, last)
    groups = await redis.xinfo_groups(STREAM)
    assert server_lag(groups[0]) is None, "this Redis computes lag after XDEL; test is moot"
    assert (await sample_stream(redis, KEYS.stream, KEYS.group, KEYS.dlq)).lag == 499


async def test_lag_fallback_on_redis_6_2_matches_the_server_lag(redis: aioredis.Redis) -> None:
    """Without a lag field (6.2) the computed lag equals what Redis 7 reports."""
    await _group_reading(redis, 700, {"c1": 150})
    server = (await sample_stream(redis, KEYS.stream, KEYS.group, KEYS.dlq)).lag
    computed = (await sample_stream(WithoutServerLag(redis), KEYS.stream, KEYS.group, KEYS.dlq)).lag  # type: ignore[arg-type]
    assert server == computed == 550


async def test_count_after_stops_at_its_limit(redis: aioredis.Redis) -> None:
    """The counting scan is bounded: past the limit it returns the limit (a lower bound)."""
    ids = await add_events(redis, [payload("u1", n) for n in range(600)])
    assert await count_after(redis, STREAM, "0-0", 10_000) == 600
    assert await count_after(redis, STREAM, "0-0", 300) == 300
    assert await count_after(redis, STREAM, ids[99], 10_000) == 500
    assert await count_after(redis, STREAM, ids[-1], 10_000) == 0


async def test_dead_letter_reasons_tally_the_newest_entries(redis: aioredis.Redis) -> None:
    """Reasons are counted over the newest `scan` dead letters, most frequent first."""
    pipe = redis.pipeline(transaction=False)
    for _ in range(400):
        pipe.xadd(KEYS.dlq, {"payload": "x" * 100, "reason": "schema"})
    for n in range(300):
        pipe.xadd(KEYS.dlq, {"reason": "invalid_json" if n % 3 else "too_large"})
    await pipe.execute()
    assert await dead_letter_reasons(redis, KEYS) == [
        ("schema", 400),
        ("invalid_json", 200),
        ("too_large", 100),
    ]
    assert await dead_letter_reasons(redis, KEYS, scan=300) == [
        ("invalid_json", 200),
        ("too_large", 100),
    ]


async def test_collect_reports_consumers_workers_and_gateways(redis: aioredis.Redis) -> None:
    """The report lists consumers by pending, live workers, live gateways with sockets."""
    await _group_reading(redis, 10, {"c-idle": 0, "c-busy": 4, "c-some": 1})
    now = _now_ms()
    await redis.zadd(KEYS.workers, {"w1": now - 100, "w-dead": now - 60_000})
    await redis.zadd(KEYS.gateways, {"gw1": now - 500, "gw-dead": now - 60_000})
    info = {"sockets": 7, "users": 5, "host": "10.0.0.9", "port": 8765, "started_ms": now - 90_000}
    await redis.hset(KEYS.gateway_info("gw1"), mapping=info)  # type: ignore[arg-type]
    await redis.set(units(KEYS)[-1].lease, "w1:0a1b")  # w1 owns the compatibility stream
    report = await collect(redis, KEYS, LOOSE)
    assert [(c.name, c.pending) for c in report.consumers] == [
        ("c-busy", 4),
        ("c-some", 1),
        ("c-idle", 0),
    ]
    assert report.consumers[0].oldest_pending_age_ms is not None
    assert report.consumers[2].oldest_pending_age_ms is None
    assert [w.id for w in report.workers] == ["w1"]
    (gw,) = report.gateways
    assert (gw.id, gw.sockets, gw.users, gw.address) == ("gw1", 7, 5, "10.0.0.9:8765")
    assert gw.uptime_s is not None and 89 <= gw.uptime_s <= 150
    assert report.stale_gateways == 1
    assert report.healthy
    text = render(report, KEYS)
    assert "c-busy" in text and "10.0.0.9:8765" in text and text.endswith("status: OK")
    assert report.compat.owner == "w1" and report.compat.owner_live
    assert "stream notify:events (compatibility): length 10" in text and "owner w1\n" in text


def test_problems_name_each_unhealthy_condition() -> None:
    """No live worker, lag over the limit and DLQ over the limit each make a problem."""
    stats = StreamStats(100, True, 50, 0, None, 20)
    workers = [Worker("w1", 10)]
    assert problems(stats, workers, Thresholds(50, 20, 1000)) == []
    assert problems(stats, [], Thresholds(50, 20, 1000)) == ["no live worker"]
    assert problems(stats, workers, Thresholds(49, 19, 1000)) == ["lag 50 > 49", "dlq 20 > 19"]


def _run_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> tuple[int, str]:
    monkeypatch.setenv("REDIS_URL", url)
    for name in ("KEY_PREFIX", "STREAM_KEY", "CONSUMER_GROUP"):
        monkeypatch.delenv(name, raising=False)
    parser = argparse.ArgumentParser()
    status.register(parser.add_subparsers())
    code = status.handle(parser.parse_args(["status", *args]))
    return code, capsys.readouterr().out


def test_cli_json_exit_codes_follow_health(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` exits 1 with no live worker or a large DLQ, 0 once healthy."""
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()  # the private server of this test session
    client.xadd(KEYS.dlq, {"reason": "schema"})
    code, out = _run_status(monkeypatch, capsys, redis_server.url, "--json")
    body = json.loads(out)
    assert code == 1 and body["healthy"] is False and body["problems"] == ["no live worker"]
    assert body["dead_letter_reasons"] == [{"reason": "schema", "count": 1}]
    client.zadd(KEYS.workers, {"w1": _now_ms()})
    code, out = _run_status(monkeypatch, capsys, redis_server.url, "--json")
    body = json.loads(out)
    assert code == 0 and body["workers"][0]["id"] == "w1"
    assert len(body["partitions"]) == KEYS.partition_count and body["compat"]["name"] == "compat"
    assert body["unowned_partitions"] == list(range(KEYS.partition_count))
    assert body["worst_partitions"] == [] and body["stream"]["dlq_length"] == 1
    code, out = _run_status(monkeypatch, capsys, redis_server.url, "--max-dlq", "0")
    assert code == 1 and out.strip().endswith("UNHEALTHY: dlq 1 > 0")
    client.close()


def test_cli_reports_unreachable_redis_as_unhealthy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With Redis down, status prints one verdict line and exits 1 (no traceback)."""
    code, out = _run_status(monkeypatch, capsys, f"redis://127.0.0.1:{free_port()}/0", "--json")
    assert code == 1
    assert json.loads(out)["problems"][0].startswith("redis unreachable")


async def _partition_backlog(redis: aioredis.Redis, index: int, total: int, read: int) -> None:
    """``total`` entries in partition ``index``; its group has handed ``read`` of them out."""
    stream = KEYS.partitions[index].stream
    for n in range(total):
        await redis.xadd(stream, {"payload": payload("u1", n)})
    await redis.xgroup_create(stream, GROUP, "0")
    if read:
        await redis.xreadgroup(GROUP, "w1", {stream: ">"}, count=read)


async def test_collect_totals_partitions_ranks_the_worst_and_names_their_owners(
    redis: aioredis.Redis,
) -> None:
    """Totals add every partition and the compatibility stream; the worst partitions are
    ranked by lag then pending (top 5); owners come from the lease keys, a partition with
    work and no lease is flagged and makes the report unhealthy."""
    for index, (total_, read) in enumerate(
        [(3, 0), (9, 2), (5, 5), (7, 0), (2, 1), (4, 4), (1, 0)]
    ):
        await _partition_backlog(redis, index, total_, read)
    await redis.xadd(KEYS.partitions[2].dlq, {"reason": "schema"})
    all_units = units(KEYS)
    now = (await redis.time())[0] * 1000
    await redis.zadd(KEYS.workers, {"w1": now, "w2": now})
    for unit in all_units:
        if unit.index != 3:
            owner = "w1" if unit.index % 2 == 0 else "w2"
            await redis.set(unit.lease, f"{owner}:ep{unit.index}")
    await redis.set(all_units[1].lease, "")  # handed over a moment ago: nobody holds it
    report = await collect(redis, KEYS, LOOSE)
    assert (report.stream.length, report.stream.pending, report.stream.dlq_length) == (31, 12, 1)
    assert [p.name for p in report.worst] == ["p1", "p3", "p0", "p4", "p6"]
    assert [p.index for p in report.unowned] == [1, 3]
    assert report.partitions[2].owner == "w1" and report.partitions[5].owner == "w2"
    assert report.problems == ["work waiting without an owner: p1, p3"]
    text = render(report, KEYS)
    assert f"partitions owned: {KEYS.partition_count - 2} of {KEYS.partition_count}" in text
    assert "UNOWNED: p1, p3" in text and "worst partitions" in text
    owns = text[text.index("live workers: 2") :].splitlines()[2].split()
    assert owns[0] == "w1" and owns[-1] == "p14" and "p1" not in owns and "p2" in owns


async def test_ages_and_liveness_use_the_redis_clock_not_the_hosts(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With this host's clock an hour ahead, heartbeats written on Redis's clock are still
    live and pending ages stay small: status never reads the host clock."""
    await _partition_backlog(redis, 0, 2, 2)
    seconds, _ = await redis.time()
    await redis.zadd(KEYS.workers, {"w1": seconds * 1000})
    await redis.zadd(KEYS.gateways, {"gw1": seconds * 1000})
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    report = await collect(redis, KEYS, LOOSE)
    assert [w.id for w in report.workers] == ["w1"] and [g.id for g in report.gateways] == ["gw1"]
    age = report.partitions[0].oldest_pending_age_ms
    assert age is not None and age < 60_000
    assert report.now_ms // 1000 - seconds < 60
