"""Replay rate: `streamer replay --from - --to +` over N entries (default 1,000,000).

Loads N events into a private redis-server, into the ingress partitions as
`streamer.producer` writes them (or, with `--into compat`, all into `notify:events`), then
times the real CLI (a subprocess, as an operator runs it) replaying all of them, each into
its own stream (copied inside Redis); a filtered run over every partition
(`--event-type`, every payload decoded here, nothing filtered out); and `--user u1`, which
reads only that user's partition.
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
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from tests.support.servers import streamer_env

KEYS = Keys.from_settings(RedisSettings.from_env(Env({})))
STREAMS = [p.stream for p in KEYS.partitions] + [KEYS.stream]


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


def total_length(client: redis.Redis) -> int:
    return sum(int(client.xlen(s)) for s in STREAMS)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.replay")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--batch", default="1000")
    parser.add_argument("--into", choices=("partitions", "compat"), default="partitions")
    args, _ = parser.parse_known_args(argv)
    server = private_redis()
    assert server.process is not None
    client = redis.Redis.from_url(server.url)
    pid, batch = server.process.pid, ("--batch", args.batch)
    try:
        if args.into == "compat":
            load_events(client, args.entries, args.users)
        else:
            load_events(client, args.entries, args.users, KEYS.ingress)
        u1 = client.xlen(KEYS.ingress("u1") if args.into == "partitions" else KEYS.stream)
        load_avg = os.getloadavg()[0]
        full = timed_replay(server.url, pid, "--to", "+", *batch)
        replayed = total_length(client) - args.entries
        # Only the original range again (not the copies): every lane, every payload decoded.
        end = _newest_original(client, args.entries)
        typed = timed_replay(server.url, pid, "--to", end, *batch, "--event-type", "nothing")
        by_user = timed_replay(server.url, pid, "--to", end, *batch, "--user", "u1")
    finally:
        client.close()
        server.stop()
    assert replayed == args.entries, f"{replayed} of {args.entries} entries replayed"
    print(f"machine: {machine()}; 1-minute load average before: {load_avg:.1f}")
    print(f"entries loaded into: {args.into}")
    print(report(f"replay (batch {args.batch}, copied inside Redis)", args.entries, full))
    print(report("replay --event-type nothing (decodes all, writes none)", args.entries, typed))
    print(report(f"replay --user u1 (its partition: {u1:,} entries)", u1, by_user))


def _newest_original(client: redis.Redis, entries: int) -> str:
    """The newest id among the loaded entries: every copy the replay made is newer."""
    newest = []
    for stream in STREAMS:
        rows = client.xrange(stream, count=1)
        if rows:
            # The originals come first in each stream; the copies were appended after them.
            rows = client.xrange(stream, count=entries)
            originals = [r for r in rows if b"replay_of" not in r[1]]
            newest.append(originals[-1][0].decode())
    return max(newest, key=lambda i: tuple(int(x) for x in i.split("-")))


if __name__ == "__main__":
    main(sys.argv[1:])
