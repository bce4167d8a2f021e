"""The `streamer worker` process: read the stream in a consumer group, deliver, ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from streamer.contract.event import Channel
from streamer.contract.keys import Keys
from streamer.infra import metrics
from streamer.infra.http import HealthTracker, serve_metrics
from streamer.infra.redis import REDIS_ERRORS, connect
from streamer.infra.stream_stats import sample
from streamer.push.base import PushSender
from streamer.worker.consumer import StreamConsumer
from streamer.worker.processor import BatchProcessor
from streamer.worker.settings import WorkerSettings
from streamer.worker.userlog import LiveGateways, UserLogWriter

log = logging.getLogger(__name__)

_HEARTBEAT_S = 2.0


class Worker:
    """One consumer in the group. ``run`` loops until ``stop()``; ``drain`` (for tests and
    batch jobs) returns once nothing new and nothing reclaimable is left."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: WorkerSettings,
        senders: Mapping[Channel, PushSender] | None = None,
        push_concurrency: int = 64,
    ) -> None:
        keys = Keys.from_settings(settings.redis)
        self._redis = redis
        self._settings = settings
        self._keys = keys
        self.consumer = StreamConsumer(redis, keys, settings.consumer)
        self._processor = BatchProcessor(
            UserLogWriter(redis, keys, settings.delivery),
            LiveGateways(redis, keys, settings.delivery.gateway_dead_after_ms),
            senders or {},
            settings.consumer,
            settings.delivery,
            push_concurrency,
        )
        self._stopping = asyncio.Event()
        self.health = HealthTracker(settings.metrics.health_threshold_s, time.monotonic)

    def stop(self) -> None:
        self._stopping.set()

    async def step(self) -> int:
        """Read one batch, process it, settle it. Returns the batch size."""
        room = await self._processor.room(self._settings.consumer.read_count)
        batch = await self.consumer.next_batch(room)
        if not batch:
            return 0
        started = time.perf_counter()
        settlement = await self._processor.process(batch)
        await self.consumer.settle(settlement)
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        return len(batch)

    async def run(self) -> None:
        """Loop until stopped. Redis errors of any kind (connection loss, OOM, READONLY after
        a failover, a lost group) are transient: back off and go on. Anything else is a bug:
        it is logged and re-raised, so the process exits non-zero instead of idling."""
        backoff = 0.1
        started = False
        while not self._stopping.is_set():
            try:
                if not started:
                    await self._start()
                    started = True
                await self.step()
                self.health.ok("redis")
                backoff = 0.1
            except REDIS_ERRORS as exc:
                # The batch in flight stays pending; it is read again or reclaimed later.
                metrics.REDIS_ERRORS.inc()
                self.health.failed("redis")
                log.warning("redis error (%s); retrying in %.1fs", exc, backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("worker %s failed; exiting", self.consumer.name)
                self.stop()
                raise
        with contextlib.suppress(*REDIS_ERRORS):
            await self.consumer.leave()
        log.info("worker %s stopped", self.consumer.name)

    async def drain(self, idle_rounds: int = 2) -> None:
        """Process until the stream has nothing new and nothing pending for this group."""
        await self._start()
        quiet = 0
        while quiet < idle_rounds:
            processed = await self.step()
            pending = (await self._redis.xpending(self._keys.stream, self._keys.group))["pending"]
            quiet = quiet + 1 if processed == 0 and pending == 0 else 0

    async def _start(self) -> None:
        if await self.consumer.ensure_group():
            log.info("created consumer group %s on %s", self._keys.group, self._keys.stream)
        await self.consumer.heartbeat()

    async def background(self) -> None:
        """Heartbeat and stream gauges, until stopped."""
        last_stats = 0.0
        while not self._stopping.is_set():
            try:
                await self.consumer.heartbeat()
                if time.monotonic() - last_stats >= self._settings.stats_interval_s:
                    last_stats = time.monotonic()
                    await self._sample()
            except REDIS_ERRORS as exc:
                log.debug("background sampling failed: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _HEARTBEAT_S)

    async def _sample(self) -> None:
        stats = await sample(self._redis, self._keys)
        metrics.STREAM_LENGTH.set(stats.length)
        metrics.STREAM_PENDING.set(stats.pending)
        metrics.DLQ_LENGTH.set(stats.dlq_length)
        metrics.OLDEST_PENDING_AGE.set((stats.oldest_pending_age_ms or 0) / 1000)
        if stats.lag is not None:
            metrics.STREAM_LAG.set(stats.lag)


async def run_worker(settings: WorkerSettings, senders: Mapping[Channel, PushSender]) -> None:
    redis = connect(
        settings.redis.url,
        client_name=f"streamer-worker-{settings.consumer.worker_id}",
        block_ms=settings.consumer.block_ms,
    )
    worker = Worker(redis, settings, senders)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    server = None
    if settings.metrics.port:
        server = await serve_metrics(settings.metrics.host, settings.metrics.port, worker.health)
    log.info(
        "worker %s reading %s as group %s",
        worker.consumer.name,
        settings.redis.stream_key,
        settings.redis.consumer_group,
    )
    background = asyncio.create_task(worker.background())
    try:
        await worker.run()
    finally:
        worker.stop()  # also when run() raised: the heartbeat must not outlive the loop
        await background
        for sender in senders.values():
            await sender.close()
        if server is not None:
            server.close()
        await redis.aclose()
