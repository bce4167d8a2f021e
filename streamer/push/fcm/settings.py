"""FCM HTTP v1 settings: the service account, the project, the endpoint."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.settings import Problems

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
FEATURE = "ENABLE_FCM_PUSH"
LEGACY_KEY_MESSAGE = (
    "FCM_API_KEY: the legacy FCM server key no longer works (Google shut the legacy API "
    "down); configure a service account instead: FCM_SERVICE_ACCOUNT_FILE and FCM_PROJECT_ID"
)


@dataclass(frozen=True, slots=True)
class FcmSettings:
    service_account: dict[str, str]  # the parsed service-account JSON (token_uri, key, email)
    project_id: str
    host: str
    port: int
    path_prefix: str  # of FCM_ENDPOINT, usually "" (a proxy may serve FCM under a path)


def read_settings(env: Env, problems: Problems) -> FcmSettings | None:
    path = env.optional("FCM_SERVICE_ACCOUNT_FILE")
    if path is None and env.optional("FCM_API_KEY") is not None:
        problems.invalid(LEGACY_KEY_MESSAGE)
        return None
    if path is None:
        problems.missing("FCM_SERVICE_ACCOUNT_FILE", FEATURE)
    account = None if path is None else problems.capture(lambda: service_account(path))
    endpoint = problems.capture(lambda: parse_endpoint(env.text("FCM_ENDPOINT", DEFAULT_ENDPOINT)))
    project_id = env.optional("FCM_PROJECT_ID") or (account or {}).get("project_id")
    if account is not None and not project_id:
        problems.invalid(
            "FCM_PROJECT_ID: required when ENABLE_FCM_PUSH is on "
            "(and the service account file names no project_id)"
        )
    if account is None or endpoint is None or not project_id:
        return None
    return FcmSettings(account, project_id, *endpoint)


def parse_endpoint(url: str) -> tuple[str, int, str]:
    """host, port and path prefix of an https:// base URL."""
    parts = urllib.parse.urlsplit(url.rstrip("/"))
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"FCM_ENDPOINT: expected an https:// base URL, got {url!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise ConfigError(f"FCM_ENDPOINT: bad port in {url!r}") from None
    return parts.hostname, port, parts.path


def service_account(path: str) -> dict[str, str]:
    name = "FCM_SERVICE_ACCOUNT_FILE"
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot read {path} as JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{name}: {path} is not a service-account JSON object")
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise ConfigError(f"{name}: {path} lacks {', '.join(missing)} (not a service account key?)")
    return {k: v for k, v in info.items() if isinstance(v, str)}
