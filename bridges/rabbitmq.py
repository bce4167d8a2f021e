"""`streamer bridge rabbitmq`: RabbitMQ queues -> the ingress stream, nothing lost or doubled.

One BlockingConnection on the main thread consumes every queue on one channel with manual
acks and a prefetch window. Deliveries gathered from one read are written in one pipelined
round trip of idempotent XADDs (``bridges.idempotent``), then acked with ``multiple=True``.
Nothing is acked before its XADD succeeded; a message redelivered after a crash between
XADD and ack is recognised by its marker and skipped. Invalid messages are rejected without
requeue, so RabbitMQ moves them to ``<queue>.dead``.

pika only services heartbeats inside ``process_data_events``/``sleep``, so every wait here
goes through ``connection.sleep`` and every Redis call is bounded by a short socket timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pika
import pika.exceptions
import redis

from bridges.core import (
    BRIDGE_ERROR,
    AmqpDelivery,
    AmqpPlan,
    plan_amqp,
)
from bridges.holding import sleep_until_stopped, write_until_taken
from bridges.idempotent import Batch, IdempotentWriter
from bridges.settings import RabbitSettings
from streamer.contract.keys import Keys
from streamer.infra import metrics
from streamer.infra.errors import ConfigError, RetryableError
from streamer.infra.http import HealthTracker

log = logging.getLogger(__name__)

BRIDGE = "rabbitmq"
DEAD_LETTER_EXCHANGE = "streamer.dlx"
_POLL_S = 0.5
_BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)


class _GiveUp(Exception):
    """Stopping while Redis stays down: leave the batch un-acked for redelivery."""


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def declare_queue(channel: Any, queue: str) -> None:
    """A durable queue whose rejected messages RabbitMQ moves to ``<queue>.dead``."""
    dead = dead_letter_queue(queue)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="direct", durable=True)
    channel.queue_declare(dead, durable=True)
    channel.queue_bind(dead, DEAD_LETTER_EXCHANGE, routing_key=queue)
    arguments = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE, "x-dead-letter-routing-key": queue}
    try:
        channel.queue_declare(queue, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406:
            raise ConfigError(
                f"RABBITMQ_DECLARE_QUEUES: queue {queue!r} exists with other settings "
                f"({exc.reply_text}); set RABBITMQ_DECLARE_QUEUES=false to use it as is"
            ) from exc
        raise


def check_queue(channel: Any, queue: str) -> None:
    """Passive declare, for queues managed elsewhere: fail clearly when one is missing."""
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            raise ConfigError(
                f"RABBITMQ_DECLARE_QUEUES=false (queues managed elsewhere) but queue "
                f"{queue!r} does not exist on the broker"
            ) from exc
        raise


def to_delivery(queue: str, method: Any, properties: Any, body: bytes) -> AmqpDelivery:
    """pika's Basic.Deliver / Basic.GetOk and properties -> our delivery record."""
    return AmqpDelivery(
        tag=method.delivery_tag,
        queue=queue,
        routing_key=wire_text(method.routing_key) or "",
        message_id=wire_text(properties.message_id),
        redelivered=bool(method.redelivered),
        body=body,
    )


def wire_text(value: str | bytes | None) -> str | None:
    """An AMQP short string as text. pika hands one that is not UTF-8 over as bytes; its
    invalid bytes become ``\\xNN`` escapes (distinct inputs stay distinct in practice)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


class RabbitBridge:
    """``run()`` until ``stop()`` (thread-safe; also the SIGTERM handler's job)."""

    def __init__(self, settings: RabbitSettings, client: redis.Redis, name: str) -> None:
        self._settings = settings
        self._keys = Keys.from_settings(settings.common.redis)
        self._writer = IdempotentWriter(client, self._keys, settings.dedupe_ttl_s)
        self._name = name
        self._stopping = threading.Event()
        self._pending: list[AmqpDelivery] = []
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._consumer_tags: list[str] = []
        self._cancelled_by_broker = False
        self.health = HealthTracker(settings.common.metrics.health_threshold_s, time.monotonic)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        backoff = self._settings.common.backoff()
        try:
            while not self._stopping.is_set():
                try:
                    self._connect()
                    if backoff.attempts:
                        metrics.BRIDGE_RECONNECTS.labels(BRIDGE, "rabbitmq").inc()
                        log.info("reconnected to RabbitMQ after %d attempt(s)", backoff.attempts)
                    backoff.reset()
                    self._consume()
                except _BROKER_ERRORS as exc:
                    # Un-acked deliveries return to their queues; drop our copies.
                    self._pending.clear()
                    self._close()
                    self.health.failed("rabbitmq")
                    delay = backoff.next_s()
                    log.warning("RabbitMQ connection lost (%r); reconnecting in %.2fs", exc, delay)
                    self._stopping.wait(delay)
        except _GiveUp:
            log.warning("stopping with Redis unreachable: the batch in flight stays un-acked")
        finally:
            self._close()
        log.info("rabbitmq bridge stopped")

    # --- connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        params = pika.URLParameters(self._settings.url)
        params.client_properties = {"connection_name": self._name}
        self._connection = pika.BlockingConnection(params)
        channel = self._connection.channel()
        self._channel = channel
        for queue in self._settings.queues:
            self._declare(channel, queue)
        channel.basic_qos(prefetch_count=self._settings.prefetch)
        channel.add_on_cancel_callback(self._on_broker_cancel)
        self._cancelled_by_broker = False
        self._consumer_tags = [
            channel.basic_consume(queue, self._on_message_for(queue), auto_ack=False)
            for queue in self._settings.queues
        ]
        self.health.ok("rabbitmq")
        log.info(
            "consuming %s (prefetch %d)", ", ".join(self._settings.queues), self._settings.prefetch
        )

    def _declare(self, channel: Any, queue: str) -> None:
        if self._settings.declare_queues:
            declare_queue(channel, queue)
        else:
            check_queue(channel, queue)

    def _on_message_for(self, queue: str) -> Any:
        def on_message(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            try:
                delivery = to_delivery(queue, method, properties, body)
            except Exception as exc:  # a broker oddity: dead-letter it, keep the bridge up
                self._reject_unreadable(queue, method.delivery_tag, exc)
                return
            self._pending.append(delivery)

        return on_message

    def _reject_unreadable(self, queue: str, tag: int, exc: Exception) -> None:
        log.error("rejecting unreadable message #%d from %s: %r", tag, queue, exc)
        metrics.BRIDGE_REJECTED.labels(BRIDGE, BRIDGE_ERROR).inc()
        self._channel.basic_reject(tag, requeue=False)

    def _on_broker_cancel(self, _frame: Any) -> None:
        self._cancelled_by_broker = True

    def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except _BROKER_ERRORS as exc:
                log.debug("closing the RabbitMQ connection failed: %r", exc)

    # --- consuming -----------------------------------------------------------------------

    def _consume(self) -> None:
        assert self._connection is not None
        while not self._stopping.is_set():
            self._connection.process_data_events(time_limit=_POLL_S)
            self._gather()
            if self._pending:
                self._flush()
            if self._cancelled_by_broker:
                # The queue was deleted or the node failed over: start over (declare again).
                raise pika.exceptions.ConsumerCancelled("consumer cancelled by the broker")
        self._shutdown()

    def _gather(self) -> None:
        """Take whatever else is already readable, up to half the prefetch window: bigger
        batches mean fewer Redis round trips, and we never wait for more. Half, so that the
        broker still has room to send the next batch while this one is written and acked."""
        assert self._connection is not None
        while self._pending and len(self._pending) < self._settings.batch_max:
            before = len(self._pending)
            self._connection.process_data_events(time_limit=0)
            if len(self._pending) == before:
                return

    def _shutdown(self) -> None:
        """Stop consuming, then write and ack what was already handed to us."""
        for tag in self._consumer_tags:
            self._channel.basic_cancel(tag)
        self._consumer_tags = []
        if self._pending:
            self._flush()
        self._close()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        started = time.perf_counter()
        plan = plan_amqp(batch, self._keys, self._settings.common.max_payload_bytes)
        written = self._write(self._writer.batch(plan.writes))
        self._settle(plan, batch)
        appended = sum(written)
        metrics.BRIDGED.labels(BRIDGE).inc(appended)
        if appended < len(written):
            metrics.BRIDGE_DUPLICATES.labels(BRIDGE).inc(len(written) - appended)
        metrics.BRIDGE_BATCH_DURATION.labels(BRIDGE).observe(time.perf_counter() - started)

    def _settle(self, plan: AmqpPlan, batch: list[AmqpDelivery]) -> None:
        ids = {d.tag: d.message_id for d in batch} if plan.rejects else {}
        for r in plan.rejects:
            log.warning(
                "rejecting message %s from %s to %s: %s: %s",
                ids.get(r.tag) or f"#{r.tag}",
                r.queue,
                dead_letter_queue(r.queue),
                r.reason,
                r.error[:300],
            )
            metrics.BRIDGE_REJECTED.labels(BRIDGE, r.reason).inc()
            self._channel.basic_reject(r.tag, requeue=False)
        if plan.ack_through is not None:
            self._channel.basic_ack(plan.ack_through, multiple=True)

    def _write(self, batch: Batch) -> list[bool]:
        """Write until Redis takes the batch, retrying the same batch. Waits go
        through connection.sleep so heartbeats continue; more deliveries may arrive
        meanwhile (bounded by prefetch).

        If the broker connection fails during a wait, the batch can no longer be acked, but
        it is still written, with its own markers, before the bridge reconnects. A try whose
        reply never came may still reach Redis late (held by a frozen Redis, retransmitted
        after a partition): with its batch marker already set by the retry it adds nothing,
        whereas the redeliveries written as a new batch first would not stop it."""
        assert self._connection is not None
        backoff = self._settings.common.backoff()
        waiting = _BrokerWait(self._connection, self._stopping)
        try:
            written = write_until_taken(
                lambda: self._writer.write(batch),
                backoff=backoff,
                health=self.health,
                stopping=self._stopping,
                grace_s=self._settings.shutdown_grace_s,
                wait=waiting.wait,
                holding=f"batch of {len(batch.writes)} not acked",
            )
        except RetryableError as exc:
            raise _GiveUp from exc
        if backoff.attempts:
            metrics.BRIDGE_RECONNECTS.labels(BRIDGE, "redis").inc()
            log.info("redis is back after %d failed attempt(s)", backoff.attempts)
        if waiting.lost is not None:
            raise waiting.lost
        return written


class _BrokerWait:
    """Waits between write retries: through pika's ``connection.sleep`` (heartbeats go on)
    while the broker connection lives; after it failed, on the stop event, and the failure
    is kept in ``lost`` for the caller to raise once the batch is written."""

    def __init__(self, connection: pika.BlockingConnection, stopping: threading.Event) -> None:
        self._connection = connection
        self._stopping = stopping
        self.lost: BaseException | None = None

    def wait(self, delay_s: float, give_up_at: float | None) -> None:
        if self.lost is None:
            try:
                self._connection.sleep(delay_s)
                return
            except _BROKER_ERRORS as exc:
                self.lost = exc
                log.warning("RabbitMQ connection lost (%r) while Redis is failing", exc)
        sleep_until_stopped(self._stopping, delay_s, give_up_at)
