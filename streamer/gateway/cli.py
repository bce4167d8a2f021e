"""`streamer gateway` and `streamer token`."""

from __future__ import annotations

import argparse
from typing import Any

from streamer.gateway.auth import mint_token
from streamer.gateway.server import run_gateway
from streamer.gateway.settings import GatewaySettings
from streamer.infra import runtime
from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env


def register(sub: Any) -> None:
    gateway: argparse.ArgumentParser = sub.add_parser(
        "gateway", help="serve WebSocket clients: live delivery and resume"
    )
    gateway.set_defaults(handler=handle_gateway)
    token: argparse.ArgumentParser = sub.add_parser(
        "token", help="mint an HS256 token with JWT_SECRET (development and tests)"
    )
    token.add_argument("--user", required=True, help="the token's sub (user id)")
    token.add_argument("--ttl-s", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(handler=handle_token)


def handle_gateway(args: argparse.Namespace) -> int:
    settings = GatewaySettings.from_env(Env())
    return runtime.run(run_gateway(settings), settings.log)


def handle_token(args: argparse.Namespace) -> int:
    secret = Env().optional("JWT_SECRET")
    if secret is None:
        raise ConfigError("JWT_SECRET: required to mint a token")
    print(mint_token(secret, args.user, args.ttl_s))
    return 0
