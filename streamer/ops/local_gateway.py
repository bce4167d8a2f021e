"""Local development helpers for `streamer up`: a JWT secret and how to connect."""

from __future__ import annotations

import secrets

from streamer.gateway.auth import mint_token
from streamer.gateway.settings import DEFAULT_PORT
from streamer.infra.settings import Env

DEV_USER = "demo"
DEV_TOKEN_TTL_S = 3600  # short-lived: mint more with `streamer token`


def prepare_local_gateway(env: dict[str, str]) -> str:
    """Give the gateway a random JWT_SECRET when no key is configured (local runs only) and
    return instructions for connecting as the demo user."""
    if not env.get("JWT_SECRET") and not env.get("JWT_PUBLIC_KEY_FILE"):
        env["JWT_SECRET"] = secrets.token_urlsafe(32)
    port = env.get("GATEWAY_PORT") or str(DEFAULT_PORT)
    secret = env.get("JWT_SECRET")
    if not secret:
        return f"gateway on ws://127.0.0.1:{port}/ws/<user>?token=<JWT signed by your key>"
    token = mint_token(secret, DEV_USER, DEV_TOKEN_TTL_S)
    lines = [f"gateway: ws://127.0.0.1:{port}/ws/{DEV_USER}?token={token}"]
    if Env(env).bool("DEMO_MODE", False):
        lines.append(f"demo page: http://127.0.0.1:{port}/demo?user={DEV_USER}&token={token}")
    lines.append(f"more tokens: JWT_SECRET={secret} streamer token --user <user>")
    lines.append(
        "publish an event (another terminal, this directory): "
        f"just publish --user {DEV_USER} --type hello --data '{{\"n\": 1}}'"
    )
    return "\n".join(lines)
