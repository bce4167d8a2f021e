"""HTTP publish API test support: settings, an in-process server, requests with a key."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from streamer.api.server import Api, start
from streamer.api.settings import ApiSettings
from streamer.infra.http import HealthTracker
from streamer.infra.settings import Env
from streamer.producer import Producer
from tests.support.processes import StreamerProcess
from tests.support.servers import free_port, streamer_env

API_KEY = "api-tests-key-0123456789"
AUTH = {"Authorization": f"apikey {API_KEY}"}


def api_settings(redis_url: str, **overrides: str) -> ApiSettings:
    env = {"REDIS_URL": redis_url, "API_KEYS": API_KEY, "API_HOST": "127.0.0.1", "API_PORT": "0"}
    env.update(overrides)
    return ApiSettings.from_env(Env(env))


@contextlib.asynccontextmanager
async def running_api(redis_url: str, **overrides: str) -> AsyncIterator[aiohttp.ClientSession]:
    """The API in this event loop on a free port, and a client session for it."""
    settings = api_settings(redis_url, **overrides)
    producer = Producer.from_settings(settings.producer, client_name="test-api")
    api = Api(producer, settings, HealthTracker(settings.health_threshold_s, time.monotonic))
    runner, port = await start(api, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()
        await producer.aclose()


async def post(
    session: aiohttp.ClientSession,
    path: str,
    body: Any,
    headers: dict[str, str] | None = AUTH,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """(status, decoded JSON body, response); ``body`` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else None
    json_body = None if isinstance(body, bytes) else body
    async with session.post(path, data=data, json=json_body, headers=headers) as response:
        decoded = await response.json(content_type=None)
        return response.status, decoded, response


class ApiProcess(StreamerProcess):
    """`streamer api` as a child process on a free port."""

    def __init__(self, redis_url: str, workdir: Path, **extra: str) -> None:
        self.port = free_port()
        env = streamer_env(redis_url, API_KEYS=API_KEY, API_PORT=str(self.port), **extra)
        super().__init__(["api"], env, workdir / "api.log")

    def start(self) -> ApiProcess:
        self.start_healthy(self.port)
        return self
