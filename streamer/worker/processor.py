"""Process one batch of stream entries: decode, route, deliver, decide.

A batch may hold entries of several units (partitions, the compatibility stream). The
processor never acks; it returns one Settlement per unit that the units' consumers carry
out. In order:
1. entries that need no delivery are settled (trimmed, poison, delivered too often);
2. entries (or their other targets) that belong to other partitions are forwarded there,
   at most once each (``route.lua``);
3. each partition's users and topics get their events appended, one script call per
   partition (``deliver.lua``), and each owning gateway gets one inbox entry with all of its
   frames;
4. pushes run in detached tasks (bounded in number) whose entries the consumer settles as
   they are decided, so a slow provider delays only the entries waiting for it.
A Redis failure in 2 or 3 raises RetryBatch: the caller retries the same batch (every step
is idempotent), so no later entry of a user overtakes an earlier one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from functools import partial

import msgspec

from streamer.contract.decode import Event, Poison, decode_entry
from streamer.contract.event import Channel, encode_content, push_content
from streamer.contract.ids import entry_ms
from streamer.contract.inbox import BROADCAST, TOPIC, USER, Delivery
from streamer.contract.keys import Keys
from streamer.contract.websocket import broadcast_frame, event_frame
from streamer.core.policy import (
    MAX_DELIVERIES,
    Action,
    ChannelResult,
    Outcome,
    backoff_ms,
    decide,
    over_delivered,
)
from streamer.core.ratelimit import TokenBucket
from streamer.infra import metrics
from streamer.infra.errors import RetryableError
from streamer.push.base import PushRequest, PushSender
from streamer.worker.assignment import Unit
from streamer.worker.consumer import Deferred, RawEntry, Settlement, is_lease_error
from streamer.worker.delivery import (
    Append,
    LiveGateways,
    LogWriter,
    PartitionAppend,
    RouteCall,
    Target,
)
from streamer.worker.routing import Plan, plan
from streamer.worker.settings import ConsumerSettings, DeliverySettings

log = logging.getLogger(__name__)

MISSING_DEVICE_TOKEN = "missing_device_token"
SENDER_ERROR = "sender_error"
BROADCAST_RATE_LIMITED = "broadcast_rate_limited"
# Entries with pushes in flight, per unit of push_concurrency: enough to keep providers busy
# across several batches, while bounding memory when one is slow (then reading waits).
INFLIGHT_PER_SLOT = 16

PushJob = tuple[PushSender, PushRequest]
Fields = Mapping[bytes | str, bytes | str]


# Children resolved once: a labels() lookup per event costs as much as the count itself.
_WEBSOCKET_DELIVERED = metrics.DELIVERIES.labels("websocket", Outcome.DELIVERED.value)
_WEBSOCKET_LATENCY = metrics.DELIVERY_LATENCY.labels("websocket")


class RetryBatch(RetryableError):
    """Forwarding or websocket delivery failed in a way that may pass: retry the batch."""


class _Work(msgspec.Struct, eq=False):
    """One entry to deliver (compared by identity: entries of two partitions may share an id)."""

    entry: RawEntry
    event: Event
    plan: Plan
    content: bytes = b""  # the event's data as JSON, encoded once, for every log and frame


class BatchProcessor:
    def __init__(
        self,
        keys: Keys,
        writer: LogWriter,
        gateways: LiveGateways,
        senders: Mapping[Channel, PushSender],
        consumer: ConsumerSettings,
        delivery: DeliverySettings,
        push_concurrency: int = 64,
    ) -> None:
        self._keys = keys
        self._writer = writer
        self._gateways = gateways
        self._senders = senders
        self._consumer = consumer
        self._delivery = delivery
        self._capacity_limit = push_concurrency * INFLIGHT_PER_SLOT
        self._capacity = asyncio.Semaphore(self._capacity_limit)
        self._room = asyncio.Event()
        self._inflight: set[asyncio.Task[Settlement]] = set()
        self._inflight_ids: set[tuple[str, str]] = set()  # (stream, entry id)
        rate = delivery.broadcasts_per_s
        self._broadcasts = TokenBucket(rate, max(1.0, rate), time.monotonic)
        self.lost: set[Unit] = set()  # units whose lease turned out to be gone, this batch
        # The batch's frames per gateway: the caller writes them to the inboxes in front of
        # the batch's settlement, in one round trip (``LogWriter.queue_inboxes``).
        self.inboxes: dict[str, list[Delivery]] = {}

    async def room(self, wanted: int) -> int:
        """How many entries the next read may take (at most ``wanted``): the push slots free
        now, waiting while none is. Reading no more than that keeps entries from being read
        and then left pending, unrefreshed, while they wait for a slot."""
        while len(self._inflight) >= self._capacity_limit:
            self._room.clear()
            await self._room.wait()
        return min(wanted, self._capacity_limit - len(self._inflight))

    async def process(self, batch: list[RawEntry]) -> dict[Unit, Settlement]:
        """Settlements per unit. Units found to have lost their lease are left out (their
        entries belong to the new owner) and listed in ``self.lost``."""
        self.lost = set()
        self.inboxes = {}
        settlements: dict[Unit, Settlement] = defaultdict(Settlement)
        work: list[_Work] = []
        partitions = self._keys.partition_count
        for entry in batch:
            event = self._screen(entry, settlements[entry.unit])
            if event is not None:
                routing = plan(event.payload, entry.unit.index, partitions, event.routed)
                work.append(_Work(entry, event, routing))
        await self._forward(work)
        limited = await self._deliver_websocket(work)
        delivered = 0
        for item in work:
            if item.entry.unit in self.lost:
                continue
            target = settlements[item.entry.unit]
            if limited and item in limited:
                error = f"over BROADCASTS_PER_S ({self._delivery.broadcasts_per_s}/s)"
                target.dead_letters.append((item.entry, BROADCAST_RATE_LIMITED, error))
            elif item.plan.pushes:
                await self._finish(item, target)
            else:  # websocket only (or nothing here): delivered, so acked
                target.acks.append(item.entry.entry_id)
                delivered += item.plan.websocket
        if delivered:
            _WEBSOCKET_DELIVERED.inc(delivered)
        return {unit: s for unit, s in settlements.items() if unit not in self.lost}

    def _screen(self, entry: RawEntry, settlement: Settlement) -> Event | None:
        """Entries that need no delivery attempt are settled here; the rest are returned."""
        if (entry.unit.stream, entry.entry_id) in self._inflight_ids:
            # Reclaimed while its pushes are still in flight here: their task settles it.
            return None
        if entry.fields is None:
            metrics.TRIMMED_PENDING.inc()
            settlement.acks.append(entry.entry_id)
            return None
        if over_delivered(entry.deliveries, self._consumer.max_deliveries):
            error = f"delivered {entry.deliveries} times without success"
            settlement.dead_letters.append((entry, MAX_DELIVERIES, error))
            return None
        decoded = decode_entry(entry.entry_id, entry.fields, self._delivery.max_payload_bytes)
        if isinstance(decoded, Poison):
            log.warning("dead-lettering poison entry %s: %s", entry.entry_id, decoded.reason)
            settlement.dead_letters.append((entry, decoded.reason, decoded.error))
            return None
        return decoded

    # --- forwarding ---------------------------------------------------------------------

    async def _forward(self, work: list[_Work]) -> None:
        """Each entry to each other partition it has targets in, at most once, in order."""
        groups: dict[tuple[Unit, int], list[tuple[str, Fields]]] = defaultdict(list)
        for item in work:
            if not item.plan.forward:
                continue
            fields = item.entry.fields
            assert fields is not None
            origin = f"{item.entry.unit.stream}/{item.entry.entry_id}".encode()
            routed: dict[bytes | str, bytes | str] = {k: v for k, v in fields.items()}
            routed[b"routed_from"] = origin
            for index in item.plan.forward:
                groups[(item.entry.unit, index)].append((item.entry.entry_id, routed))
        if not groups:
            return
        calls = [
            RouteCall(part.stream, part.routed, unit.stream, rows)
            for (unit, index), rows in groups.items()
            for part in (self._keys.partitions[index],)
        ]
        try:
            await self._writer.route(calls)
        except Exception as exc:
            raise RetryBatch(f"forwarding failed: {exc}") from exc
        metrics.ROUTED.inc(sum(len(rows) for rows in groups.values()))

    # --- websocket ----------------------------------------------------------------------

    async def _deliver_websocket(self, work: list[_Work]) -> set[_Work]:
        """Append to the logs and write the inboxes. Returns the ids of broadcast entries
        refused by the rate limit (they are dead-lettered)."""
        batches: dict[Unit, PartitionAppend] = {}
        for item in work:
            routing = item.plan
            if not routing.websocket:
                continue
            payload = item.event.payload
            content = item.content = encode_content(payload)
            if not (routing.users or routing.topic is not None):
                continue
            batch = batches.setdefault(item.entry.unit, PartitionAppend(item.entry.unit))
            dedupe = payload.id is not None and item.event.event_key == payload.id
            targets = [Target(USER, u) for u in routing.users]
            if routing.topic is not None:
                targets.append(Target(TOPIC, routing.topic))
            for target in targets:
                batch.appends.append(
                    Append(
                        target,
                        item.entry.entry_id,
                        payload.event_type,
                        content,
                        item.event.event_key,
                        dedupe,
                    )
                )
        if batches:
            await self._append(list(batches.values()))
        self.inboxes, limited = await self._inbox_deliveries(work, batches)
        return limited

    async def _append(self, batches: list[PartitionAppend]) -> None:
        try:
            await self._writer.append(batches)
        except Exception as exc:
            raise RetryBatch(f"log append failed: {exc}") from exc
        for batch in batches:
            if batch.error is None:
                continue
            if is_lease_error(batch.error):
                log.warning(
                    "lost the lease of %s; leaving its entries to the new owner", batch.unit.name
                )
                self.lost.add(batch.unit)
            else:
                raise RetryBatch(f"log append failed: {batch.error}") from batch.error

    async def _inbox_deliveries(
        self,
        work: list[_Work],
        batches: dict[Unit, PartitionAppend],
    ) -> tuple[dict[str, list[Delivery]], set[_Work]]:
        owners = {
            gid
            for batch in batches.values()
            if batch.unit not in self.lost
            for gids in batch.owners.values()
            for gid in gids
        }
        live = await self._live_owners(batches, owners) if owners else frozenset()
        deliveries: dict[str, list[Delivery]] = defaultdict(list)
        results = {
            unit: iter(zip(batch.appends, batch.results, strict=True))
            for unit, batch in batches.items()
            if unit not in self.lost
        }
        limited: set[_Work] = set()
        now = time.time()
        for item in work:
            routing, entry = item.plan, item.entry
            if entry.unit in self.lost:
                continue
            ts = entry_ms(entry.entry_id)
            payload = item.event.payload
            content = item.content
            for _ in range(len(routing.users) + (routing.topic is not None)):
                append, result = next(results[entry.unit])
                if result.duplicate:
                    metrics.DUPLICATES.inc()
                if not result.log_id:
                    continue
                topic = append.target.name if append.target.kind == TOPIC else None
                frame = event_frame(result.log_id, payload.event_type, content, topic)
                batch = batches[entry.unit]
                for gid in batch.owners.get(append.target, ()):
                    if gid in live:
                        deliveries[gid].append(
                            Delivery(
                                append.target.kind,
                                append.target.name,
                                result.log_id,
                                result.prev_id,
                                ts,
                                frame,
                            )
                        )
            if routing.broadcast:
                if not self._broadcasts.take():
                    limited.add(item)
                    continue
                metrics.BROADCASTS.inc()
                frame = broadcast_frame(payload.event_type, content)
                for gid in await self._gateways.all():
                    deliveries[gid].append(Delivery(BROADCAST, "", "", "", ts, frame))
            if routing.websocket:
                _WEBSOCKET_LATENCY.observe(max(0.0, now - ts / 1000))
        return deliveries, limited

    async def _live_owners(
        self, batches: dict[Unit, PartitionAppend], owners: set[str]
    ) -> frozenset[str]:
        try:
            live = await self._gateways.live(owners)
            stale = [
                (target, gid)
                for batch in batches.values()
                for target, gids in batch.owners.items()
                for gid in gids
                if gid not in live
            ]
            if stale:
                await self._writer.remove_owners(stale)
                metrics.STALE_OWNERS_REMOVED.inc(len(stale))
        except Exception as exc:
            raise RetryBatch(f"reading live gateways failed: {exc}") from exc
        return live

    # --- deciding -----------------------------------------------------------------------

    async def _finish(self, item: _Work, settlement: Settlement) -> None:
        results: list[ChannelResult] = []
        if item.plan.websocket:
            results.append(ChannelResult("websocket", Outcome.DELIVERED))
        jobs = self._push_jobs(item.event, results) if item.plan.pushes else []
        if jobs:
            settlement.deferred.append(await self._deliver_pushes(item, results, jobs))
        else:
            self._settle_one(item.entry, item.event, results, settlement)

    def _settle_one(
        self, entry: RawEntry, event: Event, results: list[ChannelResult], settlement: Settlement
    ) -> None:
        settlement.feedback.extend(
            _feedback(event, r) for r in results if r.outcome is Outcome.DEAD_TOKEN
        )
        for result in results:
            metrics.DELIVERIES.labels(result.channel, result.outcome.value).inc()
        decision = decide(results, entry.deliveries, self._consumer.max_deliveries)
        if decision.action is Action.ACK:
            settlement.acks.append(entry.entry_id)
        elif decision.action is Action.DEAD_LETTER:
            settlement.dead_letters.append((entry, decision.reason, decision.error))
        else:
            delay = backoff_ms(
                entry.deliveries,
                base_ms=self._consumer.retry_base_ms,
                cap_ms=self._consumer.claim_idle_ms,
                retry_after_ms=decision.retry_after_ms,
            )
            settlement.retries.append((entry.entry_id, delay))

    # --- pushes -------------------------------------------------------------------------

    def _push_jobs(self, event: Event, results: list[ChannelResult]) -> list[PushJob]:
        """The pushes to send for an event; pushes that need no send go to ``results``."""
        jobs: list[PushJob] = []
        for channel in event.payload.channels():
            if channel == "websocket":
                continue
            sender = self._senders.get(channel)
            token = event.payload.token()
            if sender is None:
                results.append(ChannelResult(channel, Outcome.SKIPPED, "push_disabled"))
            elif token is None:
                results.append(
                    ChannelResult(
                        channel, Outcome.PERMANENT, MISSING_DEVICE_TOKEN, "no device_token"
                    )
                )
            else:
                jobs.append((sender, _push_request(event, channel, token)))
        return jobs

    async def _deliver_pushes(
        self, item: _Work, results: list[ChannelResult], jobs: list[PushJob]
    ) -> Deferred:
        """Start the pushes of one entry in a detached task, waiting first while too many
        entries are in flight (backpressure on reading)."""
        await self._capacity.acquire()
        entry = item.entry
        task = asyncio.create_task(self._push_and_decide(entry, item.event, results, jobs))
        key = (entry.unit.stream, entry.entry_id)
        self._inflight.add(task)
        self._inflight_ids.add(key)
        task.add_done_callback(self._landed)
        return Deferred(entry.entry_id, task, partial(self._inflight_ids.discard, key))

    def _landed(self, task: asyncio.Task[Settlement]) -> None:
        """A push task is done: its slot is free. Its entry stays "in flight" until its
        decision is in Redis (Deferred.settled): a reclaim in between must not push again."""
        self._inflight.discard(task)
        self._capacity.release()
        self._room.set()

    async def _push_and_decide(
        self, entry: RawEntry, event: Event, results: list[ChannelResult], jobs: list[PushJob]
    ) -> Settlement:
        if len(jobs) == 1:  # the usual case: no gather, no second task
            pushed = [await self._push(event, *jobs[0])]
        else:
            pushed = await asyncio.gather(*(self._push(event, s, r) for s, r in jobs))
        settlement = Settlement()
        self._settle_one(entry, event, [*results, *pushed], settlement)
        return settlement

    async def _push(self, event: Event, sender: PushSender, request: PushRequest) -> ChannelResult:
        try:
            result = await sender.send(request)
        except Exception as exc:
            # Senders answer provider failures with outcomes; this is a bug. Retrying bounds
            # it (MAX_DELIVERIES, then the DLQ) instead of leaving the entry in limbo.
            log.exception("push sender for %s raised", request.channel)
            return ChannelResult(
                request.channel, Outcome.RETRY, SENDER_ERROR, f"{type(exc).__name__}: {exc}"
            )
        if result.outcome is Outcome.DELIVERED and not result.reason:
            metrics.DELIVERY_LATENCY.labels(request.channel).observe(
                max(0.0, time.time() - entry_ms(event.entry_id) / 1000)
            )
        return result


def _push_request(event: Event, channel: Channel, token: str) -> PushRequest:
    user_id = event.payload.user_id
    assert user_id is not None  # push channels need a single user (the schema says so)
    return PushRequest(
        channel=channel,
        user_id=user_id,
        event_key=event.event_key,
        event_type=event.payload.event_type,
        device_token=token,
        content=push_content(event.payload),
        data=event.payload.data,
    )


def _feedback(event: Event, result: ChannelResult) -> dict[str, str]:
    """A dead-token record for the owning service to prune (the full token is needed there)."""
    return {
        "token": event.payload.token() or "",
        "device_type": event.payload.device_type or result.channel.removeprefix("push_"),
        "channel": result.channel,
        "reason": result.reason,
        "detail": result.error,
        "user_id": event.payload.user_id or "",
        "event_key": event.event_key,
        "time_ms": str(int(time.time() * 1000)),
    }
