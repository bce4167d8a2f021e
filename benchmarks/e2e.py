"""End-to-end benchmark: XADD -> worker -> user log + inbox -> gateway -> socket.

Starts a private redis-server, one `streamer worker` and one `streamer gateway` process, and a
separate load process holding N sockets (default 1,000, one user each). Then:

1. burst: XADD E events (default 100,000) round-robin over the users as fast as possible;
   reports events/s from the first XADD to the last receipt, and XADD-to-receipt latency;
2. paced: XADD at fixed rates (default 5,000 and 1,000 events/s, 10 s each); reports the
   same latency.

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
import queue
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import redis
import uvloop
from websockets.asyncio.client import connect

from benchmarks.common import cpu_seconds, machine, private_redis, write_section
from streamer.gateway.auth import mint_token
from streamer.infra.settings import Env
from tests.support.servers import free_port, streamer_env, wait_for

STREAM = "notify:events"
SECTION = "## End-to-end benchmark"
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
PIPELINE = 1000


# --- orchestrator --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    events: int
    rate: int | None = None  # events/s; None: all at once
    first_xadd: float = 0.0
    last_xadd: float = 0.0


def _user(n: int) -> str:
    return f"bench-{n}"


def _publish_burst(client: redis.Redis, phase: Phase, index: int, users: int) -> None:
    pipe = client.pipeline(transaction=False)
    phase.first_xadd = time.time()
    for seq in range(phase.events):
        _queue_event(pipe, index, seq, users)
        if len(pipe) >= PIPELINE:
            pipe.execute()
    pipe.execute()
    phase.last_xadd = time.time()


def _publish_paced(client: redis.Redis, phase: Phase, index: int, users: int, rate: int) -> None:
    """``rate`` events/s in ticks of 10 ms, each tick one pipelined round trip."""
    per_tick = max(1, rate // 100)
    started = time.perf_counter()
    phase.first_xadd = time.time()
    seq = tick = 0
    while seq < phase.events:
        delay = started + tick * 0.01 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pipe = client.pipeline(transaction=False)
        for _ in range(min(per_tick, phase.events - seq)):
            _queue_event(pipe, index, seq, users)
            seq += 1
        pipe.execute()
        tick += 1
    phase.last_xadd = time.time()


def _queue_event(pipe: Any, index: int, seq: int, users: int) -> None:
    body = {
        "user_id": _user(seq % users),
        "event_type": "bench",
        "data": {"p": index, "s": seq, "t": time.time() * 1000},
    }
    pipe.xadd(STREAM, {"payload": json.dumps(body)})


class LoadProcess:
    """The socket holder, driven over its stdin/stdout (one line per message)."""

    def __init__(self, port: int, secret: str, sockets: int, phases: list[Phase]) -> None:
        expected = ",".join(str(p.events) for p in phases)
        argv = [sys.executable, "-m", "benchmarks.e2e", "--load", "--port", str(port)]
        argv += ["--sockets", str(sockets), "--expected", expected]
        self.proc = subprocess.Popen(
            argv,
            env=streamer_env("redis://unused", JWT_SECRET=secret),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def expect(self, prefix: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        return None

    def report(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        line = self.expect("{", 60)
        if line is None:
            raise RuntimeError("the load process did not report")
        result: dict[str, Any] = json.loads(line)
        return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.e2e")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rates", default="5000,1000", help="paced phases, events/s")
    parser.add_argument("--rate-seconds", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
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
    text = render(args, phases, results, load_before)
    print(text, flush=True)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"(written to {BENCHMARKS_MD})")


def run(args: argparse.Namespace, phases: list[Phase]) -> dict[str, Any]:
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    secret = secrets.token_urlsafe(32)
    port = free_port()
    env = streamer_env(
        server.url,
        LOG_LEVEL="warning",
        JWT_SECRET=secret,
        WORKER_ID="bench",
        GATEWAY_ID="bench-gw",
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
    )
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "streamer", name], env=env)
        for name in ("worker", "gateway")
    }
    load: LoadProcess | None = None
    complete = []
    try:
        wait_for(lambda: _healthy(port), timeout=30, what="gateway /healthz")
        load = LoadProcess(port, secret, args.sockets, phases)
        if load.expect("ready", 120) is None:
            raise RuntimeError("the load process did not connect its sockets")
        cpu = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        _publish_burst(client, phases[0], 0, args.sockets)
        complete.append(load.expect("done 0", 300) is not None)
        cpu = {name: cpu_seconds(p.pid) - cpu[name] for name, p in procs.items()}
        for index, phase in enumerate(phases[1:], 1):
            assert phase.rate is not None
            _publish_paced(client, phase, index, args.sockets, phase.rate)
            complete.append(load.expect(f"done {index}", 120) is not None)
        report = load.report()
    finally:
        children = [*procs.values(), *([load.proc] if load else [])]
        for proc in children:
            proc.terminate()
        for proc in children:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        client.close()
        server.stop()
    return {"load": report, "complete": complete, "burst_cpu_s": cpu}


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def render(
    args: argparse.Namespace, phases: list[Phase], results: dict[str, Any], load_avg: float
) -> str:
    stats = results["load"]["phases"]
    burst = phases[0]
    cpu = results["burst_cpu_s"]
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks e2e` ({time.strftime('%Y-%m-%d')}, {machine()}; Redis, worker, "
        "gateway, load process and publisher all on this host, sharing its cores; "
        f"1-minute load average before the run: {load_avg:.1f}).",
        "",
        f"One worker, one gateway, {args.sockets:,} sockets (one user each) in a separate load "
        "process. Latency is from XADD to receipt by the client; events/s is events received "
        "divided by the time from the first XADD to the last receipt.",
        "",
        "| phase | events | received | lost | duplicates | events/s | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_row(phase, stat) for phase, stat in zip(phases, stats, strict=True)),
        "",
        f"Burst XADD took {burst.last_xadd - burst.first_xadd:.2f} s. CPU during the burst: "
        f"worker {cpu['worker']:.1f} s, gateway {cpu['gateway']:.1f} s "
        f"({cpu['gateway'] / max(1, burst.events) * 1e6:.0f} µs/event).",
        "",
        "Reading it: in the burst the whole backlog sits in the stream within seconds, so its "
        "latency is queueing behind the end-to-end rate (bounded by one worker's CPU here). "
        "The paced rows show latency below saturation. `lost` and `duplicates` count events "
        "not received / received twice over all sockets (the gateway's exactly-once check).",
    ]
    if not all(results["complete"]):
        lines.append("")
        lines.append("**Incomplete:** not every event arrived before the phase deadline.")
    return "\n".join(lines) + "\n"


def _row(phase: Phase, stats: dict[str, Any]) -> str:
    lost = phase.events - stats["unique"]
    span = stats["last_receipt"] - phase.first_xadd
    rate = stats["unique"] / span if stats["unique"] and span > 0 else float("nan")
    return (
        f"| {phase.name} | {phase.events:,} | {stats['received']:,} | {lost:,} | "
        f"{stats['duplicates']:,} | {rate:,.0f} | {stats['p50']:.1f} | {stats['p99']:.1f} | "
        f"{stats['max']:.1f} |"
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

    def record(self, data: _Data, now: float) -> None:
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

        def pct(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

        return {
            "received": len(values) + self.duplicates[i],
            "unique": len(self.seen[i]),
            "duplicates": self.duplicates[i],
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": values[-1] if values else float("nan"),
            "last_receipt": self.last_receipt[i],
        }


def load_main(port: int, sockets: int, expected: list[int]) -> None:
    uvloop.run(_load(port, sockets, expected))


async def _load(port: int, sockets: int, expected: list[int]) -> None:
    secret = Env().optional("JWT_SECRET") or ""
    recorder = Recorder(expected)
    decoder = msgspec.json.Decoder(_Message)
    slots = asyncio.Semaphore(50)
    ready = asyncio.Barrier(sockets + 1)

    async def hold(n: int) -> None:
        user = _user(n)
        url = f"ws://127.0.0.1:{port}/ws/{user}?token={mint_token(secret, user, 3600)}"
        async with slots:
            conn = await connect(url, open_timeout=60, max_queue=None)
        await ready.wait()
        async for message in conn:
            data = decoder.decode(message).content
            if data is not None:
                recorder.record(data, time.time())

    tasks = [asyncio.create_task(hold(n)) for n in range(sockets)]
    await ready.wait()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(recorder.summary()), flush=True)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    main(sys.argv[1:])
