"""`streamer worker`."""

from __future__ import annotations

import argparse
from typing import Any

from streamer.infra import runtime
from streamer.infra.settings import Env
from streamer.push.factory import build_push_senders
from streamer.push.settings import PushSettings
from streamer.worker.main import run_worker
from streamer.worker.settings import WorkerSettings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "worker", help="read the ingress stream in the consumer group and deliver events"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    env = Env()
    settings = WorkerSettings.from_env(env)

    push_concurrency = PushSettings.from_env(env).concurrency

    async def main() -> None:
        # Push clients must be created inside the running loop.
        await run_worker(settings, build_push_senders(env), push_concurrency)

    return runtime.run(main(), settings.log)
