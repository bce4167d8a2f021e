"""Worker throughput: events/s into user logs, one worker process, N events (default 100,000).

XADDs the events first, then starts one `streamer worker` process and times it from its
first read until every ingress stream's group has read and acked everything. Two runs:

- ``partitions``: each event XADDed to its user's partition stream (what `streamer publish`,
  the bridges and `streamer.producer` do);
- ``compatibility``: every event XADDed to `notify:events`, which the worker routes to the
  partitions first (what a producer that only knows the old stream does): the difference is
  the cost of that extra hop.

CPU per event: the worker's own CPU time (/proc) and redis-server's (`INFO cpu`) over the
timed window, divided by the events. Results go to BENCHMARKS.md ("## Worker throughput")
unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import redis

from benchmarks.common import (
    BENCHMARKS_MD,
    cpu_seconds,
    load_events,
    machine,
    private_redis,
    redis_cpu_seconds,
    write_section,
)
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from tests.support.servers import streamer_env, wait_for

SECTION = "## Worker throughput"
MODES = ("partitions", "compatibility")


@dataclass(frozen=True, slots=True)
class Result:
    mode: str
    seconds: float
    worker_cpu_s: float
    redis_cpu_s: float


def progress(client: redis.Redis, streams: list[str]) -> tuple[int, int]:
    """Entries read and entries pending, summed over the streams' consumer groups."""
    read = pending = 0
    for stream in streams:
        if not client.exists(stream):
            continue
        for group in client.xinfo_groups(stream):
            read += int(group["entries-read"] or 0)
            pending += int(group["pending"])
    return read, pending


def run(mode: str, events: int, users: int, read_count: str | None) -> Result:
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    settings = {"WORKER_ID": "bench", "LOG_LEVEL": "warning"}
    if read_count:
        settings["READ_COUNT"] = read_count
    env = streamer_env(server.url, **settings)
    keys = Keys.from_settings(RedisSettings.from_env(Env(env)))
    partitions = [p.stream for p in keys.partitions]
    try:
        if mode == "partitions":
            load_events(client, events, users, keys.ingress)
        else:
            load_events(client, events, users)
        # Routed entries are read twice: once from notify:events, once from their partition.
        expected = events * (2 if mode == "compatibility" else 1)
        streams = [keys.stream, *partitions]
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env)
        try:
            first_read = lambda: progress(client, streams)[0] > 0  # noqa: E731
            wait_for(first_read, timeout=30, interval=0.001, what="first read")
            started = time.perf_counter()
            cpu0, redis0 = cpu_seconds(proc.pid), redis_cpu_seconds(client)
            wait_for(
                lambda: progress(client, streams) == (expected, 0),
                timeout=600,
                interval=0.01,
                what="all events acked",
            )
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(proc.pid) - cpu0
            redis_cpu = redis_cpu_seconds(client) - redis0
        finally:
            proc.terminate()
            proc.wait(15)
        logged = sum(client.xlen(keys.user_log(f"u{u}")) for u in range(users))
    finally:
        client.close()
        server.stop()
    assert logged == events, f"{mode}: {logged} of {events} events in user logs"
    return Result(mode, elapsed, cpu, redis_cpu)


def render(results: list[Result], events: int, users: int, read_count: str | None) -> str:
    rows = [
        f"| {r.mode} | {events / r.seconds:,.0f} | {r.worker_cpu_s / events * 1e6:.1f} | "
        f"{r.redis_cpu_s / events * 1e6:.1f} |"
        for r in results
    ]
    return "\n".join(
        [
            SECTION,
            "",
            f"`python -m benchmarks worker` ({time.strftime('%Y-%m-%d')}, {machine()}; private "
            f"redis-server on the same host; 1-minute load average {os.getloadavg()[0]:.1f}).",
            "",
            f"{events:,} events ({users:,} users, websocket channel, no gateway connected) are "
            "XADDed first; then one `streamer worker` process (the real CLI, uvloop, "
            f"READ_COUNT {read_count or 'default'}) is timed from its first read until every "
            "group has read and acked everything; every event is checked to be in its user's "
            "log. `partitions`: events XADDed to their users' partition streams; "
            "`compatibility`: to `notify:events`, routed by the worker to the partitions "
            "first (the cost of that hop is the difference).",
            "",
            "| ingress | events/s | worker CPU µs/event | redis-server CPU µs/event |",
            "| --- | ---: | ---: | ---: |",
            *rows,
            "",
        ]
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.worker")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--read-count", help="READ_COUNT for the worker (default: its own)")
    parser.add_argument("--modes", default=",".join(MODES), help="partitions,compatibility")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args, _ = parser.parse_known_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}")
    results = [run(mode, args.events, args.users, args.read_count) for mode in modes]
    text = render(results, args.events, args.users, args.read_count)
    print(text, flush=True)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"(written to {BENCHMARKS_MD})")


if __name__ == "__main__":
    main(sys.argv[1:])
