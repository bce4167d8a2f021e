"""Settings of the bridge processes, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from bridges.core import Backoff
from streamer.infra.errors import ConfigError
from streamer.infra.settings import (
    PUBSUB_BRIDGE_METRICS_PORT,
    RABBITMQ_BRIDGE_METRICS_PORT,
    Env,
    LogSettings,
    MetricsSettings,
    RedisSettings,
)


@dataclass(frozen=True, slots=True)
class BridgeCommon:
    """What both bridges share: where to write, how to validate, how to back off, metrics."""

    redis: RedisSettings
    log: LogSettings
    max_payload_bytes: int
    backoff_base_ms: int
    backoff_max_ms: int
    metrics: MetricsSettings

    @classmethod
    def from_env(cls, env: Env, default_metrics_port: int) -> BridgeCommon:
        base_ms = env.int("BRIDGE_BACKOFF_BASE_MS", 200, minimum=1)
        return cls(
            redis=RedisSettings.from_env(env),
            log=LogSettings.from_env(env),
            max_payload_bytes=env.int("MAX_PAYLOAD_BYTES", 65536, minimum=64),
            backoff_base_ms=base_ms,
            backoff_max_ms=env.int("BRIDGE_BACKOFF_MAX_MS", 10000, minimum=base_ms),
            metrics=MetricsSettings.from_env(env, default_metrics_port),
        )

    def backoff(self) -> Backoff:
        """A fresh capped, jittered backoff for one reconnect or write-retry sequence."""
        return Backoff(self.backoff_base_ms, self.backoff_max_ms)


@dataclass(frozen=True, slots=True)
class RabbitSettings:
    """`streamer bridge rabbitmq`."""

    common: BridgeCommon
    url: str
    queues: tuple[str, ...]
    prefetch: int
    declare_queues: bool
    dedupe_ttl_s: int
    shutdown_grace_s: float

    @property
    def batch_max(self) -> int:
        """Deliveries written (and acked) together at most: half the prefetch window."""
        return (self.prefetch + 1) // 2

    @classmethod
    def from_env(cls, env: Env | None = None) -> RabbitSettings:
        env = env or Env()
        url = env.text("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
        if not url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"RABBITMQ_URL: expected an amqp:// or amqps:// URL, got {url!r}")
        first = env.text("RABBITMQ_QUEUE_NAME_AI_UPDATES", "ai_updates_notifications")
        return cls(
            common=BridgeCommon.from_env(env, RABBITMQ_BRIDGE_METRICS_PORT),
            url=url,
            queues=tuple(dict.fromkeys((first, *env.list("RABBITMQ_QUEUES")))),
            # Batches take up to half of it: bigger batches cost less CPU per message (one
            # script call per stream and batch), and the broker keeps sending the next
            # batch while one is written. 2,000 small events are a few MB in the bridge.
            prefetch=env.int("RABBITMQ_PREFETCH", 2000, minimum=1, maximum=65535),
            declare_queues=env.bool("RABBITMQ_DECLARE_QUEUES", True),
            # A recorded digest must outlive the redelivery of a message written but not
            # acked: on a lost connection at once, for a stuck consumer after RabbitMQ's
            # consumer timeout (30 min by default), after a crash when a bridge is back. One
            # hour covers the timeout plus a restart; a bridge down for longer may double up
            # to one batch per crash. Each digest costs ~85 bytes of Redis.
            dedupe_ttl_s=env.int("BRIDGE_DEDUPE_TTL_S", 3600, minimum=60),
            shutdown_grace_s=env.float("BRIDGE_SHUTDOWN_GRACE_S", 10.0),
        )


@dataclass(frozen=True, slots=True)
class PubSubSettings:
    """`streamer bridge pubsub`. ``source_url`` is where to subscribe (default REDIS_URL)."""

    common: BridgeCommon
    source_url: str
    channels: tuple[str, ...]
    patterns: tuple[str, ...]
    sharded: bool
    batch_max: int
    shutdown_grace_s: float
    ping_interval_s: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> PubSubSettings:
        env = env or Env()
        common = BridgeCommon.from_env(env, PUBSUB_BRIDGE_METRICS_PORT)
        first = env.text("REDIS_PUBSUB_CHANNEL_NAME", "general_notifications")
        patterns = env.list("REDIS_PUBSUB_PATTERNS")
        # Sharded Pub/Sub (SSUBSCRIBE, Redis 7): a channel lives on the shard owning its slot;
        # there is no pattern form of it.
        sharded = env.bool("REDIS_PUBSUB_SHARDED", False)
        if sharded and patterns:
            raise ConfigError(
                "REDIS_PUBSUB_PATTERNS: sharded Pub/Sub (REDIS_PUBSUB_SHARDED=true) has no "
                "pattern subscriptions; list the channels in REDIS_PUBSUB_CHANNELS"
            )
        return cls(
            common=common,
            source_url=env.redis_url("REDIS_PUBSUB_URL", common.redis.url),
            channels=tuple(dict.fromkeys((first, *env.list("REDIS_PUBSUB_CHANNELS")))),
            patterns=patterns,
            sharded=sharded,
            batch_max=env.int("BRIDGE_BATCH_MAX", 500, minimum=1, maximum=10000),
            shutdown_grace_s=env.float("BRIDGE_SHUTDOWN_GRACE_S", 10.0),
            ping_interval_s=env.float("REDIS_PUBSUB_PING_INTERVAL_S", 10.0, minimum=0.05),
        )
