"""Process one batch of stream entries: decode, deliver to every target channel, decide.

The processor never acks; it returns a Settlement that the consumer carries out. Pushes
run in detached tasks (bounded in number) whose entries the consumer settles as they are
decided, so a slow provider delays only the entries waiting for it, not the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from functools import partial

from streamer.contract.decode import Event, Poison, decode_entry
from streamer.contract.event import Channel, push_content
from streamer.contract.ids import entry_ms
from streamer.core.policy import (
    MAX_DELIVERIES,
    Action,
    ChannelResult,
    Outcome,
    backoff_ms,
    decide,
    over_delivered,
)
from streamer.infra import metrics
from streamer.push.base import PushRequest, PushSender
from streamer.worker.consumer import Deferred, RawEntry, Settlement
from streamer.worker.settings import ConsumerSettings, DeliverySettings
from streamer.worker.userlog import Appended, InboxDelivery, LiveGateways, UserLogWriter

log = logging.getLogger(__name__)

MISSING_DEVICE_TOKEN = "missing_device_token"
REDIS_ERROR = "redis_error"
SENDER_ERROR = "sender_error"
# Entries with pushes in flight, per unit of push_concurrency: enough to keep providers busy
# across several batches, while bounding memory when one is slow (then reading waits).
INFLIGHT_PER_SLOT = 16

PushJob = tuple[PushSender, PushRequest]


class BatchProcessor:
    def __init__(
        self,
        userlog: UserLogWriter,
        gateways: LiveGateways,
        senders: Mapping[Channel, PushSender],
        consumer: ConsumerSettings,
        delivery: DeliverySettings,
        push_concurrency: int = 64,
    ) -> None:
        self._userlog = userlog
        self._gateways = gateways
        self._senders = senders
        self._consumer = consumer
        self._delivery = delivery
        self._capacity_limit = push_concurrency * INFLIGHT_PER_SLOT
        self._capacity = asyncio.Semaphore(self._capacity_limit)
        self._room = asyncio.Event()
        self._inflight: set[asyncio.Task[Settlement]] = set()
        self._inflight_ids: set[str] = set()

    async def room(self, wanted: int) -> int:
        """How many entries the next read may take: waits until ``wanted`` (at most the
        capacity) push slots are free. Waiting here, before reading, keeps entries from being
        read and then left pending, unrefreshed, while they wait for a slot (other workers
        would reclaim and push them again)."""
        wanted = min(wanted, self._capacity_limit)
        while self._capacity_limit - len(self._inflight) < wanted:
            self._room.clear()
            await self._room.wait()
        return self._capacity_limit - len(self._inflight)

    async def process(self, batch: list[RawEntry]) -> Settlement:
        settlement = Settlement()
        events: list[tuple[RawEntry, Event]] = []
        for entry in batch:
            verdict = self._screen(entry, settlement)
            if verdict is not None:
                events.append((entry, verdict))
        results: dict[str, list[ChannelResult]] = defaultdict(list)
        websocket = [e for _, e in events if "websocket" in e.payload.channels()]
        for entry_id, result in await self._deliver_websocket(websocket):
            results[entry_id].append(result)
        for entry, event in events:
            jobs = self._push_jobs(event, results[event.entry_id])
            if jobs:
                settlement.deferred.append(
                    await self._deliver_pushes(entry, event, results[event.entry_id], jobs)
                )
            else:
                self._settle_one(entry, event, results[event.entry_id], settlement)
        return settlement

    def _screen(self, entry: RawEntry, settlement: Settlement) -> Event | None:
        """Entries that need no delivery attempt are settled here; the rest are returned."""
        if entry.entry_id in self._inflight_ids:
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

    async def _deliver_websocket(self, events: list[Event]) -> list[tuple[str, ChannelResult]]:
        appended = await self._userlog.append(events)
        done: dict[str, ChannelResult] = {}
        inbox: list[tuple[Event, InboxDelivery]] = []
        owners_by_event: list[tuple[Event, Appended]] = []
        for event, result in zip(events, appended, strict=True):
            if isinstance(result, Exception):
                log.warning("user log append failed for %s: %s", event.entry_id, result)
                done[event.entry_id] = _retry("websocket", REDIS_ERROR, str(result))
                continue
            if result.duplicate:
                metrics.DUPLICATES.inc()
            owners_by_event.append((event, result))
        live = await self._live_owners(owners_by_event)
        for event, result in owners_by_event:
            for gid in result.owners:
                if gid in live:
                    inbox.append((event, InboxDelivery.of(gid, event, result)))
        errors = await self._userlog.deliver_to_inboxes([d for _, d in inbox])
        for (event, _), error in zip(inbox, errors, strict=True):
            if error is not None:
                done[event.entry_id] = _retry("websocket", REDIS_ERROR, str(error))
        metrics.INBOX_APPENDS.inc(len(inbox) - sum(e is not None for e in errors))
        now = time.time()
        for event, result in owners_by_event:
            if event.entry_id not in done:
                done[event.entry_id] = ChannelResult("websocket", Outcome.DELIVERED)
                if not result.duplicate:
                    metrics.DELIVERY_LATENCY.labels("websocket").observe(
                        max(0.0, now - entry_ms(event.entry_id) / 1000)
                    )
        return list(done.items())

    async def _live_owners(self, appended: list[tuple[Event, Appended]]) -> frozenset[str]:
        owners = {gid for _, a in appended for gid in a.owners}
        if not owners:
            return frozenset()
        live = await self._gateways.live(owners)
        stale = [
            (e.payload.user_id, gid) for e, a in appended for gid in a.owners if gid not in live
        ]
        if stale:
            await self._userlog.remove_owners(stale)
            metrics.STALE_OWNERS_REMOVED.inc(len(stale))
        return live

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
        self, entry: RawEntry, event: Event, results: list[ChannelResult], jobs: list[PushJob]
    ) -> Deferred:
        """Start the pushes of one entry in a detached task, waiting first while too many
        entries are in flight (backpressure on reading)."""
        await self._capacity.acquire()
        task = asyncio.create_task(self._push_and_decide(entry, event, results, jobs))
        self._inflight.add(task)
        self._inflight_ids.add(entry.entry_id)
        task.add_done_callback(partial(self._landed, entry.entry_id))
        return Deferred(entry.entry_id, task)

    def _landed(self, entry_id: str, task: asyncio.Task[Settlement]) -> None:
        self._inflight.discard(task)
        self._inflight_ids.discard(entry_id)
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
            return _retry(request.channel, SENDER_ERROR, f"{type(exc).__name__}: {exc}")
        if result.outcome is Outcome.DELIVERED and not result.reason:
            metrics.DELIVERY_LATENCY.labels(request.channel).observe(
                max(0.0, time.time() - entry_ms(event.entry_id) / 1000)
            )
        return result


def _push_request(event: Event, channel: Channel, token: str) -> PushRequest:
    return PushRequest(
        channel=channel,
        user_id=event.payload.user_id,
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
        "user_id": event.payload.user_id,
        "event_key": event.event_key,
        "time_ms": str(int(time.time() * 1000)),
    }


def _retry(channel: Channel, reason: str, error: str) -> ChannelResult:
    return ChannelResult(channel, Outcome.RETRY, reason, error)
