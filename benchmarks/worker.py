"""Worker throughput: events/s into user logs, one worker process, N events (default 100,000).

XADDs the events first, then starts one `streamer worker` process and times it from its
first read until the group has read and acked everything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import redis

from benchmarks.common import cpu_seconds, load_events, machine, private_redis
from tests.support.servers import streamer_env, wait_for

STREAM = "notify:events"
GROUP = "notify-workers"


def group_state(client: redis.Redis) -> tuple[int, int]:
    groups = client.xinfo_groups(STREAM) if client.exists(STREAM) else []
    if not groups:
        return 0, 0
    return int(groups[0]["entries-read"] or 0), int(groups[0]["pending"])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.worker")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--read-count", default="500")
    args, _ = parser.parse_known_args(argv)
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    try:
        load_events(client, args.events, args.users)
        env = streamer_env(
            server.url, WORKER_ID="bench", READ_COUNT=args.read_count, LOG_LEVEL="warning"
        )
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env)
        wait_for(lambda: group_state(client)[0] > 0, timeout=30, interval=0.001, what="first read")
        started, cpu0 = time.perf_counter(), cpu_seconds(proc.pid)
        wait_for(
            lambda: group_state(client) == (args.events, 0),
            timeout=600,
            interval=0.01,
            what="all events acked",
        )
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu0
        logged = sum(client.xlen(f"notify:user:{{u{u}}}") for u in range(args.users))
        proc.terminate()
        proc.wait(15)
    finally:
        client.close()
        server.stop()
    assert logged == args.events, f"{logged} of {args.events} events in user logs"
    print(f"machine: {machine()}")
    print(
        f"worker: {args.events} events over {args.users} users in {elapsed:.2f}s = "
        f"{args.events / elapsed:,.0f} events/s; worker CPU {cpu:.2f}s "
        f"({cpu / args.events * 1e6:.0f} µs/event); READ_COUNT={args.read_count}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
