"""Settings read from the environment, once, at start-up.

Each process kind has one frozen dataclass built by a ``from_env`` function; every
component receives only its slice. Invalid values raise ConfigError naming the variable.
The readers here are shared by the settings of every process kind.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from streamer.contract.partitions import MAX_PARTITIONS
from streamer.infra.errors import ConfigError
from streamer.infra.redis import check_url

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    """Typed reads of environment variables with errors that name the variable.

    Every reader treats a variable that is empty (or only blanks) exactly like one that is
    not set: ``FOO=`` in a compose file or ``.env`` means "use the default"."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def int(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = "" if maximum is None else f" and <= {maximum}"
            raise ConfigError(f"{name}: must be >= {minimum}{upper}, got {number}")
        return number

    def float(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name}: must be >= {minimum}, got {number}")
        return number

    def bool(self, name: str, default: bool) -> bool:
        """An empty value means unset (the default), as for every other reader."""
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}: expected true/false (1/0, yes/no, on/off), got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    def list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def redis_url(self, name: str = "REDIS_URL", default: str = "redis://127.0.0.1:6379/0") -> str:
        url = self.text(name, default)
        try:
            check_url(url)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}, got {url!r}") from None
        return url

    def existing_file(self, name: str) -> str | None:
        path = self.raw(name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{name}: file not found: {path}")
        return path


def default_process_id() -> str:
    """A stable, unique name for this process: host-pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is and which keys streamer uses there."""

    url: str
    key_prefix: str
    stream_key: str
    consumer_group: str
    partitions: int = 16

    @classmethod
    def from_env(cls, env: Env) -> RedisSettings:
        prefix = env.text("KEY_PREFIX", "notify:")
        if "{" in prefix or "}" in prefix:
            raise ConfigError(
                f"KEY_PREFIX: must not contain braces (cluster hash tags), got {prefix!r}"
            )
        return cls(
            url=env.redis_url(),
            key_prefix=prefix,
            stream_key=env.text("STREAM_KEY", f"{prefix}events"),
            consumer_group=env.text("CONSUMER_GROUP", "notify-workers"),
            partitions=env.int("INGRESS_PARTITIONS", 16, minimum=1, maximum=MAX_PARTITIONS),
        )


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str
    format: str

    @classmethod
    def from_env(cls, env: Env) -> LogSettings:
        return cls(
            level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            format=env.choice("LOG_FORMAT", "text", ("text", "json")),
        )


# Where the process kinds without a socket port serve /metrics and /healthz by default (the
# gateway serves them on its WebSocket port).
WORKER_METRICS_PORT = 9100
RABBITMQ_BRIDGE_METRICS_PORT = 9102
PUBSUB_BRIDGE_METRICS_PORT = 9103


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The /metrics and /healthz endpoint of a worker or bridge."""

    host: str
    port: int  # 0: no endpoint
    health_threshold_s: float  # /healthz fails once a dependency is down this long

    @classmethod
    def from_env(cls, env: Env, default_port: int) -> MetricsSettings:
        return cls(
            host=env.text("METRICS_HOST", "0.0.0.0"),
            port=env.int("METRICS_PORT", default_port, maximum=65535),
            health_threshold_s=env.float("HEALTH_THRESHOLD_S", 30.0, minimum=0.01),
        )
