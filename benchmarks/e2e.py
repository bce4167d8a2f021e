"""End-to-end benchmark: XADD -> worker -> user log + inbox -> gateway -> socket.

Starts a private redis-server, one `streamer worker` and one `streamer gateway` process, and a
separate load process holding N sockets (default 1,000, one user each). Then:

1. burst: XADD E events (default 100,000) round-robin over the users, to each user's ingress
   partition, as fast as one connection can write them; reports events/s from the first XADD
   to the last receipt, and XADD-to-receipt latency;
2. paced: XADD at fixed rates (default 5,000 and 1,000 events/s, 10 s each); reports the
   same latency.

CPU per event is measured the way an outside observer measures it: each server process's own
CPU time over the phase (worker and gateway from /proc, redis-server from its `INFO cpu`,
main thread and background threads together), divided by the events of the phase. The load
process and the publisher are not counted: they stand in for the clients and the producers.

Every event carries its XADD wall-clock time; all processes share the host clock. The load
process also checks that every event arrived exactly once. Results go to BENCHMARKS.md
("## End-to-end benchmark") unless --no-write.

    python -m benchmarks.e2e [--sockets N] [--events N] [--rates R1,R2] [--rate-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis
import uvloop

from benchmarks.common import (
    BENCHMARKS_MD,
    RawPublisher,
    Stack,
    bucket_quantile,
    cpu_seconds,
    histogram_buckets,
    machine,
    redis_cpu_seconds,
    write_section,
)
from benchmarks.wsclient import open_socket, raise_fd_limit
from streamer.contract.keys import Keys
from streamer.gateway.auth import mint_token
from streamer.infra.settings import Env, RedisSettings

SECTION = "## End-to-end benchmark"
CHUNK = 1000  # events per write in the burst; one timestamp per chunk


# --- orchestrator --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    events: int
    rate: int | None = None  # events/s; None: all at once
    first_xadd: float = 0.0
    last_xadd: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    # The gateway's own account: ingress entry time -> frame handed to the socket (its
    # histogram's bucket bounds, in seconds), to tell the server's latency from the client's.
    server_p50: float = float("nan")
    server_p99: float = float("nan")
    # The worker's: ingress entry time -> appended to the user's log (before the inbox write).
    worker_p50: float = float("nan")
    worker_p99: float = float("nan")


GATEWAY_LATENCY = "streamer_gateway_delivery_latency_seconds"
WORKER_LATENCY = "streamer_worker_delivery_latency_seconds"


def _user(n: int) -> str:
    return f"bench-{n}"


class Events:
    """Builds the XADD commands of one phase, each to its user's ingress partition."""

    def __init__(self, keys: Keys, users: int, index: int) -> None:
        self.streams = [keys.ingress(_user(n)) for n in range(users)]
        self.users = users
        self.index = index

    def commands(self, first: int, count: int) -> list[tuple[str, ...]]:
        now = time.time() * 1000
        out = []
        for seq in range(first, first + count):
            user = seq % self.users
            body = (
                f'{{"user_id":"{_user(user)}","event_type":"bench",'
                f'"data":{{"p":{self.index},"s":{seq},"t":{now:.3f}}}}}'
            )
            out.append(("XADD", self.streams[user], "*", "payload", body))
        return out


def _publish_burst(publisher: RawPublisher, phase: Phase, events: Events) -> None:
    phase.first_xadd = time.time()
    for first in range(0, phase.events, CHUNK):
        publisher.send(events.commands(first, min(CHUNK, phase.events - first)))
    publisher.wait_replies()
    phase.last_xadd = time.time()


def _publish_paced(publisher: RawPublisher, phase: Phase, events: Events, rate: int) -> None:
    """``rate`` events/s in ticks of 10 ms, each tick one write."""
    per_tick = max(1, rate // 100)
    started = time.perf_counter()
    phase.first_xadd = time.time()
    seq = tick = 0
    while seq < phase.events:
        delay = started + tick * 0.01 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        count = min(per_tick, phase.events - seq)
        publisher.send(events.commands(seq, count))
        seq += count
        tick += 1
    publisher.wait_replies()
    phase.last_xadd = time.time()


class Meter:
    """CPU seconds of the server processes, read before and after a phase."""

    def __init__(self, pids: dict[str, int], client: redis.Redis) -> None:
        self.pids = pids
        self.client = client

    def read(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["redis"] = redis_cpu_seconds(self.client)
        return now

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.e2e")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rates", default="5000,1000", help="paced phases, events/s")
    parser.add_argument("--rate-seconds", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--partitions", type=int, help="INGRESS_PARTITIONS (default: its own)")
    parser.add_argument(
        "--commandstats", action="store_true", help="print Redis's per-command CPU per phase"
    )
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--expected", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.load:
        load_main(args.port, args.sockets, [int(n) for n in args.expected.split(",")])
        return
    phases = [Phase(f"burst (XADD {args.events:,} at once)", args.events)]
    for rate in (int(r) for r in args.rates.split(",") if r.strip()):
        name = f"paced at {rate:,}/s for {args.rate_seconds} s"
        phases.append(Phase(name, rate * args.rate_seconds, rate))
    load_before = os.getloadavg()[0]
    results = run(args, phases)
    text = render(args, phases, results, load_before, os.getloadavg()[0])
    print(text, flush=True)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"(written to {BENCHMARKS_MD})")


def run(args: argparse.Namespace, phases: list[Phase]) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    complete = []
    settings = {} if args.partitions is None else {"INGRESS_PARTITIONS": str(args.partitions)}
    with Stack(secret, **settings) as stack:
        keys = Keys.from_settings(RedisSettings.from_env(Env(stack.env)))
        expected = ",".join(str(p.events) for p in phases)
        load = stack.load(
            ["benchmarks.e2e", "--sockets", str(args.sockets), "--expected", expected]
        )
        if load.expect("ready", 120) is None:
            raise RuntimeError("the load process did not connect its sockets")
        meter = Meter(stack.pids(), stack.client)
        publisher = RawPublisher(stack.redis_port)
        try:
            for index, phase in enumerate(phases):
                events = Events(keys, args.sockets, index)
                stack.client.config_resetstat()
                before = meter.read()
                latency_before = histogram_buckets(stack.port, GATEWAY_LATENCY)
                worker_before = histogram_buckets(stack.worker_metrics_port, WORKER_LATENCY)
                if phase.rate is None:
                    _publish_burst(publisher, phase, events)
                    complete.append(load.expect(f"done {index}", 300) is not None)
                else:
                    _publish_paced(publisher, phase, events, phase.rate)
                    complete.append(load.expect(f"done {index}", 120) is not None)
                phase.cpu_s = Meter.spent(before, meter.read())
                latency_after = histogram_buckets(stack.port, GATEWAY_LATENCY)
                phase.server_p50 = bucket_quantile(latency_before, latency_after, 0.50)
                phase.server_p99 = bucket_quantile(latency_before, latency_after, 0.99)
                worker_after = histogram_buckets(stack.worker_metrics_port, WORKER_LATENCY)
                phase.worker_p50 = bucket_quantile(worker_before, worker_after, 0.50)
                phase.worker_p99 = bucket_quantile(worker_before, worker_after, 0.99)
                if args.commandstats:
                    print_commandstats(stack.client, phase)
        finally:
            publisher.close()
        report = load.report()
    return {"load": report, "complete": complete}


def print_commandstats(client: redis.Redis, phase: Phase) -> None:
    """Redis's own account of where its time went in the phase, per command (µs/event)."""
    stats = client.info("commandstats")
    rows = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])
    print(f"-- Redis commandstats, {phase.name} (µs per event, calls per event)")
    for name, row in rows:
        per_event = row["usec"] / phase.events
        if per_event >= 0.05:
            print(f"   {name:<28} {per_event:6.2f} µs  {row['calls'] / phase.events:6.2f} calls")


def render(
    args: argparse.Namespace,
    phases: list[Phase],
    results: dict[str, Any],
    load_before: float,
    load_after: float,
) -> str:
    stats = results["load"]["phases"]
    burst = phases[0]
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks e2e` ({time.strftime('%Y-%m-%d')}, {machine()}; Redis, worker, "
        "gateway, load process and publisher all on this host, sharing its cores; "
        f"1-minute load average {load_before:.1f} before the run, {load_after:.1f} after).",
        "",
        f"One worker, one gateway, {args.sockets:,} sockets (one user each) in a separate load "
        "process. Latency is from XADD to receipt by the client; events/s is events received "
        "divided by the time from the first XADD to the last receipt. CPU is each server "
        "process's own CPU time over the phase (worker and gateway from /proc, Redis from "
        "`INFO cpu`) divided by the phase's events.",
        "",
        "| phase | events | lost | dup | events/s | p50 ms | p99 ms | max ms "
        "| worker p50 / p99 ms | gateway p50 / p99 ms "
        "| worker µs/ev | gateway µs/ev | Redis µs/ev | total µs/ev |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_row(phase, stat) for phase, stat in zip(phases, stats, strict=True)),
        "",
        f"The burst's XADDs took {burst.last_xadd - burst.first_xadd:.2f} s (one connection, "
        f"{CHUNK} per write). `lost` and `dup` count events not received / received twice over "
        "all sockets. The paced rows' CPU includes the processes' idle work over the phase "
        "(heartbeats, leases), as an outside observer would count it. `worker p50 / p99` and "
        "`gateway p50 / p99` are the processes' own histograms, as the upper bound of the "
        "bucket holding that quantile: the worker's from the ingress entry's time to the "
        "event appended to its user's log (`streamer_worker_delivery_latency_seconds`, before "
        "the inbox write), the gateway's to the frame handed to the socket "
        "(`streamer_gateway_delivery_latency_seconds`); the rest of the client's latency is "
        "the kernel's and the load process's.",
    ]
    if not all(results["complete"]):
        lines.append("")
        lines.append("**Incomplete:** not every event arrived before the phase deadline.")
    return "\n".join(lines) + "\n"


def _row(phase: Phase, stats: dict[str, Any]) -> str:
    lost = phase.events - stats["unique"]
    span = stats["last_receipt"] - phase.first_xadd
    rate = stats["unique"] / span if stats["unique"] and span > 0 else float("nan")
    per = {name: seconds / phase.events * 1e6 for name, seconds in phase.cpu_s.items()}
    total = sum(per.values())
    return (
        f"| {phase.name} | {phase.events:,} | {lost:,} | {stats['duplicates']:,} | "
        f"{rate:,.0f} | {stats['p50']:.1f} | {stats['p99']:.1f} | {stats['max']:.1f} | "
        f"≤ {phase.worker_p50 * 1000:g} / ≤ {phase.worker_p99 * 1000:g} | "
        f"≤ {phase.server_p50 * 1000:g} / ≤ {phase.server_p99 * 1000:g} | "
        f"{per['worker']:.1f} | {per['gateway']:.1f} | {per['redis']:.1f} | **{total:.1f}** |"
    )


# --- load process --------------------------------------------------------------------------


class _Data(msgspec.Struct):
    p: int
    s: int
    t: float


class _Message(msgspec.Struct):
    content: _Data | None = None


class Recorder:
    def __init__(self, expected: list[int]) -> None:
        self.expected = expected
        self.latencies: list[list[float]] = [[] for _ in expected]
        self.seen: list[set[int]] = [set() for _ in expected]
        self.duplicates = [0 for _ in expected]
        self.last_receipt = [0.0 for _ in expected]
        self._decode = msgspec.json.Decoder(_Message).decode

    def on_text(self, payload: bytes) -> None:
        data = self._decode(payload).content
        if data is None:
            return
        now = time.time()
        index = data.p
        if data.s in self.seen[index]:
            self.duplicates[index] += 1
            return
        self.seen[index].add(data.s)
        self.latencies[index].append(now * 1000 - data.t)
        self.last_receipt[index] = now
        if len(self.seen[index]) == self.expected[index]:
            print(f"done {index}", flush=True)

    def summary(self) -> dict[str, Any]:
        return {"phases": [self._phase(i) for i in range(len(self.expected))]}

    def _phase(self, i: int) -> dict[str, Any]:
        values = sorted(self.latencies[i])
        return {
            "received": len(values) + self.duplicates[i],
            "unique": len(self.seen[i]),
            "duplicates": self.duplicates[i],
            "p50": percentile(values, 0.50),
            "p99": percentile(values, 0.99),
            "max": values[-1] if values else float("nan"),
            "last_receipt": self.last_receipt[i],
        }


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load_main(port: int, sockets: int, expected: list[int]) -> None:
    raise_fd_limit()
    uvloop.run(_load(port, sockets, expected))


async def _load(port: int, sockets: int, expected: list[int]) -> None:
    secret = Env().optional("JWT_SECRET") or ""
    recorder = Recorder(expected)
    slots = asyncio.Semaphore(50)

    async def hold(n: int) -> None:
        user = _user(n)
        path = f"/ws/{user}?token={mint_token(secret, user, 3600)}"
        async with slots:
            await open_socket(port, path, recorder.on_text)

    await asyncio.gather(*(hold(n) for n in range(sockets)))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(recorder.summary()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
