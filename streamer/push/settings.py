"""Settings of push delivery (APNs, FCM), read once at start-up.

A provider turned on without its credentials fails here with a ConfigError naming the
missing variable, so a worker never starts half-configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env

APNS_PRODUCTION_HOST = "api.push.apple.com"
APNS_SANDBOX_HOST = "api.sandbox.push.apple.com"
FCM_DEFAULT_ENDPOINT = "https://fcm.googleapis.com"

LEGACY_FCM_KEY_MESSAGE = (
    "FCM_API_KEY: the legacy FCM server key no longer works (Google shut the legacy API "
    "down); configure a service account instead: FCM_SERVICE_ACCOUNT_FILE and FCM_PROJECT_ID"
)


@dataclass(frozen=True, slots=True)
class ApnsSettings:
    key_pem: bytes  # the .p8 signing key, already checked to be an ES256 (P-256) key
    key_id: str
    team_id: str
    topic: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class FcmSettings:
    service_account: dict[str, str]  # the parsed service-account JSON (token_uri, key, email)
    project_id: str
    endpoint: str  # base URL, no trailing slash


@dataclass(frozen=True, slots=True)
class PushSettings:
    apns: ApnsSettings | None
    fcm: FcmSettings | None
    ca_file: str | None
    concurrency: int  # in-flight requests per provider
    timeout_s: float  # per provider request
    marker_ttl_s: int  # lifetime of the "already accepted" markers

    @classmethod
    def from_env(cls, env: Env) -> PushSettings:
        _require_all(env)
        return cls(
            apns=_apns(env) if env.bool("ENABLE_APNS_PUSH", False) else None,
            fcm=_fcm(env) if env.bool("ENABLE_FCM_PUSH", False) else None,
            ca_file=env.existing_file("PUSH_CA_FILE"),
            concurrency=env.int("PUSH_CONCURRENCY", 64, minimum=1, maximum=10000),
            timeout_s=env.float("PUSH_TIMEOUT_S", 10.0, minimum=0.1),
            marker_ttl_s=env.int("PUSH_MARKER_TTL_S", 3600, minimum=1),
        )


_REQUIRED = {
    "ENABLE_APNS_PUSH": ("APNS_CERT_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC"),
    "ENABLE_FCM_PUSH": ("FCM_SERVICE_ACCOUNT_FILE",),
}


def _require_all(env: Env) -> None:
    """Name every missing variable of every enabled provider in one error, so that one
    restart finds them all. (The legacy FCM_API_KEY alone gets its own message below.)"""
    parts = []
    for flag, names in _REQUIRED.items():
        if not env.bool(flag, False):
            continue
        missing = [n for n in names if env.optional(n) is None]
        if flag == "ENABLE_FCM_PUSH" and env.optional("FCM_API_KEY") is not None:
            missing = []
        if missing:
            parts.append(f"{', '.join(missing)}: required when {flag} is on")
    if parts:
        raise ConfigError("; ".join(parts))


def _required(env: Env, name: str, feature: str) -> str:
    value = env.optional(name)
    if value is None:
        raise ConfigError(f"{name}: required when {feature} is on")
    return value


def _apns(env: Env) -> ApnsSettings:
    feature = "ENABLE_APNS_PUSH"
    key_file = _required(env, "APNS_CERT_FILE", feature)
    key_id = _required(env, "APNS_KEY_ID", feature)
    team_id = _required(env, "APNS_TEAM_ID", feature)
    topic = _required(env, "APNS_TOPIC", feature)
    sandbox = env.bool("APNS_USE_SANDBOX", False)
    default_host = APNS_SANDBOX_HOST if sandbox else APNS_PRODUCTION_HOST
    host, port = _host_port(env, "APNS_ENDPOINT", default_host, 443)
    return ApnsSettings(_p8_key(key_file), key_id, team_id, topic, host, port)


def _p8_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            pem = f.read()
        key = load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"APNS_CERT_FILE: cannot read the .p8 key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"APNS_CERT_FILE: {path} is not an ES256 (P-256) .p8 signing key")
    return pem


def _host_port(env: Env, name: str, default_host: str, default_port: int) -> tuple[str, int]:
    value = env.optional(name)
    if value is None:
        return default_host, default_port
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")  # IPv6 literals are written [::1]:443
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return host, int(port)


def _fcm(env: Env) -> FcmSettings:
    path = env.optional("FCM_SERVICE_ACCOUNT_FILE")
    if path is None and env.optional("FCM_API_KEY") is not None:
        raise ConfigError(LEGACY_FCM_KEY_MESSAGE)
    if path is None:
        raise ConfigError("FCM_SERVICE_ACCOUNT_FILE: required when ENABLE_FCM_PUSH is on")
    account = _service_account(path)
    project_id = env.optional("FCM_PROJECT_ID") or account.get("project_id")
    if not project_id:
        raise ConfigError(
            "FCM_PROJECT_ID: required when ENABLE_FCM_PUSH is on "
            "(and the service account file names no project_id)"
        )
    endpoint = env.text("FCM_ENDPOINT", FCM_DEFAULT_ENDPOINT).rstrip("/")
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(f"FCM_ENDPOINT: expected an https:// base URL, got {endpoint!r}")
    return FcmSettings(account, project_id, endpoint)


def _service_account(path: str) -> dict[str, str]:
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
