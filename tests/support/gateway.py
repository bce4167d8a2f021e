"""Gateway test support: tokens, settings, in-process and subprocess gateways, clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from streamer.contract.inbox import BATCH_FIELD, USER, Delivery, encode_batch
from streamer.contract.websocket import event_frame
from streamer.gateway.server import Gateway
from streamer.gateway.settings import GatewaySettings
from streamer.infra.settings import Env
from streamer.worker.main import Worker
from tests.support.events import KEYS, add_events, payload, worker_settings
from tests.support.processes import StreamerProcess
from tests.support.servers import free_port, streamer_env

SECRET = "gateway-tests-secret-0123456789abcdef"


def token(user: str, ttl_s: float = 300, secret: str = SECRET, **claims: Any) -> str:
    body: dict[str, Any] = {"sub": user, "exp": int(time.time() + ttl_s)}
    body.update(claims)
    return jwt.encode(body, secret, "HS256")


def gateway_settings(redis_url: str, **overrides: str) -> GatewaySettings:
    env = {
        "REDIS_URL": redis_url,
        "JWT_SECRET": SECRET,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": "0",
        "GATEWAY_ID": "gw-test",
        "GATEWAY_BLOCK_MS": "100",
        "WS_RESUME_WAIT_MS": "50",
        "WS_CLOSE_TIMEOUT_S": "2",
    }
    env.update(overrides)
    return GatewaySettings.from_env(Env(env))


@contextlib.asynccontextmanager
async def running_gateway(redis_url: str, **overrides: str) -> AsyncIterator[Gateway]:
    """A gateway in this event loop on a free port, with its own Redis client."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    gateway = Gateway(client, gateway_settings(redis_url, **overrides))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
        await client.aclose()


def ws_url(port: int, user: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{port}/ws/{user}" + (f"?{params}" if params else "")


async def open_socket(port: int, user: str, **query: str) -> ClientConnection:
    """A client socket authenticated with a valid ?token= (unless one is given)."""
    query.setdefault("token", token(user))
    return await connect(ws_url(port, user, **query), open_timeout=5, close_timeout=2)


async def receive(
    conn: ClientConnection, count: int, within_s: float = 5.0
) -> list[dict[str, Any]]:
    """The next ``count`` frames, decoded; fails if they do not arrive in time."""
    frames = []
    async with asyncio.timeout(within_s):
        while len(frames) < count:
            frames.append(json.loads(await conn.recv()))
    return frames


async def receive_until_recovery(
    conn: ClientConnection, within_s: float = 5.0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Event frames up to the ``_recovery`` frame, and that frame."""
    events = []
    async with asyncio.timeout(within_s):
        while True:
            frame = json.loads(await conn.recv())
            if frame.get("type") == "_recovery":
                return events, frame
            events.append(frame)


async def publish(
    redis: aioredis.Redis, redis_url: str, user: str, numbers: range, **extra: str
) -> None:
    """XADD events with data.n = each number, then run a worker until the stream is drained."""
    await add_events(redis, [payload(user, n) for n in numbers])
    await Worker(redis, worker_settings(redis_url, **extra)).drain()


async def last_seen_then_offline(
    redis: aioredis.Redis, redis_url: str, port: int, user: str, **extra: str
) -> str:
    """Connect, receive event 0 live, disconnect: the id a client would resume from."""
    conn = await open_socket(port, user)
    await publish(redis, redis_url, user, range(1), **extra)
    [seen] = await receive(conn, 1)
    await conn.close()
    return str(seen["id"])


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [f["content"]["n"] for f in frames]


async def owner_count(redis: aioredis.Redis, user: str, gateway_id: str) -> int:
    value = await redis.hget(KEYS.owners(user), gateway_id)
    return 0 if value is None else int(value)


class GatewayProcess(StreamerProcess):
    """`streamer gateway` as a child process on a free port; restartable on that port."""

    def __init__(
        self, redis_url: str, gateway_id: str, workdir: Path, *, secret: str = SECRET, **extra: str
    ) -> None:
        self.port = free_port()
        self.gateway_id = gateway_id
        defaults = {"GATEWAY_BLOCK_MS": "100", "WS_RESUME_WAIT_MS": "50", "WS_CLOSE_TIMEOUT_S": "2"}
        env = streamer_env(
            redis_url,
            JWT_SECRET=secret,
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            GATEWAY_ID=gateway_id,
            **{**defaults, **extra},
        )
        super().__init__(["gateway"], env, workdir / f"{gateway_id}.log")

    def start(self) -> GatewayProcess:
        self.start_healthy(self.port)
        return self


@dataclass(frozen=True, slots=True)
class LogEntry:
    user: str
    n: int
    log_id: str
    prev_id: str


async def append_to_log(redis: aioredis.Redis, user: str, n: int) -> LogEntry:
    """Append an event to a user's log as a worker would (data {"n": n}), without a worker."""
    log = KEYS.user_log(user)
    newest = await redis.xrevrange(log, count=1)
    prev = newest[0][0].decode() if newest else ""
    fields = {
        "type": "test",
        "content": json.dumps({"n": n}),
        "event": f"manual-{n}",
        "source": "0-1",
    }
    log_id = (await redis.xadd(log, fields)).decode()  # type: ignore[arg-type]
    return LogEntry(user, n, log_id, prev)


async def deliver_to_inbox(redis: aioredis.Redis, gateway_id: str, entries: list[LogEntry]) -> None:
    """One inbox entry holding these deliveries, in this order, as a worker writes it."""
    batch = [
        Delivery(
            USER,
            e.user,
            e.log_id,
            e.prev_id,
            int(time.time() * 1000),
            event_frame(e.log_id, "test", json.dumps({"n": e.n}).encode()),
        )
        for e in entries
    ]
    await redis.xadd(KEYS.inbox(gateway_id), {BATCH_FIELD: encode_batch(batch)})
