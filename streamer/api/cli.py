"""`streamer api`: registration; the API (aiohttp) is imported when the command runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "api", help="serve the HTTP publish API (POST /api/publish, API keys)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from streamer.api.server import run_api
    from streamer.api.settings import ApiSettings
    from streamer.infra import metrics, runtime

    settings = ApiSettings.from_env()
    metrics.register("api")
    return runtime.run(run_api(settings), settings.log)
