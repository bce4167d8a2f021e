"""The one owner of XREADGROUP, XAUTOCLAIM, XACK and dead-lettering on the ingress stream.

Everything that changes the consumer group's state goes through StreamConsumer, and the
ack / retry / dead-letter outcome of every entry is counted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT, StreamIdT

from streamer.contract.keys import Keys
from streamer.infra import metrics
from streamer.infra.redis import REDIS_ERRORS
from streamer.worker.settings import ConsumerSettings

log = logging.getLogger(__name__)

Fields = dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class RawEntry:
    """An entry as read from the stream. ``fields`` is None when the entry was trimmed
    from the stream while pending."""

    entry_id: str
    fields: Fields | None
    deliveries: int
    reclaimed: bool = False


@dataclass(frozen=True, slots=True)
class Deferred:
    """An entry whose fate a detached task decides later (a push to a provider that may be
    slow); the consumer settles it when the task is done."""

    entry_id: str
    decided: asyncio.Future[Settlement]


@dataclass(slots=True)
class Settlement:
    """What to do with the entries of one batch, carried out in one round trip."""

    acks: list[str] = field(default_factory=list)
    dead_letters: list[tuple[RawEntry, str, str]] = field(default_factory=list)
    retries: list[tuple[str, int]] = field(default_factory=list)  # (entry id, delay ms)
    feedback: list[dict[str, str]] = field(default_factory=list)  # dead device tokens
    deferred: list[Deferred] = field(default_factory=list)  # settled when decided

    def __bool__(self) -> bool:
        """Whether there is anything to carry out now (deferred entries come later)."""
        return bool(self.acks or self.dead_letters or self.retries or self.feedback)

    def merge(self, other: Settlement) -> None:
        self.acks += other.acks
        self.dead_letters += other.dead_letters
        self.retries += other.retries
        self.feedback += other.feedback
        self.deferred += other.deferred


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamConsumer:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: ConsumerSettings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0
        self._outstanding: dict[str, Deferred] = {}  # deferred entries not yet settled
        self._decided: list[Deferred] = []
        self._wake = asyncio.Event()
        self._settler: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._settings.worker_id

    async def ensure_group(self) -> bool:
        """Create the stream and group when missing. True when they had to be created."""
        try:
            # From 0: entries producers added before any worker existed are delivered too.
            await self._redis.xgroup_create(self._keys.stream, self._keys.group, "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def _recreate_group(self) -> None:
        created = await self.ensure_group()
        if created:
            metrics.GROUP_RECREATED.inc()
            log.warning(
                "consumer group %s on %s was missing (Redis lost it?); recreated it",
                self._keys.group,
                self._keys.stream,
            )

    async def next_batch(self, limit: int | None = None) -> list[RawEntry]:
        """Reclaimed entries when a reclaim is due, else new entries (blocking up to block_ms);
        at most ``limit`` (default READ_COUNT)."""
        count = min(limit or self._settings.read_count, self._settings.read_count)
        try:
            if time.monotonic() >= self._next_claim_at:
                claimed = await self._claim(count)
                if claimed:
                    return claimed
            return await self._read(count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._recreate_group()
            return []

    async def _read(self, count: int) -> list[RawEntry]:
        reply = await self._redis.xreadgroup(
            self._keys.group,
            self.name,
            {self._keys.stream: ">"},
            count=count,
            block=self._settings.block_ms,
        )
        if not reply:
            return []
        entries = [RawEntry(_text(eid), fields, 1) for eid, fields in reply[0][1]]
        metrics.EVENTS_CONSUMED.labels("new").inc(len(entries))
        return entries

    def _claim_interval_s(self) -> float:
        return max(0.05, min(self._settings.claim_idle_ms / 2000, 5.0))

    async def _claim(self, count: int) -> list[RawEntry]:
        """One XAUTOCLAIM step, following its cursor across calls."""
        start = self._claim_cursor
        reply = await self._redis.xautoclaim(
            self._keys.stream,
            self._keys.group,
            self.name,
            self._settings.claim_idle_ms,
            start_id=start,
            count=count,
        )
        cursor = _text(reply[0])
        claimed = [(_text(eid), fields) for eid, fields in reply[1] if eid is not None]
        self._claim_cursor = cursor
        if cursor == "0-0":
            self._next_claim_at = time.monotonic() + self._claim_interval_s()
        if len(reply) > 2:
            # Redis 7 drops trimmed entries from the PEL itself and reports them here.
            self._count_trimmed(len(reply[2]))
        elif len(claimed) < len(reply[1]):
            # Redis 6.2 claims trimmed entries as nils without ids: find and ack them.
            await self._ack_trimmed(start, cursor, {eid for eid, _ in claimed})
        if not claimed:
            return []
        counts = await self._delivery_counts([eid for eid, _ in claimed])
        entries = [
            RawEntry(eid, fields or None, counts.get(eid, 1), reclaimed=True)
            for eid, fields in claimed
        ]
        metrics.RECLAIMED.inc(len(entries))
        metrics.EVENTS_CONSUMED.labels("reclaimed").inc(len(entries))
        return entries

    def _count_trimmed(self, count: int) -> None:
        if count:
            metrics.TRIMMED_PENDING.inc(count)
            log.warning("%d pending entries were trimmed from the stream before delivery", count)

    async def _ack_trimmed(self, start: str, cursor: str, present: set[str]) -> None:
        rows = await self._redis.xpending_range(
            self._keys.stream,
            self._keys.group,
            min=start,
            max="+" if cursor == "0-0" else f"({cursor}",
            count=self._settings.read_count * 4,
            consumername=self.name,
        )
        candidates = [_text(r["message_id"]) for r in rows if _text(r["message_id"]) not in present]
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in candidates:
            pipe.xrange(self._keys.stream, min=entry_id, max=entry_id, count=1)
        found = await pipe.execute() if candidates else []
        trimmed = [eid for eid, entries in zip(candidates, found, strict=True) if not entries]
        if trimmed:
            await self._redis.xack(self._keys.stream, self._keys.group, *trimmed)
        self._count_trimmed(len(trimmed))

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """Each claimed entry's delivery count, looked up by its exact id (a range query could
        be cut short by this consumer's other pending entries lying between them)."""
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self._keys.stream, self._keys.group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                counts[_text(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def settle(self, settlement: Settlement) -> None:
        """Dead-letter, ack and reschedule in one round trip. Dead letters and their acks
        are one transaction, so a crash never dead-letters an entry twice. Deferred entries
        are settled in the background as their tasks decide (see ``settled``)."""
        if settlement.deferred:
            self._defer(settlement.deferred)
        if settlement:
            await self._apply(settlement)

    def _defer(self, deferred: list[Deferred]) -> None:
        for item in deferred:
            self._outstanding[item.entry_id] = item
            item.decided.add_done_callback(partial(self._on_decided, item))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_deferred())

    def _on_decided(self, item: Deferred, _: object) -> None:
        self._decided.append(item)
        self._wake.set()

    async def _settle_deferred(self) -> None:
        """Settle deferred entries as they are decided, coalescing those decided together
        into one round trip. Entries still undecided are kept from being reclaimed by
        refreshing their idle time well before CLAIM_IDLE_MS."""
        touch_s = max(0.01, self._settings.claim_idle_ms / 3000)
        touch_at = time.monotonic() + touch_s
        while self._outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, touch_at - time.monotonic()))
            self._wake.clear()
            decided, self._decided = self._decided, []
            merged = Settlement()
            for item in decided:
                self._outstanding.pop(item.entry_id, None)
                merged.merge(_decision(item))
            try:
                if merged:
                    await self._apply(merged)
                if self._outstanding and time.monotonic() >= touch_at:
                    touch_at = time.monotonic() + touch_s
                    await self._touch([*self._outstanding])
            except REDIS_ERRORS as exc:
                # The entries stay pending; XAUTOCLAIM delivers them again later.
                metrics.REDIS_ERRORS.inc()
                log.warning("could not settle %d deferred entries: %s", len(decided), exc)

    async def _touch(self, entry_ids: list[StreamIdT]) -> None:
        """Reset the idle time of entries still in flight here (JUSTID: no delivery count)."""
        await self._redis.xclaim(
            self._keys.stream, self._keys.group, self.name, 0, entry_ids, justid=True
        )

    async def settled(self) -> None:
        """Wait until every deferred entry has been settled (shutdown drains in-flight work)."""
        while self._settler is not None and not self._settler.done():
            await asyncio.shield(self._settler)

    async def _apply(self, settlement: Settlement) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for record in settlement.feedback:
            pipe.xadd(self._keys.feedback, record, maxlen=1_000_000, approximate=True)  # type: ignore[arg-type]
        for entry, reason, error in settlement.dead_letters:
            pipe.xadd(self._keys.dlq, _dead_letter_fields(entry, reason, error))
        ack_ids = settlement.acks + [entry.entry_id for entry, _, _ in settlement.dead_letters]
        if ack_ids:
            pipe.xack(self._keys.stream, self._keys.group, *ack_ids)
        for entry_id, delay_ms in settlement.retries:
            # Backdate the entry's idle time so XAUTOCLAIM picks it up after delay_ms.
            idle = max(0, self._settings.claim_idle_ms - delay_ms)
            pipe.xclaim(
                self._keys.stream,
                self._keys.group,
                self.name,
                0,
                [entry_id],
                idle=idle,
                justid=True,
            )
        await pipe.execute()
        metrics.ACKED.inc(len(ack_ids))
        for _, reason, _ in settlement.dead_letters:
            metrics.DEAD_LETTERED.labels(reason).inc()

    async def heartbeat(self) -> None:
        await self._redis.zadd(self._keys.workers, {self.name: int(time.time() * 1000)})

    async def leave(self) -> None:
        """On clean exit: settle the entries still in flight, then drop this worker from the
        live set (its PEL is empty by then)."""
        await self.settled()
        await self._redis.zrem(self._keys.workers, self.name)
        # Consumer names are per process (host-pid): drop ours, or every restart leaves one
        # behind in XINFO CONSUMERS. Only when nothing is pending, so no entry loses its owner.
        pending = await self._redis.xpending_range(
            self._keys.stream, self._keys.group, min="-", max="+", count=1, consumername=self.name
        )
        if not pending:
            await self._redis.xgroup_delconsumer(self._keys.stream, self._keys.group, self.name)


def _decision(item: Deferred) -> Settlement:
    """A decided entry's settlement; a task that crashed leaves its entry pending (it is
    delivered again later and ends in the DLQ if it keeps crashing)."""
    if item.decided.cancelled():
        return Settlement()
    exc = item.decided.exception()
    if exc is not None:
        log.error("delivery task for %s failed", item.entry_id, exc_info=exc)
        return Settlement()
    return item.decided.result()


def _dead_letter_fields(entry: RawEntry, reason: str, error: str) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {k: v for k, v in (entry.fields or {}).items()}
    fields.update(
        {
            "reason": reason,
            "error": error[:2000],
            "source_id": entry.entry_id,
            "deliveries": str(entry.deliveries),
        }
    )
    return fields
