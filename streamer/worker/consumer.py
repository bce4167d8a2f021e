"""The one owner of XREADGROUP, XAUTOCLAIM, XACK and dead-lettering on the ingress streams.

Everything that changes a consumer group's state goes through a StreamConsumer (one per unit
this worker holds: a partition or the compatibility stream), and the ack / retry /
dead-letter outcome of every entry is counted here. A partition's decisions are carried out
by ``settle.lua``, atomically and only while this worker holds the partition's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import StreamIdT

from streamer.infra import metrics
from streamer.infra.redis import REDIS_ERRORS, LuaScript
from streamer.worker.assignment import COMPAT, Unit
from streamer.worker.delivery import RouteCall, route_args
from streamer.worker.settings import ConsumerSettings

log = logging.getLogger(__name__)

Fields = dict[bytes, bytes]

_SETTLE = LuaScript.load("streamer.lua", "settle.lua")
_ROUTE = LuaScript.load("streamer.lua", "route.lua")
FEEDBACK_MAXLEN = 1_000_000


class LeaseLost(Exception):
    """This worker no longer holds the unit: another worker took over its entries."""


class RawEntry(msgspec.Struct, frozen=True):
    """An entry as read from a unit's stream. ``fields`` is None when the entry was trimmed
    from the stream while pending. (Structs are made per entry: a msgspec Struct is built
    several times faster than a dataclass.)"""

    unit: Unit
    entry_id: str
    fields: Fields | None
    deliveries: int
    reclaimed: bool = False


def _nothing() -> None:
    pass


@dataclass(frozen=True, slots=True)
class Deferred:
    """An entry whose fate a detached task decides later (a push to a provider that may be
    slow); its consumer settles it when the task is done, then calls ``settled`` (until then
    the entry must not be processed again: its decision is not in Redis yet)."""

    entry_id: str
    decided: asyncio.Future[Settlement]
    settled: Callable[[], None] = _nothing


@dataclass(slots=True)
class Settlement:
    """What to do with the entries of one unit's batch, carried out in one round trip."""

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


def is_lease_error(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("LEASE")


class StreamConsumer:
    """This worker in the consumer group of one unit's stream."""

    def __init__(
        self,
        redis: aioredis.Redis,
        unit: Unit,
        group: str,
        settings: ConsumerSettings,
        lease_token: str,
    ) -> None:
        self._redis = redis
        self.unit = unit
        self._group = group
        self._settings = settings
        self._token = lease_token
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0
        self._outstanding: dict[str, Deferred] = {}  # deferred entries not yet settled
        self._decided: list[Deferred] = []
        self._wake = asyncio.Event()
        self._settler: asyncio.Task[None] | None = None
        self.lost = False
        # Whether taking over the previous owner's entries counts as delivering them again
        # (it does unless that owner handed the unit over on purpose).
        self.counting_take_over = True

    @property
    def name(self) -> str:
        return self._settings.worker_id

    @property
    def stream(self) -> str:
        return self.unit.stream

    async def ensure_group(self) -> bool:
        """Create the stream and group when missing. True when they had to be created."""
        try:
            # From 0: entries producers added before any worker existed are delivered too.
            await self._redis.xgroup_create(self.stream, self._group, "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def recreate_group(self) -> None:
        if await self.ensure_group():
            metrics.GROUP_RECREATED.inc()
            log.warning(
                "consumer group %s on %s was missing (Redis lost it?); recreated it",
                self._group,
                self.stream,
            )

    # --- reading --------------------------------------------------------------------------

    async def take_over(self, count: int) -> tuple[list[RawEntry], bool]:
        """The next entries still pending in the group (any consumer's: its earlier owner
        is gone, since this worker holds the lease), oldest first, and whether the pass over
        the group's pending entries is complete. A new owner handles these before anything
        new, which keeps each user's order."""
        if self.counting_take_over:
            entries = await self._claim(count, min_idle_ms=0)
        else:
            entries = await self._claim_quietly(count)
        return entries, self._claim_cursor == "0-0"

    async def _claim_quietly(self, count: int) -> list[RawEntry]:
        """Take pending entries without counting a delivery: read the group's pending list
        (XPENDING), claim those ids with JUSTID (no count), then read their fields. The
        cursor is the last id seen; the pass is complete when a page comes back short."""
        start = "-" if self._claim_cursor == "0-0" else f"({self._claim_cursor}"
        rows = await self._redis.xpending_range(self.stream, self._group, start, "+", count)
        ids = [_text(row["message_id"]) for row in rows]
        self._claim_cursor = ids[-1] if len(ids) == count else "0-0"
        if not ids:
            return []
        await self._touch(ids)
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.stream, min=entry_id, max=entry_id, count=1)
        found = await pipe.execute()
        entries = []
        for row, entry_id, rows_of_entry in zip(rows, ids, found, strict=True):
            fields = rows_of_entry[0][1] if rows_of_entry else None  # None: trimmed meanwhile
            deliveries = int(row["times_delivered"])
            entries.append(RawEntry(self.unit, entry_id, fields, deliveries, reclaimed=True))
        metrics.RECLAIMED.inc(len(entries))
        metrics.EVENTS_CONSUMED.labels("reclaimed").inc(len(entries))
        return entries

    def restart_take_over(self) -> None:
        """Take the unit over again from its first pending entry, without counting a
        delivery (nothing of it was delivered yet)."""
        self._claim_cursor = "0-0"
        self.counting_take_over = False

    def claim_due(self) -> bool:
        return time.monotonic() >= self._next_claim_at

    async def claim(self, count: int) -> list[RawEntry]:
        """One XAUTOCLAIM step for entries idle past CLAIM_IDLE_MS (retries whose backoff
        ran out), following its cursor across calls."""
        claimed = await self._claim(count, min_idle_ms=self._settings.claim_idle_ms)
        if self._claim_cursor == "0-0":
            self._next_claim_at = time.monotonic() + self._claim_interval_s()
        return claimed

    def _claim_interval_s(self) -> float:
        return max(0.05, min(self._settings.claim_idle_ms / 2000, 5.0))

    async def _claim(self, count: int, min_idle_ms: int) -> list[RawEntry]:
        start = self._claim_cursor
        reply = await self._redis.xautoclaim(
            self.stream, self._group, self.name, min_idle_ms, start_id=start, count=count
        )
        cursor = _text(reply[0])
        claimed = [(_text(eid), fields) for eid, fields in reply[1] if eid is not None]
        self._claim_cursor = cursor
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
            RawEntry(self.unit, eid, fields or None, counts.get(eid, 1), reclaimed=True)
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
            self.stream,
            self._group,
            min=start,
            max="+" if cursor == "0-0" else f"({cursor}",
            count=self._settings.read_count * 4,
        )
        candidates = [_text(r["message_id"]) for r in rows if _text(r["message_id"]) not in present]
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in candidates:
            pipe.xrange(self.stream, min=entry_id, max=entry_id, count=1)
        found = await pipe.execute() if candidates else []
        trimmed = [eid for eid, entries in zip(candidates, found, strict=True) if not entries]
        if trimmed:
            await self._redis.xack(self.stream, self._group, *trimmed)
        self._count_trimmed(len(trimmed))

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """Each claimed entry's delivery count, looked up by its exact id (a range query could
        be cut short by other pending entries lying between them)."""
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self.stream, self._group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                counts[_text(row["message_id"])] = int(row["times_delivered"])
        return counts

    # --- settling -------------------------------------------------------------------------

    async def settle(self, settlement: Settlement) -> None:
        """Dead-letter, ack and reschedule in one atomic round trip (``apply``); deferred
        entries are settled in the background as their tasks decide (see ``settled``)."""
        self.defer(settlement.deferred)
        await self.apply(settlement)

    async def apply(self, settlement: Settlement) -> None:
        """Carry out what is decided now, atomically: safe to call again after a failure.
        Raises LeaseLost when another worker took the unit over (nothing changed then)."""
        if settlement:
            await self._apply(settlement)

    def defer(self, deferred: list[Deferred]) -> None:
        if not deferred:
            return
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
            except LeaseLost:
                log.info(
                    "unit %s moved on; %d decided entries left to its new owner",
                    self.unit.name,
                    len(decided),
                )
            except REDIS_ERRORS as exc:
                # The entries stay pending; the owner delivers them again later.
                metrics.REDIS_ERRORS.inc()
                log.warning("could not settle %d deferred entries: %s", len(decided), exc)
            finally:
                for item in decided:
                    item.settled()

    async def _touch(self, entry_ids: list[str]) -> None:
        """Make these pending entries this consumer's and reset their idle time (JUSTID: no
        delivery count)."""
        ids: list[StreamIdT] = list(entry_ids)
        await self._redis.xclaim(self.stream, self._group, self.name, 0, ids, justid=True)

    async def settled(self) -> None:
        """Wait until every deferred entry has been settled (shutdown drains in-flight work)."""
        while self._settler is not None and not self._settler.done():
            await asyncio.shield(self._settler)

    async def _apply(self, settlement: Settlement) -> None:
        if self.unit.index == COMPAT:
            await self._apply_compat(settlement)
        else:
            await self._apply_partition(settlement)
        self.count_settled(settlement)

    async def _apply_partition(self, settlement: Settlement) -> None:
        try:
            await _SETTLE.run(self._redis, *self.settle_call(settlement))
        except ResponseError as exc:
            raise self.failure(exc) from exc

    def settle_call(self, settlement: Settlement) -> tuple[list[str], list[str | int | bytes]]:
        """A partition's ``settle.lua`` call carrying out ``settlement``."""
        u = self.unit
        args: list[str | int | bytes] = [
            self._token,
            self._group,
            self.name,
            self._settings.claim_idle_ms,
        ]
        args += [len(settlement.acks), *settlement.acks]
        args.append(len(settlement.retries))
        for entry_id, delay_ms in settlement.retries:
            args += [entry_id, delay_ms]
        args.append(len(settlement.dead_letters))
        for entry, reason, error in settlement.dead_letters:
            fields = dead_letter_fields(entry, reason, error)
            args += [entry.entry_id, len(fields)]
            for name, value in fields.items():
                args += [name, value]
        args.append(len(settlement.feedback))
        for record in settlement.feedback:
            args.append(len(record))
            for key, text in record.items():
                args += [key, text]
        return [u.lease, u.stream, u.dlq, u.feedback], args

    def failure(self, exc: Exception) -> Exception:
        """What a failed settle call means: LeaseLost when the unit moved on, else ``exc``."""
        if is_lease_error(exc):
            self.lost = True
            return LeaseLost(self.unit.name)
        return exc

    def count_settled(self, settlement: Settlement) -> None:
        metrics.ACKED.inc(len(settlement.acks) + len(settlement.dead_letters))
        for _, reason, _ in settlement.dead_letters:
            metrics.DEAD_LETTERED.labels(reason).inc()

    async def _apply_compat(self, settlement: Settlement) -> None:
        """The compatibility stream lies in another cluster slot than its DLQ: dead letters
        go there through a routing mark (at most once, whatever the retries), then the acks.
        Its entries are only routed here, so there are no retries or feedback."""
        if settlement.dead_letters:
            rows = [
                (entry.entry_id, dead_letter_fields(entry, reason, error))
                for entry, reason, error in settlement.dead_letters
            ]
            call = RouteCall(self.unit.dlq, self.unit.dlq_marks, self.stream, rows)
            await _ROUTE.run(self._redis, *route_args(call))
        ids = settlement.acks + [entry.entry_id for entry, _, _ in settlement.dead_letters]
        if ids:
            await self._redis.xack(self.stream, self._group, *ids)

    async def leave(self) -> None:
        """On a clean exit or hand-over: settle what is in flight, then drop this consumer
        name when nothing is pending for it (else every restart leaves one behind)."""
        await self.settled()
        pending = await self._redis.xpending_range(
            self.stream, self._group, min="-", max="+", count=1, consumername=self.name
        )
        if not pending:
            await self._redis.xgroup_delconsumer(self.stream, self._group, self.name)


Failure = tuple["StreamConsumer", Settlement, BaseException]


def _nothing_first(pipe: object) -> None:
    pass


async def apply_all(
    redis: aioredis.Redis,
    work: Sequence[tuple[StreamConsumer, Settlement]],
    first: Callable[[Any], object] = _nothing_first,
) -> tuple[list[Any], list[Failure]]:
    """Several units' settlements: the partitions' in one pipelined round trip (each call
    atomic on its own), behind the commands ``first`` queues (whose replies come back
    first); the compatibility stream's after them. Returns those replies and the
    settlements that failed, each with its error (LeaseLost when the unit moved on); raises
    when the round trip as a whole failed (nothing or anything may have been carried out:
    every call is safe to repeat)."""
    todo = [(c, s) for c, s in work if s]
    parts = [(c, s) for c, s in todo if c.unit.index != COMPAT]
    calls = [c.settle_call(s) for c, s in parts]
    before, replies = await _SETTLE.run_many_after(redis, first, calls)
    failed: list[Failure] = []
    if parts:
        for (consumer, settlement), reply in zip(parts, replies, strict=True):
            if isinstance(reply, Exception):
                failed.append((consumer, settlement, consumer.failure(reply)))
            else:
                consumer.count_settled(settlement)
    for consumer, settlement in todo:
        if consumer.unit.index == COMPAT:
            try:
                await consumer.apply(settlement)
            except LeaseLost as exc:
                failed.append((consumer, settlement, exc))
            except REDIS_ERRORS as exc:
                failed.append((consumer, settlement, exc))
    return before, failed


async def read_new(
    redis: aioredis.Redis,
    consumers: Sequence[StreamConsumer],
    count: int,
    block_ms: int,
    turn: int = 0,
) -> list[RawEntry]:
    """New entries of several units in one XREADGROUP (their streams must share a node and,
    in Redis Cluster, a slot: pass one consumer there), at most ``count`` in all. Redis
    applies COUNT to each stream, so each gets an equal share; with fewer than one entry
    each, ``count`` streams are read, starting at ``turn`` (round robin). Never more than
    ``count``: what is read stays pending until handled, and reading more than the caller
    has room for would leave entries waiting while later ones go first. (A batch of COUNT
    per stream, 17 streams deep, took the worker ~0.6 s of CPU in one go.)"""
    if not consumers or count < 1:
        return []
    start = turn % len(consumers)
    chosen = [*consumers[start:], *consumers[:start]][: min(len(consumers), count)]
    by_stream = {c.stream: c for c in chosen}
    reply = await redis.xreadgroup(
        chosen[0]._group,
        chosen[0].name,
        {stream: ">" for stream in by_stream},
        count=count // len(by_stream),
        block=block_ms,
    )
    entries: list[RawEntry] = []
    for stream, rows in reply or ():
        unit = by_stream[_text(stream)].unit
        entries += [RawEntry(unit, _text(eid), fields, 1) for eid, fields in rows]
    metrics.EVENTS_CONSUMED.labels("new").inc(len(entries))
    return entries


async def read_new_alone(
    redis: aioredis.Redis, consumer: StreamConsumer, count: int, block_ms: int
) -> tuple[list[RawEntry], bool]:
    """``read_new`` of one unit, and whether, once the read returned, entries of its stream
    were pending for another consumer (a previous owner that lost its lease and whose read
    was still in flight: it took entries after this worker's take-over had looked). Those
    are older than what this read returned and must be handled first: the caller takes the
    unit over again (see ``restart_take_over``) and leaves this read's entries pending for
    that pass, which handles everything in stream order. The check rides in the same round
    trip, after the read."""
    pipe = redis.pipeline(transaction=False)
    pipe.xreadgroup(
        consumer._group, consumer.name, {consumer.stream: ">"}, count=count, block=block_ms
    )
    pipe.xpending(consumer.stream, consumer._group)
    reply, pending = await pipe.execute(raise_on_error=False)
    for result in (reply, pending):
        if isinstance(result, Exception):
            raise result  # as Redis said it (NOGROUP is recognised by its first word)
    entries = [
        RawEntry(consumer.unit, _text(eid), fields, 1)
        for _, rows in reply or ()
        for eid, fields in rows
    ]
    metrics.EVENTS_CONSUMED.labels("new").inc(len(entries))
    others = [c for c in pending.get("consumers") or () if _text(c["name"]) != consumer.name]
    return entries, any(int(c["pending"]) for c in others)


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


def dead_letter_fields(entry: RawEntry, reason: str, error: str) -> dict[bytes | str, bytes | str]:
    fields: dict[bytes | str, bytes | str] = {k: v for k, v in (entry.fields or {}).items()}
    fields.update(
        {
            "reason": reason,
            "error": error[:2000],
            "source_id": entry.entry_id,
            "deliveries": str(entry.deliveries),
        }
    )
    return fields
