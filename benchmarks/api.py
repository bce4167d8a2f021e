"""HTTP publish API: events/s and CPU per event of `streamer api`, single and batch publishes.

Starts a private redis-server and `streamer api` (a real process, default settings: the
idempotency window is on and every event carries an id, so each goes through the dedupe
script), then drives it from this process with aiohttp over `--connections` keep-alive
connections: `--singles` POST /api/publish requests, then `--batched` events in POST
/api/publish/batch requests of `--batch` events. Each phase also stops after
`--max-seconds`. Reports events/s, request latency (p50, p99) and the CPU time per event of
the API process and of redis-server; the load generator shares the machine (its CPU is not
counted). Writes the "HTTP publish API" section of BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis

from benchmarks.common import (
    BENCHMARKS_MD,
    cpu_seconds,
    machine,
    private_redis,
    redis_cpu_seconds,
    write_section,
)
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from tests.support.processes import StreamerProcess
from tests.support.servers import free_port, streamer_env

SECTION = "## HTTP publish API"
# Measured once (cProfile of `streamer api` under 3,000 single publishes); kept with the
# figures because it explains the gap between the two routes.
WHERE_THE_TIME_GOES = """\
Where a single publish's time goes (cProfile of the API process): mostly per-request work,
not per-event work: writing the response and the Redis command to their sockets, reading
the replies, aiohttp's request parsing and redis-py's connection checkout (it polls each
pooled connection for stray data before lending it). The schema check (msgspec) and the
dedupe script are a few percent. A batch pays those costs once for all its events, hence
~10x less CPU per event: producers with volume should use `/api/publish/batch`.
"""
KEY = "bench-api-key-0123456789abcdef"
HEADERS = {"Authorization": f"apikey {KEY}", "Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    events: int
    requests: int
    wall_s: float
    api_cpu_s: float
    redis_cpu_s: float
    latencies_s: list[float]

    def line(self) -> str:
        ordered = sorted(self.latencies_s)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return (
            f"{self.name}: {self.events:,} events in {self.requests:,} requests, "
            f"{self.wall_s:.2f}s: **{self.events / self.wall_s:,.0f} events/s**; CPU per "
            f"event: api {self.api_cpu_s / self.events * 1e6:.0f} µs, redis-server "
            f"{self.redis_cpu_s / self.events * 1e6:.1f} µs; request latency p50 "
            f"{p50:.1f} ms, p99 {p99:.1f} ms"
        )


def event(n: int, users: int) -> dict[str, object]:
    return {
        "user_id": f"u{n % users}",
        "event_type": "ai_generation_progress",
        "data": {"n": n, "progress": n % 100},
        "id": f"bench-{n}",
    }


def bodies(first: int, count: int, per_request: int, users: int) -> Iterator[bytes]:
    """Request bodies: single events, or batches of ``per_request`` (0: single)."""
    if per_request == 0:
        for n in range(first, first + count):
            yield json.dumps(event(n, users)).encode()
        return
    for start in range(first, first + count, per_request):
        batch = [event(n, users) for n in range(start, min(start + per_request, first + count))]
        yield json.dumps({"events": batch}).encode()


async def drive(
    url: str, path: str, requests: list[bytes], connections: int, deadline: float
) -> tuple[int, list[float]]:
    """Send every request (until the deadline) over ``connections`` keep-alive connections;
    (requests answered 202, their latencies)."""
    pending = iter(requests)
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession) -> None:
        for body in pending:  # shared: each body is sent once, by whichever client is free
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            async with session.post(path, data=body, headers=HEADERS) as response:
                await response.read()
                if response.status != 202:
                    raise RuntimeError(f"{path}: {response.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    return len(latencies), latencies


def run_phase(
    name: str, api_pid: int, client: redis.Redis, url: str, path: str, requests: list[bytes],
    per_request: int, connections: int, max_s: float,
) -> Phase:  # fmt: skip
    api0, redis0 = cpu_seconds(api_pid), redis_cpu_seconds(client)
    started = time.perf_counter()
    answered, latencies = asyncio.run(
        drive(url, path, requests, connections, time.monotonic() + max_s)
    )
    wall = time.perf_counter() - started
    events = answered * max(per_request, 1)
    return Phase(
        name,
        events,
        answered,
        wall,
        cpu_seconds(api_pid) - api0,
        redis_cpu_seconds(client) - redis0,
        latencies,
    )


def written(client: redis.Redis) -> int:
    keys = Keys.from_settings(RedisSettings.from_env(Env({})))
    return sum(int(client.xlen(p.stream)) for p in keys.partitions)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.api")
    parser.add_argument("--singles", type=int, default=5_000)
    parser.add_argument("--batched", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args, _ = parser.parse_known_args(argv)
    server = private_redis()
    port = free_port()
    env = streamer_env(server.url, API_KEYS=KEY, API_PORT=str(port), LOG_LEVEL="warning")
    log = Path(tempfile.mkdtemp(prefix="streamer-bench-api-")) / "api.log"
    api = StreamerProcess(["api"], env, log).start()
    client = redis.Redis.from_url(server.url)
    try:
        api.wait_healthy(port)
        url = f"http://127.0.0.1:{port}"
        load_avg = os.getloadavg()[0]
        singles = list(bodies(0, args.singles, 0, args.users))
        batches = list(bodies(args.singles, args.batched, args.batch, args.users))
        phases = [
            run_phase("single (POST /api/publish)", api.pid, client, url, "/api/publish",
                      singles, 0, args.connections, args.max_seconds),
            run_phase(f"batch of {args.batch} (POST /api/publish/batch)", api.pid, client,
                      url, "/api/publish/batch", batches, args.batch, args.connections,
                      args.max_seconds),
        ]  # fmt: skip
        total = written(client)
    finally:
        api.stop()
        client.close()
        server.stop()
    sent = sum(p.events for p in phases)
    assert total == sent, f"{total} entries written for {sent} events accepted"
    lines = [p.line() for p in phases]
    print(f"machine: {machine()}; 1-minute load average before: {load_avg:.1f}")
    print("\n".join(lines))
    if not args.no_write:
        when = f"{time.strftime('%Y-%m-%d')}, {machine()}, load average {load_avg:.1f} before"
        text = (
            f"{SECTION}\n\n`just bench api` ({when}): one `streamer api` process, default "
            f"settings (idempotency window on, every event with an id), {args.connections} "
            "keep-alive connections from a load generator on the same machine, Redis on the "
            "same host; every accepted event checked written once.\n\n"
            + "".join(f"- {line}\n" for line in lines)
            + "\n"
            + WHERE_THE_TIME_GOES
        )
        write_section(BENCHMARKS_MD, SECTION, text)


if __name__ == "__main__":
    main(sys.argv[1:])
