"""Settings of push delivery, read once at start-up: what every provider shares, and the
settings of each enabled provider (read by its package, listed in the registry).

Every problem is collected before anything fails: a worker with APNs and FCM enabled and
five variables missing stops once, with one ConfigError naming all five, not one per restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.provider import load
from streamer.push.registry import PROVIDERS

T = TypeVar("T")

# Requests in flight per provider. HTTP/2 streams, not connections: one connection carries
# them (Apple allows 1,000 streams per connection; where a provider allows fewer, the pool
# opens another). More in flight means fewer pushes parked waiting for a slot, which the
# benchmark measured as less CPU per push (BENCHMARKS.md, "Push").
DEFAULT_CONCURRENCY = 256


class Problems:
    """Missing and invalid push settings, gathered for one message."""

    def __init__(self) -> None:
        self._missing: dict[str, list[str]] = {}  # enabling variable -> missing variables
        self._invalid: list[str] = []

    def required(self, env: Env, name: str, feature: str) -> str | None:
        value = env.optional(name)
        if value is None:
            self.missing(name, feature)
        return value

    def missing(self, name: str, feature: str) -> None:
        self._missing.setdefault(feature, []).append(name)

    def invalid(self, message: str) -> None:
        self._invalid.append(message)

    def capture(self, read: Callable[[], T]) -> T | None:
        """``read()``, or None with its ConfigError noted."""
        try:
            return read()
        except ConfigError as exc:
            self.invalid(str(exc))
            return None

    def __bool__(self) -> bool:
        return bool(self._missing or self._invalid)

    def message(self) -> str:
        missing = [
            f"{', '.join(names)} (required when {feature} is on)"
            for feature, names in self._missing.items()
        ]
        parts = [f"missing {'; '.join(missing)}"] if missing else []
        return "; ".join(parts + self._invalid)


@dataclass(frozen=True, slots=True)
class PushSettings:
    ca_file: str | None  # an extra CA to trust (tests, TLS-intercepting proxies)
    concurrency: int  # requests in flight per provider
    timeout_s: float  # bounds a whole push: marker check, request(s), marker write
    marker_ttl_s: int  # lifetime of the "already accepted" markers
    # The enabled providers' own settings, by registry name; absent = disabled.
    providers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Env) -> PushSettings:
        """Raises one ConfigError naming every missing or invalid variable."""
        problems = Problems()
        ca_file = problems.capture(lambda: env.existing_file("PUSH_CA_FILE"))
        concurrency = problems.capture(
            lambda: env.int("PUSH_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1, maximum=10000)
        )
        timeout_s = problems.capture(lambda: env.float("PUSH_TIMEOUT_S", 10.0, minimum=0.1))
        marker_ttl_s = problems.capture(lambda: env.int("PUSH_MARKER_TTL_S", 3600, minimum=1))
        providers = {
            entry.name: load(entry).read_settings(env, problems)
            for entry in PROVIDERS
            if _enabled(env, entry.enable_variable, problems)
        }
        if problems:
            raise ConfigError(problems.message())
        assert concurrency is not None and timeout_s is not None and marker_ttl_s is not None
        return cls(ca_file, concurrency, timeout_s, marker_ttl_s, providers)


def _enabled(env: Env, variable: str, problems: Problems) -> bool:
    return bool(problems.capture(lambda: env.bool(variable, False)))
