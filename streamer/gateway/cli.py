"""`streamer gateway` and `streamer token`: registration; the gateway (websockets, PyJWT)
is imported when a command runs."""

from __future__ import annotations

import argparse
from typing import Any

from streamer.ops.arguments import non_negative_int, user_id


def register(sub: Any) -> None:
    gateway: argparse.ArgumentParser = sub.add_parser(
        "gateway", help="serve WebSocket clients: live delivery and resume"
    )
    gateway.set_defaults(handler=handle_gateway)
    token: argparse.ArgumentParser = sub.add_parser(
        "token", help="mint an HS256 token with JWT_SECRET (development and tests)"
    )
    token.add_argument("--user", required=True, type=user_id, help="the token's sub (user id)")
    token.add_argument(
        "--ttl-s", type=non_negative_int, default=3600, help="lifetime in seconds (default 3600)"
    )
    token.set_defaults(handler=handle_token)


def handle_gateway(args: argparse.Namespace) -> int:
    from streamer.gateway.server import run_gateway
    from streamer.gateway.settings import GatewaySettings
    from streamer.infra import metrics, runtime
    from streamer.infra.settings import Env

    settings = GatewaySettings.from_env(Env())
    metrics.register("gateway")
    return runtime.run(run_gateway(settings), settings.log)


def handle_token(args: argparse.Namespace) -> int:
    from streamer.gateway.auth import mint_token
    from streamer.infra.errors import ConfigError
    from streamer.infra.settings import Env

    secret = Env().optional("JWT_SECRET")
    if secret is None:
        raise ConfigError("JWT_SECRET: required to mint a token")
    print(mint_token(secret, args.user, args.ttl_s))
    return 0
