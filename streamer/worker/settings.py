"""Settings of the worker process."""

from __future__ import annotations

from dataclasses import dataclass

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
class DeliverySettings:
    """How events are written to user logs and gateway inboxes."""

    max_payload_bytes: int
    user_history_size: int
    user_history_ttl_s: int
    dedupe_ttl_s: int
    inbox_max_len: int
    gateway_dead_after_ms: int


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    redis: RedisSettings
    log: LogSettings
    consumer: ConsumerSettings
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
                read_count=env.int("READ_COUNT", 200, minimum=1, maximum=10000),
                block_ms=env.int("BLOCK_MS", 2000, minimum=1, maximum=60000),
                claim_idle_ms=env.int("CLAIM_IDLE_MS", 30000, minimum=10),
                max_deliveries=env.int("MAX_DELIVERIES", 5, minimum=1),
                retry_base_ms=env.int("RETRY_BASE_MS", 1000, minimum=1),
            ),
            delivery=DeliverySettings(
                max_payload_bytes=env.int("MAX_PAYLOAD_BYTES", 65536, minimum=64),
                user_history_size=env.int("USER_HISTORY_SIZE", 1000, minimum=1),
                user_history_ttl_s=history_ttl_s,
                # Dedupe markers must outlive the history they protect.
                dedupe_ttl_s=env.int("DEDUPE_TTL_S", max(history_ttl_s, 86400), minimum=1),
                inbox_max_len=env.int("INBOX_MAX_LEN", 100000, minimum=100),
                gateway_dead_after_ms=env.int("GATEWAY_DEAD_AFTER_MS", 15000, minimum=100),
            ),
            metrics=MetricsSettings.from_env(env, WORKER_METRICS_PORT),
            stats_interval_s=env.float("STATS_INTERVAL_S", 10.0, minimum=0.1),
        )
