"""Many sockets on one gateway: memory per idle socket, delivery while they are open, and the
fan-out of one topic event to thousands of them.

Starts a private redis-server, one `streamer worker` and one `streamer gateway`, and a load
process (its own event loop, the lean client of ``benchmarks.wsclient``) that opens N sockets
(default 15,000, one user each; the first F, default 10,000, subscribed to one topic on
connect). Then:

1. idle memory: the gateway's resident memory (VmRSS) before the sockets and once they are
   all open and subscribed, divided by N;
2. delivery while they are open: events paced at R/s (default 1,000) for S seconds to the
   first U users (default 1,000); XADD-to-receipt latency;
3. fan-out: K topic events (default 10), one per second; for each, the time from its XADD
   to its receipt by the last of the F subscribers.

Results go to BENCHMARKS.md ("## Sockets") unless --no-write.

    python -m benchmarks.sockets [--sockets N] [--fan F] [--rate R] [--seconds S] [--fans K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import msgspec
import uvloop

from benchmarks.common import (
    BENCHMARKS_MD,
    RawPublisher,
    Stack,
    cpu_seconds,
    machine,
    write_section,
)
from benchmarks.wsclient import open_socket, raise_fd_limit
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings

SECTION = "## Sockets"
TOPIC = "bench:fan"


def _user(n: int) -> str:
    return f"idle-{n}"


def _token(secret: str, user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + 3600, "topics": ["bench:*"]}
    return jwt.encode(claims, secret, "HS256")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# --- orchestrator --------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.sockets")
    parser.add_argument("--sockets", type=int, default=15_000)
    parser.add_argument("--fan", type=int, default=10_000, help="sockets on the topic")
    parser.add_argument("--rate", type=int, default=1000, help="paced events/s while open")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--users", type=int, default=1000, help="users the paced events go to")
    parser.add_argument("--fans", type=int, default=10, help="topic events, one per second")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    args.fan = min(args.fan, args.sockets)
    args.users = min(args.users, args.sockets)
    if args.load:
        load_main(args)
        return
    load_before = os.getloadavg()[0]
    results = run(args)
    text = render(args, results, load_before, os.getloadavg()[0])
    print(text, flush=True)
    if not args.no_write:
        write_section(BENCHMARKS_MD, SECTION, text)
        print(f"(written to {BENCHMARKS_MD})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    results: dict[str, Any] = {}
    with Stack(secret, WS_MAX_TOPICS_PER_SOCKET="4") as stack:
        keys = Keys.from_settings(RedisSettings.from_env(Env(stack.env)))
        gateway = stack.procs["gateway"].pid
        time.sleep(1.0)  # settled after start-up (imports, first heartbeats)
        results["rss_before"] = rss_bytes(gateway)
        load = stack.load(
            [
                "benchmarks.sockets",
                *("--sockets", str(args.sockets), "--fan", str(args.fan)),
                *("--users", str(args.users), "--rate", str(args.rate)),
                *("--seconds", str(args.seconds), "--fans", str(args.fans)),
            ]
        )
        opened = time.monotonic()
        if load.expect("ready", 600) is None:
            raise RuntimeError("the load process did not open its sockets")
        results["open_s"] = time.monotonic() - opened
        time.sleep(2.0)  # ownership writes and their pipelines done
        results["rss_open"] = rss_bytes(gateway)
        publisher = RawPublisher(stack.redis_port)
        try:
            cpu = cpu_seconds(gateway)
            results["paced"] = _paced(publisher, keys, args, load)
            results["paced_gateway_cpu_s"] = cpu_seconds(gateway) - cpu
            cpu = cpu_seconds(gateway)
            results["fan_xadd"] = _fan_out(publisher, keys, args, load)
            results["fan_gateway_cpu_s"] = cpu_seconds(gateway) - cpu
        finally:
            publisher.close()
        results["load"] = load.report()
        results["rss_end"] = rss_bytes(gateway)
    return results


def _paced(
    publisher: RawPublisher, keys: Keys, args: argparse.Namespace, load: Any
) -> dict[str, Any]:
    per_tick = max(1, args.rate // 100)
    total = args.rate * args.seconds
    streams = [keys.ingress(_user(n)) for n in range(args.users)]
    started = time.perf_counter()
    seq = tick = 0
    while seq < total:
        delay = started + tick * 0.01 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.time() * 1000
        commands = []
        for s in range(seq, min(total, seq + per_tick)):
            user = s % args.users
            body = (
                f'{{"user_id":"{_user(user)}","event_type":"bench",'
                f'"data":{{"s":{s},"t":{now:.3f}}}}}'
            )
            commands.append(("XADD", streams[user], "*", "payload", body))
        publisher.send(commands)
        seq += len(commands)
        tick += 1
    publisher.wait_replies()
    done = load.expect("paced done", 120) is not None
    return {"events": total, "complete": done}


def _fan_out(
    publisher: RawPublisher, keys: Keys, args: argparse.Namespace, load: Any
) -> list[float]:
    stream = keys.of_topic(TOPIC).stream
    sent = []
    for k in range(args.fans):
        now = time.time()
        body = f'{{"topic":"{TOPIC}","event_type":"fan","data":{{"f":{k},"t":{now * 1000:.3f}}}}}'
        publisher.send([("XADD", stream, "*", "payload", body)])
        sent.append(now)
        if load.expect(f"fan {k} done", 30) is None:
            break
        time.sleep(max(0.0, now + 1.0 - time.time()))
    publisher.wait_replies()
    return sent


def render(
    args: argparse.Namespace, results: dict[str, Any], load_before: float, load_after: float
) -> str:
    report = results["load"]
    per_socket = (results["rss_open"] - results["rss_before"]) / args.sockets
    paced = report["paced"]
    fans = report["fans"]
    spans = sorted(f["last_ms"] for f in fans if f["received"] == args.fan)
    incomplete = sum(1 for f in fans if f["received"] != args.fan)
    fan_cpu_us = results["fan_gateway_cpu_s"] / max(1, len(fans) * args.fan) * 1e6
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks sockets` ({time.strftime('%Y-%m-%d')}, {machine()}; one "
        "worker, one gateway, Redis and the load process on this host; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after).",
        "",
        f"- **Idle sockets:** {args.sockets:,} sockets (one user each, {args.fan:,} of them "
        f"subscribed to one topic) opened in {results['open_s']:.1f} s; the gateway's "
        f"resident memory went from {results['rss_before'] / 2**20:.1f} MiB to "
        f"{results['rss_open'] / 2**20:.1f} MiB: **{per_socket / 1024:.1f} KB per socket** "
        "(user-space memory; the kernel's socket buffers are not in it).",
        f"- **Delivering while they are open:** {paced['events']:,} events at "
        f"{args.rate:,}/s over {args.users:,} users: p50 {paced['p50']:.1f} ms, "
        f"**p99 {paced['p99']:.1f} ms**, max {paced['max']:.1f} ms; "
        f"{paced['unique']:,} received, {paced['duplicates']} duplicates; gateway CPU "
        f"{results['paced_gateway_cpu_s'] / max(1, paced['events']) * 1e6:.0f} µs per event "
        "(idle sockets' pings included).",
        f"- **Fan-out:** {len(fans)} topic events, each to {args.fan:,} subscribed sockets; "
        "from XADD to the last socket: "
        + (
            f"median **{spans[len(spans) // 2]:.0f} ms**, best {spans[0]:.0f} ms, worst "
            f"{spans[-1]:.0f} ms"
            if spans
            else "none complete"
        )
        + f"; gateway CPU {fan_cpu_us:.1f} µs per socket reached"
        + (f"; **{incomplete} incomplete**" if incomplete else "")
        + ".",
        f"- The gateway's memory after the run: {results['rss_end'] / 2**20:.1f} MiB.",
    ]
    return "\n".join(lines) + "\n"


# --- load process --------------------------------------------------------------------------


class _Data(msgspec.Struct):
    t: float
    s: int = -1
    f: int = -1


class _Message(msgspec.Struct):
    type: str | None = None
    content: _Data | None = None


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.paced_total = args.rate * args.seconds
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.duplicates = 0
        self.fans: list[dict[str, float]] = [
            {"received": 0, "last_ms": 0.0} for _ in range(args.fans)
        ]
        self.subscribed = 0
        self.all_subscribed = asyncio.get_running_loop().create_future()
        self._decode = msgspec.json.Decoder(_Message).decode

    def on_text(self, payload: bytes) -> None:
        message = self._decode(payload)
        data = message.content
        if data is None:
            if message.type == "subscribed":
                self.subscribed += 1
                if self.subscribed == self.args.fan and not self.all_subscribed.done():
                    self.all_subscribed.set_result(None)
            return
        now_ms = time.time() * 1000
        if data.f >= 0:
            fan = self.fans[data.f]
            fan["received"] += 1
            fan["last_ms"] = now_ms - data.t
            if fan["received"] == self.args.fan:
                print(f"fan {data.f} done", flush=True)
        elif data.s in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(data.s)
            self.latencies.append(now_ms - data.t)
            if len(self.seen) == self.paced_total:
                print("paced done", flush=True)

    def report(self) -> dict[str, Any]:
        values = sorted(self.latencies)

        def pct(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

        paced = {
            "events": self.paced_total,
            "unique": len(self.seen),
            "duplicates": self.duplicates,
            "p50": pct(0.5),
            "p99": pct(0.99),
            "max": values[-1] if values else float("nan"),
        }
        return {"paced": paced, "fans": self.fans}


def load_main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    uvloop.run(_load(args))


async def _load(args: argparse.Namespace) -> None:
    secret = Env().optional("JWT_SECRET") or ""
    load = Load(args)
    slots = asyncio.Semaphore(256)
    sockets = []

    async def hold(n: int) -> None:
        user = _user(n)
        topics = f"&topics={TOPIC}" if n < args.fan else ""
        path = f"/ws/{user}?token={_token(secret, user)}{topics}"
        async with slots:
            sockets.append(await open_socket(args.port, path, load.on_text))

    await asyncio.gather(*(hold(n) for n in range(args.sockets)))
    if args.fan:
        await asyncio.wait_for(load.all_subscribed, 120)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(load.report()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
