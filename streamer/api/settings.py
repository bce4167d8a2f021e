"""Settings of the HTTP publish API (`streamer api`), read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env, LogSettings
from streamer.producer import ProducerSettings

DEFAULT_PORT = 8780
DEFAULT_HOST = "127.0.0.1"  # like every local process: exposing it is a deliberate choice
# An API key shorter than this is refused at start-up: it could be guessed.
MIN_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class ApiSettings:
    producer: ProducerSettings  # Redis, MAX_PAYLOAD_BYTES, PUBLISH_DEDUPE_TTL_S
    log: LogSettings
    host: str
    port: int
    api_keys: tuple[bytes, ...]
    max_body_bytes: int
    max_batch: int
    health_threshold_s: float
    retry_after_s: int = 1  # what a 503 (Redis unreachable) asks clients to wait

    @classmethod
    def from_env(cls, env: Env | None = None) -> ApiSettings:
        env = env or Env()
        host, port = address(env)
        dedupe_ttl_s = env.int("PUBLISH_DEDUPE_TTL_S", 86400, minimum=0)
        return cls(
            producer=ProducerSettings.from_env(env, dedupe_ttl_s=dedupe_ttl_s),
            log=LogSettings.from_env(env),
            host=host,
            port=port,
            api_keys=api_keys(env),
            max_body_bytes=env.int("API_MAX_BODY_BYTES", 1 << 20, minimum=1024),
            max_batch=env.int("API_MAX_BATCH", 500, minimum=1, maximum=10000),
            health_threshold_s=env.float("HEALTH_THRESHOLD_S", 30.0, minimum=0.01),
        )


def address(env: Env) -> tuple[str, int]:
    """Where the API listens (also what `streamer healthcheck` probes)."""
    return env.text("API_HOST", DEFAULT_HOST), env.int("API_PORT", DEFAULT_PORT, maximum=65535)


def api_keys(env: Env) -> tuple[bytes, ...]:
    """The keys of API_KEYS (comma-separated) and of API_KEYS_FILE (one a line; blank lines
    and lines starting with # skipped). At least one is required."""
    keys = list(env.list("API_KEYS"))
    path = env.existing_file("API_KEYS_FILE")
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            lines = (line.strip() for line in handle)
            keys += [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise ConfigError("API_KEYS: set it (comma-separated keys) or API_KEYS_FILE")
    short = [k for k in keys if len(k.encode()) < MIN_KEY_BYTES]
    if short:
        variable = "API_KEYS" if short[0] in env.list("API_KEYS") else "API_KEYS_FILE"
        raise ConfigError(f"{variable}: every key must be at least {MIN_KEY_BYTES} bytes")
    return tuple(dict.fromkeys(k.encode() for k in keys))
