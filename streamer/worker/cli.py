"""`streamer worker`: registration; the worker is imported when the command runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "worker", help="read the ingress stream in the consumer group and deliver events"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from streamer.infra import metrics, runtime
    from streamer.infra.settings import Env
    from streamer.push.factory import build_push_senders
    from streamer.push.settings import PushSettings
    from streamer.worker.main import run_worker
    from streamer.worker.settings import WorkerSettings

    env = Env()
    settings = WorkerSettings.from_env(env)
    metrics.register("worker")

    push_concurrency = PushSettings.from_env(env).concurrency

    async def main() -> None:
        # Push clients must be created inside the running loop.
        await run_worker(settings, build_push_senders(env), push_concurrency)

    return runtime.run(main(), settings.log)
