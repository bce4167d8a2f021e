"""Helpers to build events and read back what workers wrote."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from streamer.contract.event import payload_decoder
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from streamer.worker.settings import WorkerSettings

KEYS = Keys.from_settings(RedisSettings.from_env(Env({})))


def worker_settings(redis_url: str, **overrides: str) -> WorkerSettings:
    env = {"REDIS_URL": redis_url, "METRICS_PORT": "0", "BLOCK_MS": "50", "WORKER_ID": "w-test"}
    env.update(overrides)
    return WorkerSettings.from_env(Env(env))


def payload(user: str, n: int, **extra: Any) -> bytes:
    body: dict[str, Any] = {"user_id": user, "event_type": "test", "data": {"n": n}}
    body.update(extra)
    return json.dumps(body).encode()


async def add_events(
    redis: aioredis.Redis, payloads: list[bytes], batch: int = 1000, *, direct: bool = False
) -> list[str]:
    """XADD each payload to the compatibility stream (as an unchanged producer does), or with
    ``direct`` to its user's partition stream (as streamer.producer does)."""
    ids: list[str] = []
    for start in range(0, len(payloads), batch):
        pipe = redis.pipeline(transaction=False)
        for raw in payloads[start : start + batch]:
            stream = KEYS.ingress_for(payload_decoder.decode(raw)) if direct else KEYS.stream
            pipe.xadd(stream, {"payload": raw})
        ids.extend(i.decode() for i in await pipe.execute())
    return ids


def ingress_streams(keys: Keys = KEYS) -> list[str]:
    """Every ingress stream: the partitions, then the compatibility stream."""
    return [p.stream for p in keys.partitions] + [keys.stream]


def dead_letter_streams(keys: Keys = KEYS) -> list[str]:
    return [p.dlq for p in keys.partitions] + [keys.dlq]


async def user_log_numbers(redis: aioredis.Redis, user: str) -> list[int]:
    """The data.n of every entry in a user's log, in log order."""
    entries = await redis.xrange(KEYS.user_log(user))
    return [json.loads(fields[b"content"])["n"] for _, fields in entries]


async def dead_letters(redis: aioredis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every dead letter of every DLQ (the partitions', then the compatibility stream's)."""
    entries = []
    for dlq in dead_letter_streams():
        entries += await redis.xrange(dlq)
    return entries


async def dlq_reasons(redis: aioredis.Redis) -> list[str]:
    return [f[b"reason"].decode() for _, f in await dead_letters(redis)]


async def feedback(redis: aioredis.Redis) -> list[dict[bytes, bytes]]:
    """Every dead-token record, of every partition."""
    records = []
    for part in KEYS.partitions:
        records += [fields for _, fields in await redis.xrange(part.feedback)]
    return records


async def pending_count(redis: aioredis.Redis) -> int:
    """Entries read and not yet acked, over every ingress stream."""
    total = 0
    for stream in ingress_streams():
        if await redis.exists(stream):
            groups = await redis.xinfo_groups(stream)
            total += sum(int(g["pending"]) for g in groups)
    return total


async def entries_read(redis: aioredis.Redis) -> int:
    """Entries the consumer groups have read, over every ingress stream."""
    total = 0
    for stream in ingress_streams():
        if await redis.exists(stream):
            total += sum(int(g["entries-read"] or 0) for g in await redis.xinfo_groups(stream))
    return total


def users_in_distinct_partitions(count: int) -> list[str]:
    """``count`` user ids, each in a partition of its own."""
    users: dict[int, str] = {}
    for n in range(1000):
        users.setdefault(KEYS.of_user(f"user{n}").index, f"user{n}")
        if len(users) == count:
            break
    return list(users.values())
