"""Replay rate: `streamer replay --from - --to +` over N entries (default 1,000,000).

Loads N events into a private redis-server, then times the real CLI (a subprocess, as an
operator runs it) replaying all of them into the same stream, and a filtered run that
scans everything but writes 1 in `--users` entries (the cost of decoding for filters).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import redis

from benchmarks.common import cpu_seconds, load_events, machine, private_redis
from tests.support.servers import streamer_env

STREAM = "notify:events"


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    cli_cpu_s: float  # the replay process (start-up included)
    redis_cpu_s: float
    summary: str  # the CLI's last line


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_replay(url: str, redis_pid: int, *flags: str) -> Run:
    """Wall and CPU time of one `streamer replay` run, and its summary line."""
    command = [sys.executable, "-m", "streamer", "replay", "--from", "-", *flags]
    cpu0, redis0, started = _children_cpu(), cpu_seconds(redis_pid), time.perf_counter()
    done = subprocess.run(command, env=streamer_env(url), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"replay failed ({done.returncode}): {done.stderr.strip()}")
    return Run(
        elapsed,
        _children_cpu() - cpu0,
        cpu_seconds(redis_pid) - redis0,
        done.stdout.strip().splitlines()[-1],
    )


def report(name: str, entries: int, run: Run) -> str:
    return (
        f"{name}: {entries:,} entries scanned in {run.wall_s:.2f}s wall = "
        f"{entries / run.wall_s:,.0f} entries/s; CPU: replay process {run.cli_cpu_s:.1f}s "
        f"({run.cli_cpu_s / entries * 1e6:.1f} µs/entry), redis-server {run.redis_cpu_s:.1f}s\n"
        f"  CLI: {run.summary}"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.replay")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--batch", default="1000")
    args, _ = parser.parse_known_args(argv)
    server = private_redis()
    assert server.process is not None
    client = redis.Redis.from_url(server.url)
    try:
        load_events(client, args.entries, args.users)
        end = client.xrevrange(STREAM, count=1)[0][0].decode()
        load_avg = os.getloadavg()[0]
        full = timed_replay(server.url, server.process.pid, "--to", end, "--batch", args.batch)
        replayed = client.xlen(STREAM) - args.entries
        # Only the original range again (not the copies): decode every payload, keep u1's.
        flags = ("--to", end, "--batch", args.batch, "--user", "u1")
        filtered = timed_replay(server.url, server.process.pid, *flags)
    finally:
        client.close()
        server.stop()
    assert replayed == args.entries, f"{replayed} of {args.entries} entries replayed"
    print(f"machine: {machine()}; 1-minute load average before: {load_avg:.1f}")
    print(report(f"replay (batch {args.batch})", args.entries, full))
    print(report("replay --user u1 (writes 1 in --users)", args.entries, filtered))


if __name__ == "__main__":
    main(sys.argv[1:])
