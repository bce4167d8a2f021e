"""The `streamer` command line. It only parses arguments and calls each process's entry point."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

from streamer.infra.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]

# Each module exposes register(subparsers) and sets a `handler` default on its parser(s).
COMMAND_MODULES = (
    "streamer.worker.cli",
    "streamer.ops.publish",
    "streamer.ops.status",
    "streamer.ops.up",
    "bridges.cli",
    "streamer.ops.replay.cli",
    "streamer.ops.dlq",
    "streamer.gateway.cli",
    "streamer.ops.healthcheck",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamer {version('streamer')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"streamer: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
