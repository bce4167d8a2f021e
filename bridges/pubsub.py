"""`streamer bridge pubsub`: Redis Pub/Sub channels and patterns -> the ingress stream.

Pub/Sub is fire and forget: Redis drops whatever is published while this bridge is not
subscribed (restart, outage, reconnect). Producers that need durability XADD to the stream
or use RabbitMQ. What the bridge has received it writes with retries: valid messages to the
stream, invalid ones to the DLQ with reason ``bridge_invalid``. Each batch carries a
per-process progress record so that retrying a write that did happen adds nothing.

A message on a channel that is subscribed and also matches a pattern (or matches several
patterns) arrives once per subscription; ``Subscriptions`` keeps one copy. On stop the
bridge unsubscribes and keeps reading until Redis confirms, so what Redis had already sent
(in the socket or redis-py's buffer) is written, not dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis
import redis.cluster
from redis.client import PubSub

from bridges.core import (
    BRIDGE_INVALID,
    PubSubMessage,
    Subscriptions,
    dead_letter_stream,
    plan_pubsub,
)
from bridges.holding import sleep_until_stopped, write_until_taken
from bridges.idempotent import Batch, IdempotentWriter
from bridges.settings import PubSubSettings
from streamer.contract.keys import Keys
from streamer.infra import metrics
from streamer.infra.errors import RetryableError
from streamer.infra.http import HealthTracker
from streamer.infra.redis import REDIS_ERRORS, is_cluster

log = logging.getLogger(__name__)

_TRANSIENT: tuple[type[BaseException], ...] = (*REDIS_ERRORS, RetryableError)

BRIDGE = "pubsub"
_POLL_S = 0.5
# Pub/Sub has no redelivery and records no digests: the progress records only cover this
# process retrying a batch whose reply it did not get. They are a few keys per process, so
# they can outlive any outage worth riding out.
MARKER_TTL_S = 3600
PING_MESSAGE = "streamer-bridge-ping"
# What a published message arrives as: on a channel, on a pattern, on a shard channel.
_MESSAGE_TYPES = ("message", "pmessage", "smessage")


class Liveness:
    """When to PING the subscribed connection, and when silence means the peer is gone.

    redis-py's ``health_check_interval`` only sends PINGs on a subscribed connection; it
    never notices that no PONG comes back, so a half-open connection (peer host gone, a
    proxy or NAT holding it) would look healthy forever while no message arrives."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._heard = clock()
        self._pinged: float | None = None

    def heard(self) -> None:
        self._heard = self._clock()
        self._pinged = None

    def ping_due(self) -> bool:
        return self._pinged is None and self._clock() - self._heard >= self._interval_s

    def pinged(self) -> None:
        self._pinged = self._clock()

    def dead(self) -> bool:
        return self._pinged is not None and self._clock() - self._pinged >= self._interval_s


class ShardedPubSub:
    """SSUBSCRIBE on a Redis Cluster, with the few methods of PubSub the bridge uses.

    A shard channel is served by the master of its slot only, so there is one subscribed
    connection per master that serves one of the channels (redis-py's own cluster PubSub
    reads sharded messages with another method, and its ``get_message`` fails). When a
    channel's slot moves, Redis ends that subscription (an ``sunsubscribe`` the bridge did
    not ask for): that raises ConnectionError, and the bridge subscribes again where the
    slot now lives, as after any lost connection."""

    def __init__(self, cluster: redis.cluster.RedisCluster) -> None:
        self._cluster = cluster
        self._by_node: dict[str, PubSub] = {}
        self._leaving = False
        self._turn = 0

    def ssubscribe(self, channel: str) -> None:
        node = self._cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call]
        pubsub = self._by_node.get(node.name)
        if pubsub is None:
            client = self._cluster.get_redis_connection(node)
            pubsub = self._by_node[node.name] = client.pubsub()  # type: ignore[no-untyped-call]
        pubsub.ssubscribe(channel)

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """A message of any shard: what is buffered first, else wait ``timeout`` in all."""
        pubsubs = list(self._by_node.values())
        for _ in range(2):
            for i in range(len(pubsubs)):
                pubsub = pubsubs[(self._turn + i) % len(pubsubs)]
                wait = 0.0 if _ == 0 else timeout / len(pubsubs)
                message: dict[str, Any] | None = pubsub.get_message(timeout=wait)
                if not self._leaving and not pubsub.subscribed:
                    raise redis.ConnectionError("a shard channel's slot moved to another node")
                if message is not None:
                    self._turn += 1
                    return message
        return None

    def ping(self, message: str) -> None:
        for pubsub in self._by_node.values():
            pubsub.ping(message)

    def sunsubscribe(self) -> None:
        self._leaving = True
        for pubsub in self._by_node.values():
            pubsub.sunsubscribe()  # type: ignore[no-untyped-call]

    @property
    def subscribed(self) -> bool:
        return any(pubsub.subscribed for pubsub in self._by_node.values())

    def close(self) -> None:
        for pubsub in self._by_node.values():
            pubsub.close()


class PubSubBridge:
    """``run()`` until ``stop()`` (thread-safe; also the SIGTERM handler's job)."""

    def __init__(self, settings: PubSubSettings, source: redis.Redis, sink: redis.Redis) -> None:
        self._settings = settings
        self._source = source
        self._keys = Keys.from_settings(settings.common.redis)
        self._writer = IdempotentWriter(sink, self._keys, MARKER_TTL_S)
        self._subscriptions = Subscriptions(settings.channels, settings.patterns)
        self._stopping = threading.Event()
        self.health = HealthTracker(settings.common.metrics.health_threshold_s, time.monotonic)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        backoff = self._settings.common.backoff()
        while not self._stopping.is_set():
            pubsub = self._pubsub()
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
            except _TRANSIENT as exc:
                self.health.failed("redis")
                delay = backoff.next_s()
                log.warning("redis unavailable (%s); resubscribing in %.2fs", exc, delay)
                self._stopping.wait(delay)
            finally:
                pubsub.close()
        log.info("pubsub bridge stopped")

    def _pubsub(self) -> PubSub:
        if self._settings.sharded and is_cluster(self._source):
            cluster = cast(redis.cluster.RedisCluster, self._source)
            return cast(PubSub, ShardedPubSub(cluster))
        pubsub: PubSub = self._source.pubsub()  # type: ignore[no-untyped-call]
        return pubsub

    def _subscribe(self, pubsub: PubSub) -> None:
        if self._settings.sharded:
            # One SSUBSCRIBE per channel: in a cluster each channel's slot may be on
            # another shard, and one command may only name channels of one slot.
            for channel in self._settings.channels:
                pubsub.ssubscribe(channel)  # type: ignore[no-untyped-call]
        elif self._settings.channels:
            pubsub.subscribe(*self._settings.channels)  # type: ignore[no-untyped-call]
        if self._settings.patterns:
            pubsub.psubscribe(*self._settings.patterns)  # type: ignore[no-untyped-call]
        log.info(
            "subscribed to %schannels %s, patterns %s",
            "shard " if self._settings.sharded else "",
            ", ".join(self._settings.channels),
            ", ".join(self._settings.patterns) or "-",
        )

    def _listen(self, pubsub: PubSub) -> None:
        liveness = Liveness(self._settings.ping_interval_s, time.monotonic)
        while not self._stopping.is_set():
            batch = self._read(pubsub, liveness)
            if batch:
                self._flush(batch)
        self._drain(pubsub, liveness)

    def _read(self, pubsub: PubSub, liveness: Liveness) -> list[PubSubMessage]:
        """Wait up to _POLL_S for traffic, then take what else is already buffered, up to
        BRIDGE_BATCH_MAX. Raises ConnectionError when a PING went unanswered."""
        if liveness.ping_due():
            pubsub.ping(PING_MESSAGE)
            liveness.pinged()
        batch: list[PubSubMessage] = []
        raw = pubsub.get_message(timeout=_POLL_S)
        while raw is not None:
            liveness.heard()  # healthy once Redis answers (sending alone proves nothing)
            self.health.ok("redis")
            message = self._message(raw)
            if message is not None:
                batch.append(message)
                if len(batch) >= self._settings.batch_max:
                    break
            raw = pubsub.get_message(timeout=0)
        if liveness.dead():
            interval = self._settings.ping_interval_s
            raise redis.ConnectionError(f"no reply to PING within {interval}s")
        return batch

    def _drain(self, pubsub: PubSub, liveness: Liveness) -> None:
        """Unsubscribe, then write what Redis sent before it took effect: the confirmations
        come after every message published before, on the same connection."""
        if self._settings.sharded:
            pubsub.sunsubscribe()  # type: ignore[no-untyped-call]
        else:
            pubsub.unsubscribe()  # type: ignore[no-untyped-call]
        if self._settings.patterns:
            pubsub.punsubscribe()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + self._settings.shutdown_grace_s
        while pubsub.subscribed:
            if time.monotonic() >= deadline:
                log.warning("stopping without the unsubscribe confirmation: messages may be lost")
                return
            batch = self._read(pubsub, liveness)
            if batch:
                self._flush(batch)

    def _message(self, raw: dict[str, Any]) -> PubSubMessage | None:
        """A message to bridge, or None for confirmations, PONGs and extra copies."""
        if raw.get("type") not in _MESSAGE_TYPES:
            return None
        channel, data = raw["channel"], raw["data"]
        channel = channel if isinstance(channel, bytes) else str(channel).encode()
        pattern = raw.get("pattern")
        if not self._subscriptions.keep(channel, pattern):
            return None
        return PubSubMessage(
            channel=channel.decode("utf-8", "replace"),
            data=data if isinstance(data, bytes) else str(data).encode(),
        )

    def _flush(self, batch: list[PubSubMessage]) -> None:
        started = time.perf_counter()
        writes = plan_pubsub(batch, self._keys, self._settings.common.max_payload_bytes)
        self._write_with_retries(self._writer.batch(writes))
        dead = dead_letter_stream(self._keys)
        for write in writes:
            if write.stream == dead:
                log.warning(
                    "invalid message on %s dead-lettered: %s",
                    write.fields["pubsub_channel"],
                    write.fields["error"],
                )
                metrics.BRIDGE_REJECTED.labels(BRIDGE, BRIDGE_INVALID).inc()
            else:
                metrics.BRIDGED.labels(BRIDGE).inc()
        metrics.BRIDGE_BATCH_DURATION.labels(BRIDGE).observe(time.perf_counter() - started)

    def _write_with_retries(self, batch: Batch) -> None:
        """Hold on to what was received until Redis takes it; once stopping, for at most
        BRIDGE_SHUTDOWN_GRACE_S more."""
        try:
            write_until_taken(
                lambda: self._writer.write(batch),
                backoff=self._settings.common.backoff(),
                health=self.health,
                stopping=self._stopping,
                grace_s=self._settings.shutdown_grace_s,
                wait=lambda delay_s, give_up_at: sleep_until_stopped(
                    self._stopping, delay_s, give_up_at
                ),
                holding=f"holding {len(batch.writes)} messages",
            )
        except RetryableError:
            count = len(batch.writes)
            log.error("stopping with Redis unreachable: %d received messages lost", count)
            raise
