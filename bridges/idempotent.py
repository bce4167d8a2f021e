"""The bridges' only writer to Redis: a batch of XADDs in one round trip, once.

``bridges.batching`` plans the script calls (one per target stream) and their records; this
module numbers the batches, runs the calls (``lua/xadd_batch.lua``) and maps Redis errors,
once, to ``RetryableError``: the caller keeps the batch un-acked and writes the same batch
again, which resumes where the failed try stopped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from bridges.batching import ScriptCall, digest_buckets, outcomes, plan_calls
from bridges.core import StreamWrite
from streamer.contract.keys import Keys
from streamer.infra.errors import RetryableError
from streamer.infra.redis import REDIS_ERRORS, Args, LuaScript

_XADD_BATCH = LuaScript.load("bridges", "lua/xadd_batch.lua")


@dataclass(frozen=True, slots=True)
class Batch:
    """Writes numbered for one writer: write it until Redis takes it, before the next."""

    seq: int
    writes: Sequence[StreamWrite]
    calls: Sequence[ScriptCall]


class IdempotentWriter:
    """Writes batches, one after the other. Progress records and recorded digests live
    ``marker_ttl_s``. One writer per process: ``instance`` (random by default) names its
    records, so two bridges never mistake each other's batches for their own."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        marker_ttl_s: int,
        *,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = marker_ttl_s
        self._instance = instance or uuid.uuid4().hex[:12]
        self._clock = clock
        self._last_seq = 0

    def batch(self, writes: Sequence[StreamWrite]) -> Batch:
        """The next batch. Batches must be written in the order they were made: a try of a
        batch older than one already written to the same stream writes nothing."""
        self._last_seq += 1
        return Batch(self._last_seq, writes, plan_calls(writes, self._keys, self._instance))

    def write(self, batch: Batch) -> list[bool]:
        """Per write of the batch, in order: True if appended (now or by an earlier try),
        False if skipped as a duplicate.

        Raises RetryableError when Redis did not take all of it; whatever it took is not
        written again when the same batch is written again."""
        if not batch.writes:
            return []
        calls = [self._call(batch, call) for call in batch.calls]
        try:
            replies = _XADD_BATCH.run_many_sync(self._client, calls)
        except REDIS_ERRORS as exc:
            raise RetryableError(f"redis: {exc}") from exc
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            raise RetryableError(f"redis: {failed}") from failed
        return outcomes(batch.calls, replies, len(batch.writes))

    def _call(self, batch: Batch, call: ScriptCall) -> tuple[list[str], Args]:
        entries = [batch.writes[p] for p in call.positions]
        keys = [call.stream, call.progress]
        bucket_ttl_s = 0
        if any(w.digest for w in entries):
            now_s = self._clock()
            buckets, bucket_ttl_s = digest_buckets(self._keys, call.stream, now_s, self._ttl_s)
            keys += buckets
        args: list[str | bytes | int] = [batch.seq, self._ttl_s, bucket_ttl_s]
        for w in entries:
            args += (w.digest or b"", "1" if w.check else "0", len(w.fields))
            for name, value in w.fields.items():
                args += (name, value)
        return keys, args
