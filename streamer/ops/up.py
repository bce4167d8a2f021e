"""`streamer up`: the whole stack in one command.

With REDIS_URL unset it starts an embedded real Redis (data in .streamer/redis), then runs
the worker(s) and, as they exist, the gateway and the enabled bridges as child processes.
Ctrl-C (or SIGTERM) stops them all gracefully.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.infra.settings import WORKER_METRICS_PORT, Env
from streamer.ops.embedded_redis import EmbeddedRedis
from streamer.ops.local_gateway import prepare_local_gateway


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("up", help="run the whole stack locally")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-dir", default=".streamer", help="where the embedded Redis keeps data")
    p.set_defaults(handler=handle)


def plan(env: Env, base_env: dict[str, str], workers: int) -> list[ProcessSpec]:
    """The child processes to run, each with its own environment."""
    python = [sys.executable, "-m", "streamer"]
    specs = []
    metrics_base = env.int(
        "METRICS_PORT", WORKER_METRICS_PORT, maximum=65000
    )  # 0 keeps metrics off
    for n in range(workers):
        metrics_port = str(metrics_base + n if metrics_base else 0)
        worker_env = {**base_env, "WORKER_ID": f"up-worker-{n}", "METRICS_PORT": metrics_port}
        specs.append(ProcessSpec(f"worker-{n}", [*python, "worker"], worker_env))
    specs.append(ProcessSpec("gateway", [*python, "gateway"], dict(base_env)))
    bridges = (("rabbitmq", "ENABLE_RABBITMQ_CONSUMER"), ("pubsub", "ENABLE_REDIS_CONSUMER"))
    for k, (source, flag) in enumerate(bridges):
        if env.bool(flag, False):
            port = str(metrics_base + workers + 2 + k if metrics_base else 0)
            bridge_env = {**base_env, "METRICS_PORT": port}
            specs.append(ProcessSpec(f"bridge-{source}", [*python, "bridge", source], bridge_env))
    return specs


def handle(args: argparse.Namespace) -> int:
    env = Env()
    base_env = dict(os.environ)
    redis = None
    if env.optional("REDIS_URL") is None:
        redis = EmbeddedRedis(
            Path(args.data_dir) / "redis", port=env.int("EMBEDDED_REDIS_PORT", 0) or None
        )
        redis.start()
        base_env["REDIS_URL"] = redis.url
        print(f"embedded redis-server at {redis.url} (data in {redis.data_dir})", flush=True)
    # The local stack is where people try the demo page; DEMO_MODE=0 still turns it off.
    base_env.setdefault("DEMO_MODE", "1")
    gateway_hint = prepare_local_gateway(base_env)
    children: list[tuple[ProcessSpec, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for spec in plan(env, base_env, args.workers):
            children.append((spec, subprocess.Popen(spec.argv, env=spec.env)))
            print(f"started {spec.name} (pid {children[-1][1].pid})", flush=True)
        print("stack is up; publish with: streamer publish --user demo --type hello", flush=True)
        print(gateway_hint, flush=True)
        while not stopping:
            for spec, proc in children:
                if proc.poll() is not None:
                    print(f"{spec.name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    finally:
        for _, proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis is not None:
            redis.stop()
    return 0
