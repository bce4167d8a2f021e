"""The `streamer worker` process: own some units, read them in their consumer groups,
deliver, settle.

Every ``WORKER_HEARTBEAT_MS`` the worker heartbeats (Redis's clock), computes which units
are its share among the live workers (``assignment``), renews the leases it holds, gives
back the units that are no longer its share (after finishing their batch and the pushes in
flight) and takes the free units that are. A unit it takes is first drained of the entries
its previous owner left pending, then read for new ones. On a single Redis one XREADGROUP
reads every held unit; on Redis Cluster each unit is read on its own (its stream is alone
in its slot).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Mapping
from functools import partial

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streamer.contract.event import Channel
from streamer.contract.inbox import Delivery
from streamer.contract.keys import Keys
from streamer.infra import metrics, registry
from streamer.infra.http import HealthTracker, serve_metrics
from streamer.infra.redis import REDIS_ERRORS, connect, is_cluster
from streamer.infra.stream_stats import sample
from streamer.push.base import PushSender
from streamer.worker.assignment import Unit, assign, units
from streamer.worker.consumer import (
    LeaseLost,
    RawEntry,
    Settlement,
    StreamConsumer,
    apply_all,
    read_new,
    read_new_alone,
)
from streamer.worker.delivery import LiveGateways, LogWriter
from streamer.worker.leases import HANDED_OVER, Leases
from streamer.worker.processor import BatchProcessor, RetryBatch
from streamer.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.1, 5.0
# How long a unit given back waits for its pushes in flight before its lease goes.
_HANDOVER_WAIT_S = 30.0


class Worker:
    """One consumer in the group. ``run`` loops until ``stop()``; ``drain`` (for tests and
    batch jobs) returns once nothing new and nothing pending is left in any unit."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: WorkerSettings,
        senders: Mapping[Channel, PushSender] | None = None,
        push_concurrency: int = 64,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = keys = Keys.from_settings(settings.redis)
        self.name = settings.consumer.worker_id
        self._units = units(keys)
        self._position = {unit: n for n, unit in enumerate(self._units)}
        self._leases = Leases(redis, self.name, settings.ownership.lease_ttl_ms)
        self._writer = LogWriter(redis, keys, settings.delivery, self._leases.token)
        self._processor = BatchProcessor(
            keys,
            self._writer,
            LiveGateways(redis, keys, settings.delivery.gateway_dead_after_ms),
            senders or {},
            settings.consumer,
            settings.delivery,
            push_concurrency,
        )
        self._held: dict[int, StreamConsumer] = {}  # position in self._units -> consumer
        self._taking_over: set[int] = set()  # held units still draining old pending entries
        self._leaving: dict[int, asyncio.Task[None]] = {}  # units being handed over
        self._renewed_at = 0.0
        self._groups_seen: set[str] = set()  # streams whose group this process saw exist
        self._turn = 0  # which unit a small read starts with (round robin)
        self._batch_lock = asyncio.Lock()  # units change hands between batches, never during
        self._changed = asyncio.Event()
        # Units with a read (XREADGROUP, XAUTOCLAIM, XPENDING) in flight, and how many.
        self._reading: collections.Counter[int] = collections.Counter()
        self._reads_done = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._cluster = is_cluster(redis)
        self.health = HealthTracker(settings.metrics.health_threshold_s, time.monotonic)

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()

    @property
    def units_held(self) -> list[str]:
        return sorted(self._units[i].name for i in self._held)

    # --- reading ------------------------------------------------------------------------

    async def step(self, positions: list[int] | None = None) -> int:
        """Read one batch from the held units (or the given ones), process it, settle it.
        Returns the batch size."""
        consumers = [self._held[i] for i in (positions or self._held) if i in self._held]
        if not consumers:
            return 0
        room = await self._processor.room(self._settings.consumer.read_count)
        batch = await self._reading_from(consumers, room)
        if not batch:
            return 0
        async with self._batch_lock:
            # A unit given back while this batch was being read: its entries stay pending,
            # for its new owner (who takes them over before reading anything new).
            batch = [e for e in batch if self._consumer_of(e.unit) is not None]
            started = time.perf_counter()
            if batch:
                await self._handle(batch)
            metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        return len(batch)

    async def _reading_from(self, consumers: list[StreamConsumer], count: int) -> list[RawEntry]:
        """``_next_batch``, with its units counted as being read until it returns, so that a
        hand-over waits for it (see ``_give_back``)."""
        positions = [self._position[c.unit] for c in consumers]
        self._reading.update(positions)
        try:
            return await self._next_batch(consumers, count)
        finally:
            self._reading.subtract(positions)
            async with self._reads_done:
                self._reads_done.notify_all()

    async def _reads_finished(self, position: int) -> None:
        async with self._reads_done:
            await self._reads_done.wait_for(lambda: self._reading[position] <= 0)

    async def _next_batch(self, consumers: list[StreamConsumer], count: int) -> list[RawEntry]:
        for consumer in consumers:
            position = self._position[consumer.unit]
            if position in self._taking_over:
                entries, complete = await consumer.take_over(count)
                if complete:
                    self._taking_over.discard(position)
                if entries:
                    return entries
        for consumer in consumers:
            if consumer.claim_due():
                claimed = await consumer.claim(count)
                if claimed:
                    return claimed
        block = self._settings.consumer.block_ms
        # On Redis Cluster one stream per slot: a multi-stream read would be refused.
        reading = consumers[:1] if self._cluster else consumers
        self._turn += 1
        try:
            if self._cluster:
                return await self._read_alone(consumers[0], count, block)
            return await read_new(self._redis, reading, count, block, self._turn)
        except ResponseError as exc:
            # NOGROUP, or UNBLOCKED while blocked: the stream or group vanished (Redis lost
            # data, a restart without AOF). The group is recreated; entries added since are
            # read from its start.
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            for consumer in reading:
                await consumer.recreate_group()
            return []

    async def _read_alone(
        self, consumer: StreamConsumer, count: int, block_ms: int
    ) -> list[RawEntry]:
        entries, older_elsewhere = await read_new_alone(self._redis, consumer, count, block_ms)
        if not older_elsewhere:
            return entries
        # A previous owner's late read took older entries: take the unit over again, so
        # that they go first (their log appends would otherwise count as done).
        log.warning(
            "%s: entries pending for another consumer; taking over again", consumer.unit.name
        )
        consumer.restart_take_over()
        self._taking_over.add(self._position[consumer.unit])
        return []

    async def _handle(self, batch: list[RawEntry]) -> None:
        """Process until delivered (every step is idempotent, so a failed batch is simply
        processed again; nothing after it goes first), then settle each unit's share."""
        backoff = _BACKOFF_FIRST_S
        while True:
            try:
                settlements = await self._processor.process(batch)
                break
            except RetryBatch as exc:
                metrics.REDIS_ERRORS.inc()
                self.health.failed("redis")
                log.warning("batch of %d failed (%s); retrying in %.1fs", len(batch), exc, backoff)
                if await self._stopped_within(backoff):
                    return  # left pending: this worker's next incarnation or a peer takes it
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        for unit in self._processor.lost:
            self._drop(unit, "lost")
        work = []
        for unit, settlement in settlements.items():
            consumer = self._consumer_of(unit)
            if consumer is not None:
                work.append((consumer, settlement))
        await self._settle(work, self._processor.inboxes)
        # Pushes decided from now on are settled as they land: after the batch's frames and
        # acks, never in front of them.
        for consumer, settlement in work:
            consumer.defer(settlement.deferred)

    async def _settle(
        self, work: list[tuple[StreamConsumer, Settlement]], inboxes: dict[str, list[Delivery]]
    ) -> None:
        """Write the batch's frames to the gateways' inboxes and apply the units' decisions,
        in one round trip; again after a failure, until done (each settlement is atomic, so
        safe to repeat), only what failed. The frames go in front of the acks: Redis runs a
        pipeline in order, so an entry is never acked before its frames were written, unless
        a write failed (memory full): then the frames are written again, from here."""
        backoff = _BACKOFF_FIRST_S
        while work or inboxes:
            try:
                before, failed = await apply_all(
                    self._redis, work, partial(self._writer.queue_inboxes, deliveries=inboxes)
                )
                inboxes = _unwritten(inboxes, before)
            except REDIS_ERRORS as exc:
                failed = [(consumer, settlement, exc) for consumer, settlement in work]
            work = []
            for consumer, settlement, error in failed:
                if isinstance(error, LeaseLost):
                    self._drop(consumer.unit, "lost")
                elif isinstance(error, REDIS_ERRORS):
                    work.append((consumer, settlement))
                else:
                    raise error
            if work or inboxes:
                metrics.REDIS_ERRORS.inc()
                self.health.failed("redis")
                log.warning(
                    "settling %s failed (%s); retrying in %.1fs",
                    ", ".join([*(c.unit.name for c, _ in work), *(f"inbox {g}" for g in inboxes)]),
                    failed[0][2] if failed else "inbox write",
                    backoff,
                )
                if await self._stopped_within(backoff):
                    return  # left pending: reclaimed later
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _consumer_of(self, unit: Unit) -> StreamConsumer | None:
        return self._held.get(self._position[unit])

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Loop until stopped. Redis errors of any kind (connection loss, OOM, READONLY after
        a failover, a cluster reconfiguring) are transient: back off and go on. Anything else
        is a bug: it is logged and re-raised, so the process exits non-zero."""
        manager = asyncio.create_task(self._manage_forever(), name="ownership")
        manager.add_done_callback(self._manager_ended)
        # Stream statistics in a task of their own: a dozen round trips per stream, each
        # waiting its turn behind the batches, must never delay a lease renewal.
        sampler = asyncio.create_task(self._sample_forever(), name="stream-stats")
        try:
            if self._cluster:
                await self._run_per_unit()
            else:
                await self._run_loop(None)
        finally:
            self.stop()
            await manager
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            with contextlib.suppress(*REDIS_ERRORS):
                await self._leave()
            log.info("worker %s stopped", self.name)

    async def _run_loop(self, position: int | None) -> None:
        backoff = _BACKOFF_FIRST_S
        while not self._stopping.is_set():
            if position is not None and position not in self._held:
                return
            if not self._held:
                await self._wait_changed(0.5)
                continue
            try:
                await self.step(None if position is None else [position])
                self.health.ok("redis")
                backoff = _BACKOFF_FIRST_S
            except REDIS_ERRORS as exc:
                # The batch in flight stays pending; it is read again or reclaimed later.
                metrics.REDIS_ERRORS.inc()
                self.health.failed("redis")
                log.warning("redis error (%s); retrying in %.1fs", exc, backoff)
                await self._stopped_within(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except Exception:
                log.exception("worker %s failed; exiting", self.name)
                self.stop()
                raise

    async def _run_per_unit(self) -> None:
        loops: dict[int, asyncio.Task[None]] = {}
        while not self._stopping.is_set():
            for position in self._held:
                if position not in loops or loops[position].done():
                    loops[position] = asyncio.create_task(self._run_loop(position))
            for task in [t for t in loops.values() if t.done() and t.exception()]:
                raise task.exception()  # type: ignore[misc]
            await self._wait_changed(1.0)
        await asyncio.gather(*loops.values(), return_exceptions=True)

    async def _wait_changed(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        self._changed.clear()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    # --- ownership ----------------------------------------------------------------------

    def _manager_ended(self, task: asyncio.Task[None]) -> None:
        # Ownership runs until stop(): ending earlier is a bug. Stop reading, so that run()
        # re-raises it and the process exits non-zero instead of reading unowned units.
        if not task.cancelled() and task.exception() is not None:
            log.error("ownership task of %s failed", self.name, exc_info=task.exception())
            self.stop()

    async def _manage_forever(self) -> None:
        period_s = self._settings.ownership.heartbeat_ms / 1000
        while not self._stopping.is_set():
            try:
                await self.manage()
                self.health.ok("redis")
            except REDIS_ERRORS as exc:
                self.health.failed("redis")
                log.warning("heartbeat or lease renewal failed: %s", exc)
            await self._stopped_within(period_s)

    async def _sample_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._sample()
            except REDIS_ERRORS as exc:
                log.debug("sampling the streams failed: %s", exc)
            await self._stopped_within(self._settings.stats_interval_s)

    async def manage(self) -> None:
        """Heartbeat, renew, then converge the held units on this worker's share. Units given
        back are handed over in the background (their pushes may take a while): nothing here
        waits on a batch, so renewals are never late because of a hand-over."""
        s = self._settings.ownership
        _, live = await registry.beat(self._redis, self._keys.workers, self.name, s.dead_after_ms)
        share = assign(len(self._units), live, self.name)
        held = [*self._held, *self._leaving]
        renewed = await self._leases.renew(self._lease_keys(held))
        self._note_renewal(time.monotonic())
        for position, kept in zip(held, renewed, strict=True):
            if not kept:
                self._drop(self._units[position], "lost")
        for position in [p for p in self._held if p not in share]:
            self._leaving[position] = asyncio.create_task(self._give_back(position))
        wanted = sorted(share - set(self._held) - set(self._leaving))
        taken = await self._leases.acquire(self._lease_keys(wanted))
        for position, how in zip(wanted, taken, strict=True):
            if how:
                await self._take(position, graceful=how == HANDED_OVER)
        metrics.PARTITIONS_OWNED.set(len(self._held))

    def _note_renewal(self, now: float) -> None:
        gap_ms = (now - self._renewed_at) * 1000 if self._renewed_at else 0.0
        self._renewed_at = now
        if gap_ms > self._settings.ownership.lease_ttl_ms / 2:
            # A starved or blocked process: its leases nearly (or did) run out.
            log.warning("leases renewed %.0f ms after the previous renewal", gap_ms)

    def _lease_keys(self, positions: list[int]) -> list[str]:
        return [self._units[p].lease for p in positions]

    async def _take(self, position: int, graceful: bool) -> None:
        unit = self._units[position]
        consumer = StreamConsumer(
            self._redis,
            unit,
            self._keys.group,
            self._settings.consumer,
            self._leases.token,
        )
        if await consumer.ensure_group():
            if unit.stream in self._groups_seen:
                metrics.GROUP_RECREATED.inc()
                log.warning(
                    "consumer group %s on %s was missing (Redis lost data?); recreated it",
                    self._keys.group,
                    unit.stream,
                )
            else:
                log.info("created consumer group %s on %s", self._keys.group, unit.stream)
        self._groups_seen.add(unit.stream)
        # Entries left by an owner that handed the unit over were not failed deliveries; those
        # of an owner whose lease ran out (it died or froze) count as one more delivery each,
        # so an entry that crashes every owner ends in the DLQ instead of stalling the unit.
        consumer.counting_take_over = not graceful
        self._held[position] = consumer
        self._taking_over.add(position)
        metrics.LEASE_CHANGES.labels("taken").inc()
        log.info("worker %s took %s", self.name, unit.name)
        self._changed.set()

    async def _give_back(self, position: int) -> None:
        """Hand a unit over: after the batch in hand, without reading it again; its pushes
        in flight are waited for (bounded), then the lease is released (its renewals go on
        meanwhile, see ``manage``)."""
        try:
            async with self._batch_lock:
                consumer = self._held.pop(position, None)
                self._taking_over.discard(position)
            if consumer is None:
                return
            # A read of this unit still in flight (a blocking XREADGROUP) may yet take new
            # entries for this worker's consumer. They must be pending before the lease goes,
            # so that the next owner's take-over sees them and handles them first: taken
            # later, after newer entries, their log appends would count as done (deliver.lua
            # keeps a log's ids increasing) and they would be lost. Bounded by the reply timeout.
            await self._reads_finished(position)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.settled(), _HANDOVER_WAIT_S)
            await self._leases.release([consumer.unit.lease])
            metrics.LEASE_CHANGES.labels("released").inc()
            log.info("worker %s gave back %s", self.name, consumer.unit.name)
        except REDIS_ERRORS as exc:
            log.warning("handing over a unit failed (%s); its lease will expire instead", exc)
        finally:
            self._leaving.pop(position, None)

    def _drop(self, unit: Unit, change: str) -> None:
        position = self._position[unit]
        consumer = self._held.pop(position, None)
        self._taking_over.discard(position)
        if consumer is not None:
            consumer.lost = True
            metrics.LEASE_CHANGES.labels(change).inc()
            log.warning("worker %s lost %s (lease gone)", self.name, unit.name)

    async def _leave(self) -> None:
        """On a clean exit: settle what is in flight, give every unit back, leave."""
        await asyncio.gather(*self._leaving.values(), return_exceptions=True)
        for position in list(self._held):
            consumer = self._held.pop(position)
            await consumer.leave()
            await self._leases.release([consumer.unit.lease])
        await self._redis.zrem(self._keys.workers, self.name)

    # --- tests and batch jobs -------------------------------------------------------------

    async def settled(self) -> None:
        """Until the pushes in flight of every held unit are settled."""
        for consumer in list(self._held.values()):
            await consumer.settled()

    async def drain(self, idle_rounds: int = 2) -> None:
        """A batch job: take this worker's share, process until no held unit has anything
        new or pending, then give every unit back and leave."""
        await self.manage()
        managed_at, every_s = time.monotonic(), self._settings.ownership.heartbeat_ms / 1000
        quiet = 0
        while quiet < idle_rounds:
            if time.monotonic() - managed_at >= every_s:
                # A long drain renews its leases like a running worker (they lapse after
                # WORKER_LEASE_TTL_MS otherwise, and the partitions would be lost mid-batch).
                await self.manage()
                managed_at = time.monotonic()
            processed = await self.step()
            pending = 0
            for consumer in self._held.values():
                info = await self._redis.xpending(consumer.stream, self._keys.group)
                pending += int(info["pending"])
            quiet = quiet + 1 if processed == 0 and pending == 0 else 0
        await self._leave()

    async def _sample(self) -> None:
        stats = await sample(self._redis, self._keys)
        metrics.STREAM_LENGTH.set(stats.length)
        metrics.STREAM_PENDING.set(stats.pending)
        metrics.DLQ_LENGTH.set(stats.dlq_length)
        metrics.OLDEST_PENDING_AGE.set((stats.oldest_pending_age_ms or 0) / 1000)
        if stats.lag is not None:
            metrics.STREAM_LAG.set(stats.lag)


def _unwritten(
    inboxes: dict[str, list[Delivery]], replies: list[object]
) -> dict[str, list[Delivery]]:
    """The gateways whose inbox entry was refused (replies: XADD, EXPIRE per gateway, in
    order); the others are counted as written."""
    unwritten = {}
    for n, (gid, items) in enumerate(inboxes.items()):
        if isinstance(replies[2 * n], Exception):
            unwritten[gid] = items
        else:
            metrics.INBOX_APPENDS.inc(len(items))
    return unwritten


async def run_worker(
    settings: WorkerSettings, senders: Mapping[Channel, PushSender], push_concurrency: int
) -> None:
    redis = connect(
        settings.redis.url,
        client_name=f"streamer-worker-{settings.consumer.worker_id}",
        block_ms=settings.consumer.block_ms,
    )
    worker = Worker(redis, settings, senders, push_concurrency)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    server = None
    if settings.metrics.port:
        server = await serve_metrics(settings.metrics.host, settings.metrics.port, worker.health)
    log.info(
        "worker %s: %d partitions + the compatibility stream %s, group %s",
        worker.name,
        settings.redis.partitions,
        settings.redis.stream_key,
        settings.redis.consumer_group,
    )
    try:
        await worker.run()
    finally:
        for sender in senders.values():
            await sender.close()
        if server is not None:
            server.close()
        await redis.aclose()
