"""Redis Cluster benchmark: Redis CPU per event on each master, 1 master vs 3, and events/s
by partitions and workers.

Each run starts a private Redis Cluster (one master owning every slot, or three made by
`redis-cli --cluster create`), W `streamer worker` processes on it (`redis+cluster://`), and
waits until they hold every partition. Then E events (default 50,000; websocket, round-robin
over U users, no socket open: the worker's part is the user-log append and the settle) are
XADDed to their users' partition streams, pipelined, and the run ends when every partition's
group has read and acked everything. Over that window:

- Redis CPU per event: each master's `INFO cpu` (used_cpu_user + used_cpu_sys) delta divided
  by the events, so the ingress XADD, the worker's reads, scripts and acks are all counted;
  the sum over masters is the cluster's cost, the largest one the hottest shard's;
- worker CPU per event: the worker processes' own CPU time (/proc);
- events/s: events over the time from the first XADD to the last ack.

The producer is a Python cluster pipeline (not counted). On a small shared machine the wall
time figures move with the load; CPU per event per master is the figure to compare.
Results go to BENCHMARKS.md ("## Redis Cluster") unless --no-write.

    python -m benchmarks.cluster [--events N] [--users N] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.cluster

from benchmarks.common import BENCHMARKS_MD, cpu_seconds, machine, write_section
from streamer.contract.keys import Keys
from streamer.infra.redis import connect_sync
from streamer.infra.settings import Env, RedisSettings
from tests.support.cluster import RedisClusterServers
from tests.support.servers import streamer_env, wait_for

SECTION = "## Redis Cluster"
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Setup:
    masters: int
    partitions: int
    workers: int


@dataclass(frozen=True, slots=True)
class Result:
    setup: Setup
    events: int
    seconds: float
    redis_cpu_s: list[float]  # per master
    worker_cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def per_event_us(self, cpu_s: float) -> float:
        return cpu_s / self.events * 1e6


SETUPS = (
    Setup(1, 16, 2),
    Setup(3, 16, 2),
    Setup(3, 16, 1),
    Setup(3, 64, 2),
)


def run(setup: Setup, events: int, users: int) -> Result:
    cluster = RedisClusterServers(Path(tempfile.mkdtemp(prefix="streamer-bench-")), setup.masters)
    cluster.start()
    env = streamer_env(
        cluster.url, LOG_LEVEL="warning", INGRESS_PARTITIONS=str(setup.partitions), METRICS_PORT="0"
    )
    keys = Keys.from_settings(RedisSettings.from_env(Env(env)))
    client = connect_sync(cluster.url, client_name="bench")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker"], env={**env, "WORKER_ID": f"w{i}"}
        )
        for i in range(setup.workers)
    ]
    try:
        wait_for(lambda: _owned(client, keys, setup.workers), timeout=60, what="every lease held")
        nodes = [redis.Redis(port=node.port) for node in cluster.nodes]
        redis_before = [_redis_cpu(node) for node in nodes]
        worker_before = sum(cpu_seconds(w.pid) for w in workers)
        started = time.monotonic()
        _publish(client, keys, events, users)
        wait_for(lambda: _settled(client, keys, events), timeout=600, interval=0.2, what="acked")
        seconds = time.monotonic() - started
        after = [_redis_cpu(node) for node in nodes]
        redis_cpu = [a - b for a, b in zip(after, redis_before, strict=True)]
        worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - worker_before
        for node in nodes:
            node.close()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(20)
        client.close()
        cluster.stop()
    return Result(setup, events, seconds, redis_cpu, worker_cpu)


def _redis_cpu(node: redis.Redis) -> float:
    info = node.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _owned(client: redis.Redis, keys: Keys, workers: int) -> bool:
    pipe = client.pipeline(transaction=False)
    for part in keys.partitions:
        pipe.get(part.lease)
    holders = pipe.execute()
    if any(h is None for h in holders):
        return False
    names = {f"w{i}".encode() for i in range(workers)}
    return all(any(name in h for h in holders) for name in names)


def _publish(client: redis.Redis, keys: Keys, events: int, users: int) -> None:
    streams = [keys.ingress(f"bench-{u}") for u in range(users)]
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        user = n % users
        body = {"user_id": f"bench-{user}", "event_type": "bench", "data": {"n": n}}
        pipe.xadd(streams[user], {"payload": json.dumps(body)})
        if len(pipe) >= CHUNK:
            pipe.execute()
    pipe.execute()


def _settled(client: redis.Redis, keys: Keys, events: int) -> bool:
    pipe = client.pipeline(transaction=False)
    for part in keys.partitions:
        pipe.xinfo_groups(part.stream)
    read = pending = 0
    for groups in pipe.execute(raise_on_error=False):
        if isinstance(groups, Exception):
            continue  # a partition without events yet
        for group in groups:
            read += int(group["entries-read"] or 0)
            pending += int(group["pending"])
    return read >= events and pending == 0


def table(results: list[Result]) -> str:
    rows = [
        "| masters | partitions | workers | events/s | Redis CPU µs/event per master "
        "| Redis CPU µs/event, all masters | worker CPU µs/event |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        per_master = " / ".join(f"{r.per_event_us(c):.1f}" for c in r.redis_cpu_s)
        rows.append(
            f"| {r.setup.masters} | {r.setup.partitions} | {r.setup.workers} | {r.rate:,.0f} "
            f"| {per_master} | {r.per_event_us(sum(r.redis_cpu_s)):.1f} "
            f"| {r.per_event_us(r.worker_cpu_s):.1f} |"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.cluster")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args, _ = parser.parse_known_args(argv)
    load_avg = os.getloadavg()[0]
    results = []
    for setup in SETUPS:
        result = run(setup, args.events, args.users)
        print(table([result]).splitlines()[-1], flush=True)
        results.append(result)
    text = "\n".join(
        [
            SECTION,
            "",
            f"`just bench cluster`: {args.events:,} websocket events over {args.users:,} users "
            "(no socket open), XADDed to their partitions by a pipelined producer while W "
            "workers on `redis+cluster://` deliver them; measured from the first XADD to the "
            "last ack. Redis CPU is each master's `INFO cpu` delta over the events (ingress "
            "XADD included); worker CPU the worker processes' own.",
            "",
            table(results),
            "",
            f"Machine: {machine()}; 1-minute load average before: {load_avg:.1f} (shared: "
            "compare CPU per event, not events/s).",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)


if __name__ == "__main__":
    main(sys.argv[1:])
