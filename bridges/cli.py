"""`streamer bridge rabbitmq` and `streamer bridge pubsub`."""

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

    return run_rabbitmq(RabbitSettings.from_env(Env()))


def handle_pubsub(args: argparse.Namespace) -> int:
    from bridges.process import run_pubsub
    from bridges.settings import PubSubSettings

    return run_pubsub(PubSubSettings.from_env(Env()))
