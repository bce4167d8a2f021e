"""Replay rate: `streamer replay --from - --to +` over N entries (default 1,000,000).

Loads N events into a private redis-server, then times the real CLI (a subprocess, as an
operator runs it) replaying all of them into the same stream, and a filtered run that
scans everything but writes 1 in `--users` entries (the cost of decoding for filters).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import redis

from benchmarks.common import machine, private_redis
from tests.support.servers import streamer_env

STREAM = "notify:events"


def load(client: redis.Redis, events: int, users: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        body = {
            "user_id": f"u{n % users}",
            "event_type": "ai_generation_progress",
            "data": {"n": n, "progress": n % 100, "job": f"job-{n // 100}"},
            "target_channels": ["websocket"],
        }
        pipe.xadd(STREAM, {"payload": json.dumps(body)})
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def timed_replay(url: str, *flags: str) -> tuple[float, str]:
    """Wall time of one `streamer replay` run and its summary line."""
    command = [sys.executable, "-m", "streamer", "replay", "--from", "-", *flags]
    started = time.perf_counter()
    done = subprocess.run(command, env=streamer_env(url), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"replay failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, done.stdout.strip().splitlines()[-1]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.replay")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--batch", default="1000")
    args, _ = parser.parse_known_args(argv)
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    try:
        load(client, args.entries, args.users)
        end = client.xrevrange(STREAM, count=1)[0][0].decode()
        full, full_line = timed_replay(server.url, "--to", end, "--batch", args.batch)
        replayed = client.xlen(STREAM) - args.entries
        # Only the original range again (not the copies): decode every payload, keep u1's.
        flags = ("--to", end, "--batch", args.batch, "--user", "u1")
        filtered, filtered_line = timed_replay(server.url, *flags)
    finally:
        client.close()
        server.stop()
    assert replayed == args.entries, f"{replayed} of {args.entries} entries replayed"
    matched = re.search(r"replayed (\d+) of", filtered_line)
    print(f"machine: {machine()}")
    print(
        f"replay: {args.entries:,} entries in {full:.2f}s wall = {args.entries / full:,.0f} "
        f"entries/s (CLI: {full_line}); batch {args.batch}"
    )
    print(
        f"replay --user u1: scanned {args.entries:,}, wrote {matched.group(1) if matched else '?'}"
        f" in {filtered:.2f}s wall = {args.entries / filtered:,.0f} entries/s scanned"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
