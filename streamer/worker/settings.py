"""Settings of the worker process."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.infra.errors import ConfigError
from streamer.infra.settings import (
    WORKER_METRICS_PORT,
    Env,
    LogSettings,
    MetricsSettings,
    RedisSettings,
    default_process_id,
)


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """How the worker reads, reclaims and retries stream entries."""

    worker_id: str
    read_count: int
    block_ms: int
    claim_idle_ms: int
    max_deliveries: int
    retry_base_ms: int


@dataclass(frozen=True, slots=True)
class OwnershipSettings:
    """How workers share the partitions: one owner each, by lease, rebalanced on changes."""

    heartbeat_ms: int  # heartbeat, lease renewal and rebalancing period
    dead_after_ms: int  # a worker without heartbeat this long leaves the assignment
    lease_ttl_ms: int  # a lease not renewed this long frees its partition


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How events are written to replay logs and gateway inboxes."""

    max_payload_bytes: int
    user_history_size: int
    user_history_ttl_s: int
    topic_history_size: int
    topic_history_ttl_s: int
    dedupe_ttl_s: int
    inbox_max_len: int
    gateway_dead_after_ms: int
    broadcasts_per_s: float  # rate limit of broadcast events, per worker


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    redis: RedisSettings
    log: LogSettings
    consumer: ConsumerSettings
    ownership: OwnershipSettings
    delivery: DeliverySettings
    metrics: MetricsSettings
    stats_interval_s: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> WorkerSettings:
        env = env or Env()
        history_ttl_s = env.int("USER_HISTORY_TTL_S", 86400, minimum=1)
        return cls(
            redis=RedisSettings.from_env(env),
            log=LogSettings.from_env(env),
            consumer=ConsumerSettings(
                worker_id=env.text("WORKER_ID", default_process_id()),
                read_count=env.int("READ_COUNT", 2000, minimum=1, maximum=10000),
                block_ms=env.int("BLOCK_MS", 2000, minimum=1, maximum=60000),
                claim_idle_ms=env.int("CLAIM_IDLE_MS", 30000, minimum=10),
                max_deliveries=env.int("MAX_DELIVERIES", 5, minimum=1),
                retry_base_ms=env.int("RETRY_BASE_MS", 1000, minimum=1),
            ),
            ownership=_ownership(env),
            delivery=DeliverySettings(
                max_payload_bytes=env.int("MAX_PAYLOAD_BYTES", 65536, minimum=64),
                user_history_size=env.int("USER_HISTORY_SIZE", 1000, minimum=1),
                user_history_ttl_s=history_ttl_s,
                topic_history_size=env.int("TOPIC_HISTORY_SIZE", 1000, minimum=1),
                topic_history_ttl_s=env.int("TOPIC_HISTORY_TTL_S", 86400, minimum=1),
                # Producer-id markers must outlive the history they protect.
                dedupe_ttl_s=env.int("DEDUPE_TTL_S", max(history_ttl_s, 86400), minimum=1),
                inbox_max_len=env.int("INBOX_MAX_LEN", 100000, minimum=100),
                gateway_dead_after_ms=env.int("GATEWAY_DEAD_AFTER_MS", 15000, minimum=100),
                broadcasts_per_s=env.float("BROADCASTS_PER_S", 10.0, minimum=0.001),
            ),
            metrics=MetricsSettings.from_env(env, WORKER_METRICS_PORT),
            stats_interval_s=env.float("STATS_INTERVAL_S", 10.0, minimum=0.1),
        )


def _ownership(env: Env) -> OwnershipSettings:
    heartbeat_ms = env.int("WORKER_HEARTBEAT_MS", 1000, minimum=10)
    dead_after_ms = env.int("WORKER_DEAD_AFTER_MS", 5000, minimum=30)
    lease_ttl_ms = env.int("WORKER_LEASE_TTL_MS", 5000, minimum=30)
    for name, value in (
        ("WORKER_DEAD_AFTER_MS", dead_after_ms),
        ("WORKER_LEASE_TTL_MS", lease_ttl_ms),
    ):
        if value < 3 * heartbeat_ms:
            # Two missed renewals must not cost a healthy worker its partitions.
            raise ConfigError(
                f"{name}: must be at least 3 x WORKER_HEARTBEAT_MS ({3 * heartbeat_ms}), "
                f"got {value}"
            )
    return OwnershipSettings(heartbeat_ms, dead_after_ms, lease_ttl_ms)
