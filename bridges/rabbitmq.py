"""`streamer bridge rabbitmq`: RabbitMQ queues -> the ingress stream, nothing lost or doubled.

One BlockingConnection on the main thread consumes every queue on one channel with manual
acks and a prefetch window. Deliveries gathered from one read (up to half the window) are
written as one batch of idempotent XADDs (``bridges.idempotent``) by a worker thread
(``bridges.inflight``), one batch at a time, while the main thread reads the next; once
written, the main thread acks it with ``multiple=True``. Nothing is acked before its XADD
succeeded; a message redelivered after a crash between XADD and ack is recognised by its
recorded digest and skipped. Invalid messages are rejected without requeue, so RabbitMQ
moves them to ``<queue>.dead``.

pika only services heartbeats inside ``process_data_events``, which the main thread keeps
calling whatever Redis does; all pika calls stay on that thread.
"""

from __future__ import annotations

import contextlib
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
from bridges.inflight import InFlight
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
        self._writing: InFlight[tuple[AmqpPlan, list[AmqpDelivery]], list[bool]] = InFlight(
            "redis-writer"
        )
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
                    self.health.failed("rabbitmq")
                    delay = backoff.next_s()
                    log.warning("RabbitMQ connection lost (%r); reconnecting in %.2fs", exc, delay)
                    # Un-acked deliveries return to their queues; drop our copies, once the
                    # batch being written is written to the end (see _finish_write).
                    self._finish_write()
                    self._pending.clear()
                    self._close()
                    self._stopping.wait(delay)
        except _GiveUp:
            log.warning("stopping with Redis unreachable: the batch in flight stays un-acked")
        finally:
            self._close()
            # Exiting: a write still in flight (only after an unexpected error) gets the
            # shutdown grace, not a retry loop that would keep the process alive.
            self._stopping.set()
            self._writing.close()
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
            self._advance()
            if self._cancelled_by_broker:
                # The queue was deleted or the node failed over: start over (declare again).
                raise pika.exceptions.ConsumerCancelled("consumer cancelled by the broker")
        self._shutdown()

    def _gather(self) -> None:
        """Take whatever else is already readable, up to a batch: bigger batches mean fewer
        Redis round trips, and we never wait for more. A batch is half the prefetch window,
        so the broker still has room to send the next one while one is written."""
        assert self._connection is not None
        while self._pending and len(self._pending) < self._settings.batch_max:
            before = len(self._pending)
            self._connection.process_data_events(time_limit=0)
            if len(self._pending) == before:
                return

    def _advance(self) -> None:
        """Ack the batch written, if it is; then hand the next one to the writer thread."""
        if self._writing.finished:
            self._settle(*self._taken())
        if not self._writing.busy and self._pending:
            self._start_write()

    def _shutdown(self) -> None:
        """Stop consuming, then write and ack what was already handed to us."""
        for tag in self._consumer_tags:
            self._channel.basic_cancel(tag)
        self._consumer_tags = []
        while self._writing.busy or self._pending:
            if self._writing.busy:
                self._serve_until_written()
                self._settle(*self._taken())
            if self._pending:
                self._start_write()
        self._close()

    def _serve_until_written(self) -> None:
        """Keep the connection serviced (heartbeats; deliveries the broker sent before the
        cancel land in the pending batch) while the writer thread finishes its batch."""
        assert self._connection is not None
        while not self._writing.finished:
            self._connection.process_data_events(time_limit=_POLL_S)

    def _start_write(self) -> None:
        assert self._connection is not None
        batch_max = self._settings.batch_max
        deliveries, self._pending = self._pending[:batch_max], self._pending[batch_max:]
        plan = plan_amqp(deliveries, self._keys, self._settings.common.max_payload_bytes)
        batch = self._writer.batch(plan.writes)
        connection = self._connection
        self._writing.start(
            (plan, deliveries), lambda: self._write(batch), lambda: _wake(connection)
        )

    def _taken(self) -> tuple[AmqpPlan, list[AmqpDelivery], list[bool]]:
        """The batch in flight once written (waits for it). Raises _GiveUp if the bridge is
        stopping and Redis did not take it within the grace."""
        try:
            (plan, deliveries), written = self._writing.take()
        except RetryableError as exc:
            raise _GiveUp from exc
        return plan, deliveries, written

    def _finish_write(self) -> None:
        """Before reconnecting after a broker failure, let the batch in flight be written:
        it can no longer be acked, and its messages will be redelivered, but a try whose
        reply never came may still reach Redis late (held by a frozen Redis, retransmitted
        after a partition). Written to the end, the progress records make that try add
        nothing; redeliveries written first, as a new batch, would not stop it."""
        if self._writing.busy:
            self._taken()

    def _settle(self, plan: AmqpPlan, batch: list[AmqpDelivery], written: list[bool]) -> None:
        """Reject the invalid messages, ack the batch, count."""
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
        appended = sum(written)
        metrics.BRIDGED.labels(BRIDGE).inc(appended)
        if appended < len(written):
            metrics.BRIDGE_DUPLICATES.labels(BRIDGE).inc(len(written) - appended)

    def _write(self, batch: Batch) -> list[bool]:
        """In the writer thread: write until Redis takes the batch, retrying the same batch
        (it resumes where a failed try stopped); once stopping, for at most the grace."""
        started = time.perf_counter()
        backoff = self._settings.common.backoff()
        written = write_until_taken(
            lambda: self._writer.write(batch),
            backoff=backoff,
            health=self.health,
            stopping=self._stopping,
            grace_s=self._settings.shutdown_grace_s,
            wait=lambda delay_s, give_up_at: sleep_until_stopped(
                self._stopping, delay_s, give_up_at
            ),
            holding=f"batch of {len(batch.writes)} not acked",
        )
        if backoff.attempts:
            metrics.BRIDGE_RECONNECTS.labels(BRIDGE, "redis").inc()
            log.info("redis is back after %d failed attempt(s)", backoff.attempts)
        metrics.BRIDGE_BATCH_DURATION.labels(BRIDGE).observe(time.perf_counter() - started)
        return written


def _wake(connection: pika.BlockingConnection) -> None:
    """From the writer thread: make the main thread's process_data_events return, so that
    it acks the batch now rather than after its poll timeout."""
    with contextlib.suppress(pika.exceptions.ConnectionWrongStateError):
        connection.add_callback_threadsafe(lambda: None)
