"""APNs settings: the .p8 signing key, key and team ids, topic, endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.settings import Problems

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
FEATURE = "ENABLE_APNS_PUSH"


@dataclass(frozen=True, slots=True)
class ApnsSettings:
    key_pem: bytes  # the .p8 signing key, already checked to be an ES256 (P-256) key
    key_id: str
    team_id: str
    topic: str
    host: str
    port: int


def read_settings(env: Env, problems: Problems) -> ApnsSettings | None:
    key_file = problems.required(env, "APNS_CERT_FILE", FEATURE)
    key_id = problems.required(env, "APNS_KEY_ID", FEATURE)
    team_id = problems.required(env, "APNS_TEAM_ID", FEATURE)
    topic = problems.required(env, "APNS_TOPIC", FEATURE)
    sandbox = problems.capture(lambda: env.bool("APNS_USE_SANDBOX", False))
    default_host = SANDBOX_HOST if sandbox else PRODUCTION_HOST
    endpoint = problems.capture(lambda: host_port(env, "APNS_ENDPOINT", default_host, 443))
    key = None if key_file is None else problems.capture(lambda: p8_key(key_file))
    if key is None or key_id is None or team_id is None or topic is None or endpoint is None:
        return None
    return ApnsSettings(key, key_id, team_id, topic, *endpoint)


def p8_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            pem = f.read()
        key = load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"APNS_CERT_FILE: cannot read the .p8 key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"APNS_CERT_FILE: {path} is not an ES256 (P-256) .p8 signing key")
    return pem


def host_port(env: Env, name: str, default_host: str, default_port: int) -> tuple[str, int]:
    value = env.optional(name)
    if value is None:
        return default_host, default_port
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")  # IPv6 literals are written [::1]:443
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return host, int(port)
