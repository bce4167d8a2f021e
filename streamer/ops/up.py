"""`streamer up`: the whole stack in one command.

With REDIS_URL unset it starts an embedded real Redis (data in ``.streamer/redis``, or
``--data-dir`` / STREAMER_DATA_DIR), then the worker(s), the gateway and the enabled bridges
as child processes, bound to 127.0.0.1 unless GATEWAY_HOST / METRICS_HOST say otherwise.
It says "stack is up" only once every child answers its readiness probe; a child that
exits (at start or later) stops the stack, and `streamer up` exits 1 printing that child's
last lines. While it runs, ``<data dir>/stack.json`` tells other commands where its Redis
is (``streamer.ops.stack``). Ctrl-C (or SIGTERM) stops everything gracefully: exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from streamer.infra.errors import StartupError
from streamer.infra.logs import redact
from streamer.infra.settings import WORKER_METRICS_PORT, Env
from streamer.ops import stack
from streamer.ops.arguments import positive_int
from streamer.ops.children import Child, ProcessSpec, stop_all
from streamer.ops.embedded_redis import EmbeddedRedis

__all__ = ["ProcessSpec", "plan", "register"]

DEFAULT_GATEWAY_PORT = 8765
READY_TIMEOUT_S = 60.0
_POLL_S = 0.2
_LOCAL_HOST = "127.0.0.1"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "up", help="run the whole stack locally: embedded Redis, worker, gateway, demo page"
    )
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (1)")
    p.add_argument(
        "--data-dir",
        help="where the embedded Redis keeps its data and stack.json is written "
        "(default: STREAMER_DATA_DIR or .streamer)",
    )
    p.set_defaults(handler=handle)


def _probe_url(host: str, port: int) -> str:
    reachable = _LOCAL_HOST if host in ("", "0.0.0.0", "::") else host
    return f"http://{reachable}:{port}/readyz"


def plan(env: Env, base_env: dict[str, str], workers: int) -> list[ProcessSpec]:
    """The child processes to run, each with its own environment and readiness probe.
    METRICS_PORT=0 leaves workers and bridges without an endpoint (then "ready" = running)."""
    python = [sys.executable, "-m", "streamer"]
    metrics_host = base_env.get("METRICS_HOST") or _LOCAL_HOST
    metrics_base = env.int("METRICS_PORT", WORKER_METRICS_PORT, maximum=65000)

    def probed(name: str, argv: list[str], offset: int, **extra: str) -> ProcessSpec:
        port = metrics_base + offset if metrics_base else 0
        child_env = {**base_env, **extra, "METRICS_PORT": str(port)}
        url = _probe_url(metrics_host, port) if port else None
        return ProcessSpec(name, [*python, *argv], child_env, url)

    specs = [
        probed(f"worker-{n}", ["worker"], n, WORKER_ID=f"up-worker-{n}") for n in range(workers)
    ]
    gateway_port = int(base_env.get("GATEWAY_PORT") or DEFAULT_GATEWAY_PORT)
    gateway_url = _probe_url(base_env.get("GATEWAY_HOST", ""), gateway_port)
    specs.append(ProcessSpec("gateway", [*python, "gateway"], dict(base_env), gateway_url))
    bridges = (("rabbitmq", "ENABLE_RABBITMQ_CONSUMER"), ("pubsub", "ENABLE_REDIS_CONSUMER"))
    for k, (source, flag) in enumerate(bridges):
        if env.bool(flag, False):
            specs.append(probed(f"bridge-{source}", ["bridge", source], workers + 2 + k))
    return specs


def local_environment(environ: dict[str, str]) -> dict[str, str]:
    """The children's environment: loopback addresses and the demo page unless told
    otherwise (an empty value counts as unset)."""
    env = dict(environ)
    for name, value in (("GATEWAY_HOST", _LOCAL_HOST), ("METRICS_HOST", _LOCAL_HOST)):
        if not env.get(name, "").strip():
            env[name] = value
    # The local stack is where people try the demo page; DEMO_MODE=0 still turns it off.
    if not env.get("DEMO_MODE", "").strip():
        env["DEMO_MODE"] = "1"
    return env


class Stop:
    """Set by SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, *_: object) -> None:
        self.requested = True


def handle(args: argparse.Namespace) -> int:
    env = Env()
    base_env = local_environment(dict(os.environ))
    directory = stack.data_dir(os.environ, args.data_dir).resolve()
    stop = Stop()
    redis = _start_redis(env, directory)
    children: list[Child] = []
    try:
        base_env["REDIS_URL"] = redis.url if redis is not None else env.redis_url()
        from streamer.ops.local_gateway import prepare_local_gateway  # PyJWT: only here

        hint = prepare_local_gateway(base_env)
        specs = plan(env, base_env, args.workers)
        children = [Child(spec).start() for spec in specs]
        for child in children:
            print(f"started {child.name} (pid {child.pid})", flush=True)
        if not _wait_ready(children, stop):
            return 0
        gateway_port = int(base_env.get("GATEWAY_PORT") or DEFAULT_GATEWAY_PORT)
        gateway = f"ws://{_LOCAL_HOST}:{gateway_port}"
        stack.write(directory, stack.StackState(base_env["REDIS_URL"], gateway, os.getpid()))
        print(f"stack is up ({len(children)} processes ready)", flush=True)
        print(hint, flush=True)
        return _supervise(children, stop)
    finally:
        stop_all(children)
        stack.remove(directory, os.getpid())
        if redis is not None:
            redis.stop()


def _start_redis(env: Env, directory: Path) -> EmbeddedRedis | None:
    if env.optional("REDIS_URL") is not None:
        print(f"using REDIS_URL {redact(env.redis_url())}", flush=True)
        return None
    redis = EmbeddedRedis(
        directory / "redis", port=env.int("EMBEDDED_REDIS_PORT", 0, maximum=65535) or None
    )
    print(f"starting redis-server (data in {redis.data_dir})", flush=True)
    redis.start()
    print(f"embedded redis-server at {redis.url}", flush=True)
    return redis


def _wait_ready(children: list[Child], stop: Stop) -> bool:
    """True once every child is ready; False if asked to stop first. A child that exits,
    or is not ready within READY_TIMEOUT_S, raises StartupError with its last lines."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = list(children)
    while waiting:
        if stop.requested:
            return False
        _raise_if_exited(children)
        waiting = [child for child in waiting if not child.healthy()]
        if waiting and time.monotonic() > deadline:
            child = waiting[0]
            raise StartupError(
                f"{child.name} was not ready within {READY_TIMEOUT_S:.0f}s "
                f"({child.spec.health_url}); its last lines:\n{child.last_lines()}"
            )
        time.sleep(_POLL_S)
    return True


def _raise_if_exited(children: list[Child]) -> None:
    for child in children:
        code = child.exit_code()
        if code is not None:
            raise StartupError(
                f"{child.name} exited with {code}; stopping the stack. Its last lines:\n"
                f"{child.last_lines()}"
            )


def _supervise(children: list[Child], stop: Stop) -> int:
    """Run until asked to stop (0); a child exiting stops the stack (StartupError)."""
    while not stop.requested:
        _raise_if_exited(children)
        time.sleep(_POLL_S)
    print("stopping the stack", flush=True)
    return 0
