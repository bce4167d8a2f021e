"""`streamer status`: stream length, lag, pending, DLQ, live workers and gateways.

Exits non-zero when unhealthy, so it can serve as a check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from streamer.keys import Keys
from streamer.redis_client import connect
from streamer.settings import Env, RedisSettings
from streamer.stream_stats import StreamStats, sample


@dataclass(frozen=True, slots=True)
class Report:
    stats: StreamStats
    workers: dict[str, int]  # worker id -> ms since last heartbeat
    gateways: dict[str, int]  # gateway id -> ms since last heartbeat
    problems: list[str]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("status", help="show stream and delivery health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--max-lag", type=int, default=10000, help="unhealthy above this lag")
    p.add_argument("--max-dlq", type=int, default=1000, help="unhealthy above this DLQ length")
    p.add_argument("--live-ms", type=int, default=15000, help="heartbeat age that counts as live")
    p.set_defaults(handler=handle)


async def _heartbeats(redis: aioredis.Redis, key: str, live_ms: int) -> dict[str, int]:
    now = int(time.time() * 1000)
    rows = await redis.zrangebyscore(key, now - live_ms, "+inf", withscores=True)
    return {member.decode(): now - int(score) for member, score in rows}


async def collect(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> Report:
    stats = await sample(redis, keys)
    workers = await _heartbeats(redis, keys.workers, args.live_ms)
    gateways = await _heartbeats(redis, keys.gateways, args.live_ms)
    problems = []
    if not workers:
        problems.append("no live worker")
    if stats.lag is not None and stats.lag > args.max_lag:
        problems.append(f"lag {stats.lag} > {args.max_lag}")
    if stats.dlq_length > args.max_dlq:
        problems.append(f"dlq {stats.dlq_length} > {args.max_dlq}")
    return Report(stats, workers, gateways, problems)


def render(report: Report) -> str:
    s = report.stats
    rows = [
        ("stream length", s.length),
        ("consumer group", "present" if s.group_exists else "missing"),
        ("lag", "-" if s.lag is None else s.lag),
        ("pending", s.pending),
        (
            "oldest pending age",
            "-" if s.oldest_pending_age_ms is None else f"{s.oldest_pending_age_ms} ms",
        ),
        ("dlq length", s.dlq_length),
        ("live workers", len(report.workers)),
        ("live gateways", len(report.gateways)),
    ]
    lines = [f"{name:<20} {value}" for name, value in rows]
    for c in s.consumers:
        lines.append(f"  consumer {c.name:<30} pending {c.pending:<8} idle {c.idle_ms} ms")
    for gid, age in sorted(report.gateways.items()):
        lines.append(f"  gateway {gid:<31} heartbeat {age} ms ago")
    lines.append(
        "status: " + ("OK" if not report.problems else "UNHEALTHY: " + "; ".join(report.problems))
    )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    redis_settings = RedisSettings.from_env(Env())
    keys = Keys.from_settings(redis_settings)

    async def main() -> Report:
        redis = connect(redis_settings.url)
        try:
            return await collect(redis, keys, args)
        finally:
            await redis.aclose()

    report = asyncio.run(main())
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render(report))
    return 1 if report.problems else 0
