"""`streamer bridge rabbitmq` and `streamer bridge pubsub`: registration only.

The ``bridges`` package is imported when a bridge command runs, never to build the parser,
so ``streamer --help`` (and every other command) does not load pika or the bridges.
"""

from __future__ import annotations

import argparse
from typing import Any

from streamer.infra.settings import Env


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bridge", help="move events from RabbitMQ or Redis Pub/Sub into the ingress stream"
    )
    kinds = parser.add_subparsers(dest="bridge", required=True, metavar="SOURCE")
    kinds.add_parser(
        "rabbitmq", help="consume RabbitMQ queues (idempotent, ack after XADD)"
    ).set_defaults(handler=handle_rabbitmq)
    kinds.add_parser(
        "pubsub", help="subscribe Redis Pub/Sub channels (drops what is sent while down)"
    ).set_defaults(handler=handle_pubsub)


def handle_rabbitmq(args: argparse.Namespace) -> int:
    from bridges.process import run_rabbitmq
    from bridges.settings import RabbitSettings
    from streamer.infra import metrics

    settings = RabbitSettings.from_env(Env())
    metrics.register("bridge-rabbitmq")
    return run_rabbitmq(settings)


def handle_pubsub(args: argparse.Namespace) -> int:
    from bridges.process import run_pubsub
    from bridges.settings import PubSubSettings
    from streamer.infra import metrics

    settings = PubSubSettings.from_env(Env())
    metrics.register("bridge-pubsub")
    return run_pubsub(settings)
