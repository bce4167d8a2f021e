"""RabbitMQ bridge throughput: messages/s from a queue into the stream, one bridge process.

Publishes N persistent messages (default 100,000, 1,000 users) with publisher confirms to a
fresh queue on RABBITMQ_URL, then starts one `streamer bridge rabbitmq` process against a
private redis-server and times it from its first XADD until every message is in the
ingress streams. CPU per message is read from /proc for the bridge and for redis-server over
that window (wall time on a shared machine is noisy; CPU time is the steadier figure), next
to the 1-minute load average. Checks exactly-once (every message once, queue empty), then
writes its line into the "## RabbitMQ bridge" section of BENCHMARKS.md (only between the
latest-run markers, so the history kept there stays) unless ``--no-write``.

``--broker-pid PID`` also reports the broker's CPU per message over the same window (the
broker may be shared: whatever else it serves meanwhile is counted too).

``--profile FILE`` samples the bridge with py-spy (``--nonblocking``, collapsed stacks) for
the whole run, for a flame graph of where the bridge's CPU goes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.common import cpu_seconds, machine, private_redis, write_section
from bridges.rabbitmq import dead_letter_queue, declare_queue
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from tests.support.polling import wait_for
from tests.support.rabbit import (
    channel,
    delete_queues,
    event,
    ingress_length,
    publish_confirmed,
    ready_count,
    unique_queue,
)
from tests.support.servers import streamer_env

SECTION = "## RabbitMQ bridge"
LATEST = ("<!-- bridge benchmark: latest run -->", "<!-- /bridge benchmark: latest run -->")
RESULTS = Path("BENCHMARKS.md")
KEYS = Keys.from_settings(RedisSettings.from_env(Env({})))


@dataclass(frozen=True, slots=True)
class Result:
    messages: int
    timed: int  # messages written after the timer started (from the first XADD seen)
    elapsed_s: float
    bridge_cpu_s: float
    redis_cpu_s: float
    publish_s: float
    load_before: float
    load_after: float
    broker_cpu_s: float | None = None

    @property
    def rate(self) -> float:
        return self.timed / self.elapsed_s

    def per_message_us(self, cpu_s: float) -> float:
        return cpu_s / self.timed * 1e6


def run(messages: int, prefetch: str, profile: Path | None, broker: int | None) -> Result:
    queue = unique_queue("bench_bridge")
    server = private_redis()
    assert server.process is not None
    client = redis.Redis.from_url(server.url)
    proc = spy = None
    try:
        with channel() as ch:
            declare_queue(ch, queue)
        bodies = [event(n, f"u{n % 1000}") for n in range(messages)]
        started = time.perf_counter()
        publish_confirmed(queue, bodies, window=2000, timeout_s=600)
        publish_s = time.perf_counter() - started
        env = streamer_env(
            server.url, RABBITMQ_QUEUE_NAME_AI_UPDATES=queue, RABBITMQ_QUEUES="",
            RABBITMQ_PREFETCH=prefetch, LOG_LEVEL="warning",
        )  # fmt: skip
        load_before = os.getloadavg()[0]
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "bridge", "rabbitmq"], env=env)
        if profile is not None:
            spy = start_profiler(proc.pid, profile)
        wait_for(
            lambda: ingress_length(client, KEYS) > 0, timeout=30, interval=0.001, what="first XADD"
        )
        first = ingress_length(client, KEYS)
        cpu0, redis0 = cpu_seconds(proc.pid), cpu_seconds(server.process.pid)
        broker0 = cpu_seconds(broker) if broker else 0.0
        started = time.perf_counter()
        wait_for(lambda: ingress_length(client, KEYS) >= messages, timeout=600, what="all bridged")
        elapsed = time.perf_counter() - started
        cpu, redis_cpu = cpu_seconds(proc.pid) - cpu0, cpu_seconds(server.process.pid) - redis0
        broker_cpu = cpu_seconds(broker) - broker0 if broker else None
        load_after = os.getloadavg()[0]
        # Checked after timing: each check opens an AMQP connection, too costly to poll.
        wait_for(lambda: ready_count(queue) == 0, timeout=30, interval=0.2, what="all acked")
        proc.terminate()
        assert proc.wait(15) == 0, "bridge did not stop cleanly"
        assert ingress_length(client, KEYS) == messages, "duplicates in the stream"
        assert ready_count(queue) == 0, "messages left in the queue"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if spy is not None:
            spy.wait(30)
        client.close()
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
        delete_queues(queue, dead_letter_queue(queue))
    timed = messages - first
    return Result(
        messages, timed, elapsed, cpu, redis_cpu, publish_s, load_before, load_after, broker_cpu
    )


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    assert Path(binary).exists(), "--profile needs py-spy (pip install py-spy)"
    argv = [binary, "record", "--pid", str(pid), "--nonblocking", "--format", "raw"]
    return subprocess.Popen([*argv, "--rate", "250", "--output", str(output)])


def describe(r: Result, prefetch: str) -> str:
    cpu = [("bridge", r.bridge_cpu_s), ("redis-server", r.redis_cpu_s)]
    if r.broker_cpu_s is not None:
        cpu.append(("RabbitMQ (shared)", r.broker_cpu_s))
    per_message = ", ".join(f"{name} {r.per_message_us(s):.1f} µs" for name, s in cpu)
    return (
        f"{r.messages:,} persistent messages (1,000 users), one bridge process, "
        f"RABBITMQ_PREFETCH={prefetch}: **{r.rate:,.0f} messages/s** ({r.timed:,} timed from "
        f"the first XADD in {r.elapsed_s:.2f}s); CPU per message: {per_message}; 1-minute "
        f"load average {r.load_before:.1f} before, {r.load_after:.1f} after. Exactly once: "
        f"every message in the stream once, queue empty. Publishing them with confirms took "
        f"{r.publish_s:.2f}s."
    )


def record(path: Path, text: str) -> None:
    """Put ``text`` between the latest-run markers of the section (creating the section,
    or the markers at its top, if missing); the rest of the section is left as it is."""
    start, end = LATEST
    block = f"{start}\n{text}\n{end}"
    current = path.read_text() if path.exists() else ""
    if SECTION not in current:
        write_section(path, SECTION, f"{SECTION}\n\n{block}\n")
    elif start in current and end in current:
        head, rest = current.split(start, 1)
        path.write_text(head + block + rest.split(end, 1)[1])
    else:
        path.write_text(current.replace(SECTION, f"{SECTION}\n\n{block}", 1))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.bridge")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--prefetch", default="2000")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the bridge")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    parser.add_argument("--broker-pid", type=int, help="also report this process's CPU")
    args, _ = parser.parse_known_args(argv)
    result = run(args.messages, args.prefetch, args.profile, args.broker_pid)
    line = describe(result, args.prefetch)
    print(f"machine: {machine()}\nbridge: {line}")
    if not args.no_write:
        when = f"{time.strftime('%Y-%m-%d')}, {machine()}; RabbitMQ and Redis on the same host"
        record(RESULTS, f"Latest `python -m benchmarks bridge` ({when}):\n\n- {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
