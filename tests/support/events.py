"""Helpers to build events and read back what workers wrote."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

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


async def add_events(redis: aioredis.Redis, payloads: list[bytes], batch: int = 1000) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(payloads), batch):
        pipe = redis.pipeline(transaction=False)
        for raw in payloads[start : start + batch]:
            pipe.xadd(KEYS.stream, {"payload": raw})
        ids.extend(i.decode() for i in await pipe.execute())
    return ids


async def user_log_numbers(redis: aioredis.Redis, user: str) -> list[int]:
    """The data.n of every entry in a user's log, in log order."""
    entries = await redis.xrange(KEYS.user_log(user))
    return [json.loads(fields[b"content"])["n"] for _, fields in entries]


async def dlq_reasons(redis: aioredis.Redis) -> list[str]:
    return [f[b"reason"].decode() for _, f in await redis.xrange(KEYS.dlq)]


async def pending_count(redis: aioredis.Redis) -> int:
    return int((await redis.xpending(KEYS.stream, KEYS.group))["pending"])
