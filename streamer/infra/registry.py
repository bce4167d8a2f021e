"""Liveness registries: sorted sets of process id -> last heartbeat, on Redis's clock.

Workers and gateways heartbeat into their registry with ``heartbeat.lua``, which stamps the
beat with the registry node's own ``TIME`` and returns the live members judged on that same
clock. Hosts' clocks never enter a liveness judgment, so a process whose clock is behind or
ahead is neither declared dead nor kept alive by mistake.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from streamer.infra.redis import LuaScript

_HEARTBEAT = LuaScript.load("streamer.lua", "heartbeat.lua")

# A member gone this long is dropped from its registry altogether.
FORGET_AFTER_MS = 86400 * 1000


async def beat(
    redis: aioredis.Redis, registry: str, member: str, dead_after_ms: int
) -> tuple[int, list[str]]:
    """Heartbeat ``member`` and return (Redis's now in ms, live members)."""
    reply = await _HEARTBEAT.run(redis, [registry], [member, dead_after_ms, FORGET_AFTER_MS])
    return int(reply[0]), [m.decode() for m in reply[1:]]


async def live(redis: aioredis.Redis, registry: str, dead_after_ms: int) -> tuple[int, list[str]]:
    """Only read: (Redis's now in ms, live members)."""
    return await beat(redis, registry, "", dead_after_ms)
