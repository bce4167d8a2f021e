"""RabbitMQ bridge throughput: messages/s from a queue into the stream, one bridge process.

Publishes N persistent messages (default 100,000) with publisher confirms to a fresh queue
on RABBITMQ_URL, then starts one `streamer bridge rabbitmq` process against a private
redis-server and times it from its first XADD until every message is in the stream and
acked. Checks exactly-once, then writes the "## RabbitMQ bridge" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import redis

from benchmarks.common import cpu_seconds, machine, private_redis, write_section
from bridges.rabbitmq import dead_letter_queue, declare_queue
from tests.support.rabbit import (
    channel,
    delete_queues,
    event,
    publish_confirmed,
    ready_count,
    unique_queue,
)
from tests.support.servers import streamer_env, wait_for

STREAM = "notify:events"
SECTION = "## RabbitMQ bridge"
RESULTS = Path("BENCHMARKS.md")


def run(messages: int, prefetch: str) -> dict[str, float]:
    queue = unique_queue("bench_bridge")
    server = private_redis()
    client = redis.Redis.from_url(server.url)
    proc = None
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
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "bridge", "rabbitmq"], env=env)
        wait_for(lambda: client.xlen(STREAM) > 0, timeout=30, interval=0.001, what="first XADD")
        started, first, cpu0 = time.perf_counter(), client.xlen(STREAM), cpu_seconds(proc.pid)
        wait_for(lambda: client.xlen(STREAM) >= messages, timeout=600, what="all bridged")
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu0
        # Checked after timing: each check opens an AMQP connection, too costly to poll.
        wait_for(lambda: ready_count(queue) == 0, timeout=30, interval=0.2, what="all acked")
        proc.terminate()
        assert proc.wait(15) == 0, "bridge did not stop cleanly"
        assert client.xlen(STREAM) == messages, "duplicates in the stream"
        assert ready_count(queue) == 0, "messages left in the queue"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        client.close()
        server.stop()
        delete_queues(queue, dead_letter_queue(queue))
    timed = messages - first
    return {"publish_s": publish_s, "elapsed": elapsed, "timed": timed, "cpu": cpu}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.bridge")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--prefetch", default="200")
    args, _ = parser.parse_known_args(argv)
    r = run(args.messages, args.prefetch)
    rate = r["timed"] / r["elapsed"]
    line = (
        f"{args.messages:,} persistent messages, one bridge process, RABBITMQ_PREFETCH="
        f"{args.prefetch}: {rate:,.0f} messages/s ({r['timed']:,.0f} timed from the first "
        f"XADD in {r['elapsed']:.2f}s); bridge CPU {r['cpu']:.2f}s "
        f"({r['cpu'] / r['timed'] * 1e6:.0f} µs/message). Exactly once: stream length = "
        f"messages, queue empty. Publishing them with confirms took {r['publish_s']:.2f}s."
    )
    print(f"machine: {machine()}\nbridge: {line}")
    write_section(
        RESULTS,
        SECTION,
        f"{SECTION}\n\n`python -m benchmarks bridge` ({time.strftime('%Y-%m-%d')}, "
        f"{machine()}; RabbitMQ and Redis on the same host):\n\n- {line}\n",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
