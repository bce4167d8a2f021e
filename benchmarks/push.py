"""Push throughput of one worker process against the local fake APNs and FCM.

Each fake runs in its own process (TLS and HTTP/2; by default on the lean HTTP/2 server of
tests.fakes.lean_h2server, with ``--fake-server h2`` on the `h2` library as in the tests), so
it does not share the worker's interpreter; its CPU is read from /proc and reported on its
own. For each provider: N events targeting only that push channel are loaded into a private
redis-server, then one in-process worker (uvloop, the real senders with markers) drains
them; pushes/s is N over the drain time and CPU/push is this process's CPU over N. A second
row sends N pushes straight through the sender (no Redis, no worker; PUSH_CONCURRENCY
pushes in flight) to show the provider client's own cost. Each row carries the 1-minute
load average just before it: the machine is shared, and CPU per push rises with load.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from benchmarks.common import cpu_seconds, machine, private_redis
from streamer.contract.event import Channel, NotificationPayload, push_content
from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.infra.runtime import tune_gc
from streamer.infra.settings import Env
from streamer.push.base import PushRequest, PushSender
from streamer.push.factory import build_push_senders
from streamer.push.settings import DEFAULT_CONCURRENCY
from streamer.worker.main import Worker
from streamer.worker.settings import WorkerSettings
from tests.fakes.certs import PushCredentials, make_credentials
from tests.fakes.harness import push_env

CHANNELS: dict[str, Channel] = {"apns": "push_ios", "fcm": "push_android"}


@dataclass(frozen=True)
class Result:
    provider: str
    mode: str
    pushes: int
    seconds: float
    cpu_seconds: float
    fake_cpu_seconds: float = 0.0
    load: float = 0.0  # 1-minute load average before the measurement

    def row(self) -> str:
        rate = self.pushes / self.seconds
        cpu_us = self.cpu_seconds / self.pushes * 1e6
        fake_us = self.fake_cpu_seconds / self.pushes * 1e6
        return (
            f"| {self.provider} | {self.mode} | {self.pushes:,} | {self.seconds:.2f} "
            f"| {rate:,.0f} | {cpu_us:,.0f} | {fake_us:,.0f} | {self.load:.1f} |"
        )


@contextmanager
def fake_process(kind: str, directory: Path, server: str = "lean") -> Iterator[tuple[int, int]]:
    """A fake provider in its own process; yields its port and pid."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", kind, str(directory), "--server", server],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline().split()[1]), process.pid
    finally:
        process.terminate()
        process.wait(10)


def event(channel: Channel, n: int) -> bytes:
    body = {
        "user_id": f"u{n % 1000}",  # as load() routes it
        "event_type": "ai_generation_done",
        "data": {"title": "Your image is ready", "body": "Tap to open", "job": f"job-{n}"},
        "target_channels": [channel],
        "device_token": f"ok-{uuid.uuid4().hex}{uuid.uuid4().hex}",
    }
    return json.dumps(body).encode()


async def load(redis: aioredis.Redis, keys: Keys, channel: Channel, count: int) -> None:
    """XADD the pushes to their users' partition streams, as producers do."""
    for start in range(0, count, 5000):
        pipe = redis.pipeline(transaction=False)
        for n in range(start, min(count, start + 5000)):
            pipe.xadd(keys.ingress(f"u{n % 1000}"), {"payload": event(channel, n)})
        await pipe.execute()


async def through_worker(provider: str, env: dict[str, str], count: int) -> Result:
    settings = WorkerSettings.from_env(Env(env))
    # The client the worker process uses (streamer worker): same connection class.
    redis = connect(
        env["REDIS_URL"],
        client_name="streamer-worker-bench",
        block_ms=settings.consumer.block_ms,
    )
    await redis.flushall()  # our private redis-server
    keys = Keys.from_settings(settings.redis)
    await load(redis, keys, CHANNELS[provider], count)
    senders = build_push_senders(Env(env))
    try:
        worker = Worker(redis, settings, senders)
        started, cpu = time.perf_counter(), time.process_time()
        await worker.drain()
        elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu
        dlq = sum([await redis.xlen(p.dlq) for p in keys.partitions])
        if dlq:
            raise RuntimeError(f"{dlq} entries were dead-lettered; the run is not valid")
    finally:
        for sender in senders.values():
            await sender.close()
        await redis.aclose()
    return Result(provider, "worker (XADD → ack)", count, elapsed, cpu_used)


async def sender_only(provider: str, env: dict[str, str], count: int, concurrency: int) -> Result:
    senders = build_push_senders(Env(env))
    channel = CHANNELS[provider]
    sender: PushSender = senders[channel]
    inner: PushSender = getattr(sender, "_inner", sender)  # without the Redis markers
    payload = NotificationPayload("u1", "ai_generation_done", data={"title": "Ready", "job": "j"})
    content = push_content(payload)
    # Made before timing: the loop below measures the sender, not the harness.
    requests = [
        PushRequest(
            channel, "u1", f"e{n}", "done", f"ok-{n:08d}{uuid.uuid4().hex}", content, payload.data
        )
        for n in range(-1, count)
    ]
    queue = iter(requests[1:])

    async def one(request: PushRequest) -> None:
        result = await inner.send(request)
        if result.reason:
            raise RuntimeError(f"push failed: {result}")

    async def client() -> None:  # one of `concurrency` pushes in flight at a time
        for request in queue:
            await one(request)

    try:
        await one(requests[0])  # connect and authenticate before timing
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    finally:
        for each in senders.values():
            await each.close()
    return Result(provider, "sender only", count, elapsed, cpu_used)


async def run(args: argparse.Namespace, redis_url: str, credentials: PushCredentials) -> None:
    directory = credentials.ca_file.parent
    results: list[Result] = []
    for provider in args.providers:
        with fake_process(provider, directory, args.fake_server) as (port, pid):
            endpoint = f"127.0.0.1:{port}"
            env = push_env(redis_url, credentials, PUSH_CONCURRENCY=str(args.concurrency))
            if provider == "apns":
                env.update(_apns_env(credentials, endpoint))
            else:
                account = credentials.service_account(directory, f"https://{endpoint}/token")
                env.update(_fcm_env(account, endpoint))
            for measure in (
                through_worker(provider, env, args.pushes),
                sender_only(provider, env, args.pushes, args.concurrency),
            ):
                load_average, fake_cpu = os.getloadavg()[0], cpu_seconds(pid)
                result = await measure
                fake_used = cpu_seconds(pid) - fake_cpu
                results.append(
                    dataclasses.replace(result, fake_cpu_seconds=fake_used, load=load_average)
                )
    report(args, results)


def _apns_env(credentials: PushCredentials, endpoint: str) -> dict[str, str]:
    return {
        "ENABLE_APNS_PUSH": "1",
        "APNS_ENDPOINT": endpoint,
        "APNS_CERT_FILE": str(credentials.apns_key_file),
        "APNS_KEY_ID": "KEYID12345",
        "APNS_TEAM_ID": "TEAM123456",
        "APNS_TOPIC": "com.creativeflow.app",
    }


def _fcm_env(account: Path, endpoint: str) -> dict[str, str]:
    return {
        "ENABLE_FCM_PUSH": "1",
        "FCM_ENDPOINT": f"https://{endpoint}",
        "FCM_SERVICE_ACCOUNT_FILE": str(account),
    }


def report(args: argparse.Namespace, results: list[Result]) -> None:
    print(
        f"`python -m benchmarks push` ({date.today()}, {machine()}; 1-minute load average "
        f"before the run: {args.load_average:.1f}; PUSH_CONCURRENCY={args.concurrency}; "
        f"fake server: {args.fake_server})\n"
    )
    print(
        "| provider | path | pushes | seconds | pushes/s | CPU µs/push | fake's CPU µs/push "
        "| load |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for result in results:
        print(result.row())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.push")
    parser.add_argument("--pushes", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--providers", nargs="+", choices=("apns", "fcm"), default=["apns", "fcm"])
    parser.add_argument("--fake-server", choices=("lean", "h2"), default="lean")
    args, _ = parser.parse_known_args(argv)
    args.load_average = os.getloadavg()[0]
    server = private_redis()
    try:
        credentials = make_credentials(Path(tempfile.mkdtemp(prefix="streamer-push-bench-")))
        tune_gc()  # as `streamer worker` does at start-up (streamer.infra.runtime.run)
        uvloop.run(run(args, server.url, credentials))
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
