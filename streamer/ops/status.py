"""`streamer status`: the ingress streams (totals over the partitions and the
compatibility stream, the worst partitions, who owns each), consumers, dead letters, live
workers and gateways, as a table or JSON.

Every age and liveness judgment is made on Redis's clock (TIME), never this host's, like the
processes' own heartbeats: a host whose clock is off sees the same live processes.

Exit code: 0 healthy, 1 unhealthy (no live worker, lag or DLQ over its threshold, a
partition with work waiting and no owner, Redis unreachable), so the command can serve as a
check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from streamer.infra import registry
from streamer.infra.redis import REDIS_ERRORS, connect
from streamer.infra.settings import Env, RedisSettings
from streamer.infra.stream_stats import (
    ConsumerInfo,
    StreamStats,
    consumers,
    dead_letter_reasons,
    merge_consumers,
    sample_all,
    server_now_ms,
    total,
)
from streamer.worker.assignment import Unit, units
from streamer.worker.leases import holder

WORST_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_lag: int
    max_dlq: int
    live_ms: int  # a heartbeat younger than this counts as live


@dataclass(frozen=True, slots=True)
class Worker:
    id: str
    heartbeat_age_ms: int


@dataclass(frozen=True, slots=True)
class Gateway:
    """A live gateway, with what it wrote into its info hash at its last heartbeat."""

    id: str
    heartbeat_age_ms: int
    sockets: int | None
    users: int | None
    address: str | None
    uptime_s: int | None


@dataclass(frozen=True, slots=True)
class Partition:
    """One ingress stream (a partition, or the compatibility stream: ``index`` -1) with its
    figures and the worker holding its lease (None: no owner)."""

    index: int
    name: str
    stream: str
    length: int
    group_exists: bool
    lag: int | None
    pending: int
    oldest_pending_age_ms: int | None
    dlq_length: int
    owner: str | None
    owner_live: bool


@dataclass(frozen=True, slots=True)
class Report:
    stream: StreamStats  # totals over every ingress stream
    compat: Partition
    partitions: list[Partition]
    now_ms: int  # Redis's clock when the report was taken
    consumers: list[ConsumerInfo]
    dead_letter_reasons: list[tuple[str, int]]
    workers: list[Worker]
    gateways: list[Gateway]
    stale_gateways: int
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def worst(self) -> list[Partition]:
        """The partitions most behind (by lag, then pending), at most WORST_SHOWN, only
        those with anything to do."""
        busy = [p for p in self.partitions if (p.lag or 0) or p.pending]
        return sorted(busy, key=lambda p: (-(p.lag or 0), -p.pending, p.index))[:WORST_SHOWN]

    @property
    def unowned(self) -> list[Partition]:
        return [p for p in self.partitions if p.owner is None]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("status", help="show stream and delivery health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--max-lag", type=int, default=10000, help="unhealthy above this lag")
    p.add_argument("--max-dlq", type=int, default=1000, help="unhealthy above this DLQ length")
    p.add_argument("--live-ms", type=int, default=15000, help="heartbeat age that counts as live")
    p.set_defaults(handler=handle)


def problems(
    stats: StreamStats,
    workers: list[Worker],
    thresholds: Thresholds,
    streams: Sequence[Partition] = (),
) -> list[str]:
    """What makes the deployment unhealthy; empty when it is healthy. A stream without an
    owner is a problem only when work waits in it and some worker is live (else "no live
    worker" says it already); a moment's gap during a rebalance shows up too."""
    found = []
    if not workers:
        found.append("no live worker")
    stranded = [p.name for p in streams if p.owner is None and ((p.lag or 0) or p.pending)]
    if workers and stranded:
        found.append(f"work waiting without an owner: {', '.join(stranded)}")
    if stats.lag is not None and stats.lag > thresholds.max_lag:
        found.append(f"lag {stats.lag} > {thresholds.max_lag}")
    if stats.dlq_length > thresholds.max_dlq:
        found.append(f"dlq {stats.dlq_length} > {thresholds.max_dlq}")
    return found


async def _live(redis: aioredis.Redis, key: str, live_ms: int) -> tuple[int, list[tuple[str, int]]]:
    """Members of a heartbeat zset seen within live_ms, as (id, heartbeat age ms), judged on
    the clock that stamped the heartbeats: the TIME of the node holding the zset (on Redis
    Cluster each registry's own master); and that now, in ms."""
    now_ms, _ = await registry.live(redis, key, live_ms)
    rows = await redis.zrangebyscore(key, now_ms - live_ms, "+inf", withscores=True)
    # max(0, …): a heartbeat written by a host whose clock runs ahead of ours.
    return now_ms, sorted((member.decode(), max(0, now_ms - int(score))) for member, score in rows)


def _int(info: dict[bytes, bytes], field: bytes) -> int | None:
    value = info.get(field)
    return int(value) if value is not None and value.isdigit() else None


def _gateway(gid: str, age_ms: int, info: dict[bytes, bytes], now_ms: int) -> Gateway:
    host, port = info.get(b"host"), info.get(b"port")
    started = _int(info, b"started_ms")
    return Gateway(
        id=gid,
        heartbeat_age_ms=age_ms,
        sockets=_int(info, b"sockets"),
        users=_int(info, b"users"),
        address=f"{host.decode()}:{port.decode()}" if host and port else None,
        uptime_s=None if started is None else max(0, (now_ms - started) // 1000),
    )


async def _gateways(redis: aioredis.Redis, keys: Keys, live_ms: int) -> tuple[list[Gateway], int]:
    now_ms, live = await _live(redis, keys.gateways, live_ms)
    pipe = redis.pipeline(transaction=False)
    for gid, _ in live:
        pipe.hgetall(keys.gateway_info(gid))
    pipe.zcount(keys.gateways, "-inf", f"({now_ms - live_ms}")
    *infos, stale = await pipe.execute()
    gateways = [
        _gateway(gid, age, info, now_ms) for (gid, age), info in zip(live, infos, strict=True)
    ]
    return gateways, int(stale)


async def _owners(redis: aioredis.Redis, all_units: Sequence[Unit]) -> list[str | None]:
    """The worker holding each unit's lease (None: nobody)."""
    pipe = redis.pipeline(transaction=False)  # one GET per slot: never a multi-key command
    for unit in all_units:
        pipe.get(unit.lease)
    return [holder(value) for value in await pipe.execute()]


def _partition(unit: Unit, s: StreamStats, owner: str | None, live: set[str]) -> Partition:
    return Partition(
        unit.index, unit.name, unit.stream, s.length, s.group_exists, s.lag, s.pending,
        s.oldest_pending_age_ms, s.dlq_length, owner, owner in live,
    )  # fmt: skip


async def collect(redis: aioredis.Redis, keys: Keys, thresholds: Thresholds) -> Report:
    now_ms = await server_now_ms(redis)  # for the streams' ages; liveness on its own clock
    all_units = units(keys)  # the partitions, then the compatibility stream
    stats = await sample_all(redis, keys, now_ms)
    owners = await _owners(redis, all_units)
    _, live = await _live(redis, keys.workers, thresholds.live_ms)
    workers = [Worker(w, age) for w, age in live]
    streams = [
        _partition(u, s, o, {w.id for w in workers})
        for u, s, o in zip(all_units, stats, owners, strict=True)
    ]
    totals = total(stats)
    gateways, stale = await _gateways(redis, keys, thresholds.live_ms)
    held = [await consumers(redis, u.stream, keys.group, now_ms) for u in all_units]
    return Report(
        stream=totals,
        compat=streams[-1],
        partitions=streams[:-1],
        now_ms=now_ms,
        consumers=merge_consumers(held),
        dead_letter_reasons=await dead_letter_reasons(redis, keys) if totals.dlq_length else [],
        workers=workers,
        gateways=gateways,
        stale_gateways=stale,
        problems=problems(totals, workers, thresholds, streams),
    )


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [list(headers), *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _figures(length: int, lag: int | None, pending: int, oldest: int | None) -> str:
    return (
        f"length {length}, lag {'-' if lag is None else lag}, "
        f"pending {pending} (oldest {_age(oldest)})"
    )


def _owner(p: Partition) -> str:
    if p.owner is None:
        return "UNOWNED"
    return p.owner if p.owner_live else f"{p.owner} (not live)"


def _stream_lines(report: Report, keys: Keys) -> list[str]:
    s, c = report.stream, report.compat
    reasons = ", ".join(f"{reason} {count}" for reason, count in report.dead_letter_reasons[:5])
    missing = [p.name for p in (*report.partitions, c) if not p.group_exists]
    return [
        f"ingress ({len(report.partitions)} partitions + {keys.stream}): "
        + _figures(s.length, s.lag, s.pending, s.oldest_pending_age_ms),
        f"stream {keys.stream} (compatibility): "
        + _figures(c.length, c.lag, c.pending, c.oldest_pending_age_ms)
        + f", dead letters {c.dlq_length}, owner {_owner(c)}",
        f"group {keys.group}: "
        + (f"MISSING on {', '.join(missing)}" if missing else "present on every stream"),
        f"dead letters (every DLQ): {s.dlq_length}"
        + (f" (newest by reason: {reasons})" if reasons else ""),
    ]


def _partition_lines(report: Report) -> list[str]:
    unowned = report.unowned
    owned = len(report.partitions) - len(unowned)
    lines = [
        f"partitions owned: {owned} of {len(report.partitions)}"
        + (f"; UNOWNED: {', '.join(p.name for p in unowned)}" if unowned else "")
    ]
    worst = report.worst
    if not worst:
        return [*lines, "worst partitions: none (no lag, nothing pending)"]
    rows = [
        (p.name, p.lag, p.pending, _age(p.oldest_pending_age_ms), p.dlq_length, _owner(p))
        for p in worst
    ]
    headers = ("PARTITION", "LAG", "PENDING", "OLDEST", "DLQ", "OWNER")
    title = f"worst partitions (by lag, then pending; top {WORST_SHOWN}):"
    return [*lines, title, *_table(headers, rows)]


def _consumer_lines(report: Report) -> list[str]:
    lines = [f"consumers: {len(report.consumers)}"]
    rows = [
        (c.name, c.pending, _age(c.oldest_pending_age_ms), _age(c.idle_ms))
        for c in report.consumers
    ]
    return lines + (_table(("NAME", "PENDING", "OLDEST", "IDLE"), rows) if rows else [])


def _worker_lines(report: Report) -> list[str]:
    lines = [f"live workers: {len(report.workers)}"]
    held: dict[str, list[str]] = {}
    for p in (*report.partitions, report.compat):
        if p.owner is not None:
            held.setdefault(p.owner, []).append(p.name)
    rows = [
        (w.id, _age(w.heartbeat_age_ms) + " ago", " ".join(held.get(w.id, [])) or "-")
        for w in report.workers
    ]
    return lines + (_table(("ID", "HEARTBEAT", "OWNS"), rows) if rows else [])


def _gateway_lines(report: Report) -> list[str]:
    total = sum(g.sockets or 0 for g in report.gateways)
    live, stale = len(report.gateways), report.stale_gateways
    lines = [f"live gateways: {live} ({total} sockets; {stale} stale)"]
    rows = [
        (
            g.id,
            g.sockets,
            g.users,
            g.address,
            _age(g.heartbeat_age_ms) + " ago",
            _age(None if g.uptime_s is None else g.uptime_s * 1000),
        )
        for g in report.gateways
    ]
    headers = ("ID", "SOCKETS", "USERS", "ADDRESS", "HEARTBEAT", "UP")
    return lines + (_table(headers, rows) if rows else [])


def render(report: Report, keys: Keys) -> str:
    """The human-readable report; its last line is the verdict."""
    verdict = "OK" if report.healthy else "UNHEALTHY: " + "; ".join(report.problems)
    return "\n".join(
        [
            *_stream_lines(report, keys),
            *_partition_lines(report),
            *_consumer_lines(report),
            *_worker_lines(report),
            *_gateway_lines(report),
            f"status: {verdict}",
        ]
    )


def to_json(report: Report) -> str:
    body = asdict(report)
    body["dead_letter_reasons"] = [{"reason": r, "count": n} for r, n in report.dead_letter_reasons]
    body["worst_partitions"] = [p.index for p in report.worst]
    body["unowned_partitions"] = [p.index for p in report.unowned]
    body["healthy"] = report.healthy
    return json.dumps(body, indent=2)


async def _report(settings: RedisSettings, thresholds: Thresholds) -> Report:
    redis = connect(settings.url, client_name="streamer-status")
    try:
        return await collect(redis, Keys.from_settings(settings), thresholds)
    finally:
        await redis.aclose()


def handle(args: argparse.Namespace) -> int:
    settings = RedisSettings.from_env(Env())
    thresholds = Thresholds(args.max_lag, args.max_dlq, args.live_ms)
    try:
        report = asyncio.run(_report(settings, thresholds))
    except REDIS_ERRORS as exc:
        problem = f"redis unreachable: {exc}"
        print(
            json.dumps({"healthy": False, "problems": [problem]})
            if args.json
            else f"status: UNHEALTHY: {problem}"
        )
        return 1
    print(to_json(report) if args.json else render(report, Keys.from_settings(settings)))
    return 0 if report.healthy else 1
