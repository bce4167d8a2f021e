"""`streamer bridge pubsub`: Redis Pub/Sub channels and patterns -> the ingress stream.

Pub/Sub is fire and forget: Redis drops whatever is published while this bridge is not
subscribed (restart, outage, reconnect). Producers that need durability XADD to the stream
or use RabbitMQ. What the bridge has received it writes with retries: valid messages to the
stream, invalid ones to the DLQ with reason ``bridge_invalid``. Each message carries a
per-process sequence marker so that retrying a write that did happen adds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import redis
from redis.client import PubSub
from redis.exceptions import RedisError

from bridges.core import BRIDGE_INVALID, Backoff, PubSubMessage, StreamWrite, plan_pubsub
from bridges.idempotent import IdempotentWriter
from bridges.settings import PubSubSettings
from streamer import metrics
from streamer.errors import RetryableError
from streamer.http_server import HealthTracker
from streamer.keys import Keys

log = logging.getLogger(__name__)

BRIDGE = "pubsub"
_POLL_S = 0.5
# Pub/Sub has no redelivery: a marker only has to cover this process retrying a batch
# whose write failed part-way, normally seconds later. A retry more than this long after a
# partial write (a long Redis outage) may write that batch's written part twice.
MARKER_TTL_S = 60


class PubSubBridge:
    """``run()`` until ``stop()`` (thread-safe; also the SIGTERM handler's job)."""

    def __init__(self, settings: PubSubSettings, source: redis.Redis, sink: redis.Redis) -> None:
        self._settings = settings
        self._source = source
        self._keys = Keys.from_settings(settings.common.redis)
        self._writer = IdempotentWriter(sink, self._keys, MARKER_TTL_S)
        self._instance = uuid.uuid4().hex[:12]
        self._seq = 0
        self._stopping = threading.Event()
        self.health = HealthTracker(settings.common.health_threshold_s, time.monotonic)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        common = self._settings.common
        backoff = Backoff(common.backoff_base_ms, common.backoff_max_ms)
        while not self._stopping.is_set():
            pubsub = self._source.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                self._subscribe(pubsub)
                if backoff.attempts:
                    metrics.BRIDGE_RECONNECTS.labels(BRIDGE, "redis").inc()
                    log.info(
                        "resubscribed after %d attempt(s); messages published meanwhile "
                        "were dropped by Redis",
                        backoff.attempts,
                    )
                backoff.reset()
                self._listen(pubsub)
            except (RedisError, OSError, RetryableError) as exc:
                self.health.failed("redis")
                delay = backoff.next_s()
                log.warning("redis unavailable (%s); resubscribing in %.2fs", exc, delay)
                self._stopping.wait(delay)
            finally:
                pubsub.close()
        log.info("pubsub bridge stopped")

    def _subscribe(self, pubsub: PubSub) -> None:
        if self._settings.channels:
            pubsub.subscribe(*self._settings.channels)  # type: ignore[no-untyped-call]
        if self._settings.patterns:
            pubsub.psubscribe(*self._settings.patterns)  # type: ignore[no-untyped-call]
        self.health.ok("redis")
        log.info(
            "subscribed to channels %s, patterns %s",
            ", ".join(self._settings.channels),
            ", ".join(self._settings.patterns) or "-",
        )

    def _listen(self, pubsub: PubSub) -> None:
        while not self._stopping.is_set():
            first = _message(pubsub.get_message(timeout=_POLL_S))
            if first is None:
                continue
            batch = [first]
            while len(batch) < self._settings.batch_max:
                more = _message(pubsub.get_message(timeout=0))
                if more is None:
                    break
                batch.append(more)
            self._flush(batch)

    def _flush(self, batch: list[PubSubMessage]) -> None:
        started = time.perf_counter()
        writes = plan_pubsub(
            batch, self._keys, self._settings.common.max_payload_bytes, self._instance, self._seq
        )
        self._seq += len(batch)
        results = self._write_with_retries(writes, len(batch))
        for write, result in zip(writes, results, strict=True):
            if result is None:
                metrics.BRIDGE_DUPLICATES.labels(BRIDGE).inc()
            elif write.stream == self._keys.dlq:
                log.warning(
                    "invalid message on %s dead-lettered: %s",
                    write.fields["pubsub_channel"],
                    write.fields["error"],
                )
                metrics.BRIDGE_REJECTED.labels(BRIDGE, BRIDGE_INVALID).inc()
            else:
                metrics.BRIDGED.labels(BRIDGE).inc()
        metrics.BRIDGE_BATCH_DURATION.labels(BRIDGE).observe(time.perf_counter() - started)

    def _write_with_retries(self, writes: list[StreamWrite], count: int) -> list[str | None]:
        """Hold on to what was received until Redis takes it, or until stopped."""
        common = self._settings.common
        backoff = Backoff(common.backoff_base_ms, common.backoff_max_ms)
        while True:
            try:
                results = self._writer.write(writes)
            except RetryableError as exc:
                self.health.failed("redis")
                if self._stopping.is_set():
                    log.error("stopping with Redis unreachable: %d received messages lost", count)
                    raise
                delay = backoff.next_s()
                log.warning(
                    "redis unavailable (%s); holding %d messages, retrying in %.2fs",
                    exc,
                    count,
                    delay,
                )
                self._stopping.wait(delay)
                continue
            self.health.ok("redis")
            return results


def _message(raw: dict[str, Any] | None) -> PubSubMessage | None:
    if raw is None or raw.get("type") not in ("message", "pmessage"):
        return None
    channel = raw["channel"]
    data = raw["data"]
    return PubSubMessage(
        channel=channel.decode("utf-8", "replace") if isinstance(channel, bytes) else str(channel),
        data=data if isinstance(data, bytes) else str(data).encode(),
    )
