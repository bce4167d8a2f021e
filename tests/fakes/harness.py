"""Helpers for tests against the fake push providers (fixtures: tests.fakes.plugin).

Each fake runs in its own thread with its own event loop; tests read its counters after
waiting on a condition, and make device tokens unique per test so state never leaks.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from streamer.contract.event import NotificationPayload, push_content
from streamer.infra.settings import Env
from streamer.push.apns import ApnsClient
from streamer.push.base import PushRequest
from streamer.push.factory import build_push_senders
from streamer.push.fcm import FcmClient
from streamer.push.observe import PushObserver
from streamer.push.registry import PROVIDERS
from streamer.push.sender import HttpPushSender
from streamer.push.settings import PushSettings
from streamer.worker.main import Worker
from streamer.worker.settings import WorkerSettings
from tests.fakes.apns import FakeApns
from tests.fakes.certs import (
    APNS_KEY_ID,
    APNS_TEAM_ID,
    APNS_TOPIC,
    FCM_PROJECT_ID,
    PushCredentials,
)
from tests.fakes.fcm import FakeFcm
from tests.fakes.h2server import ServerThread
from tests.support.events import dead_letters, feedback

App = TypeVar("App", FakeApns, FakeFcm)


@dataclass
class Fake(Generic[App]):
    app: App
    server: ServerThread
    service_account: Path | None = None  # FCM: a service-account file for this fake

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def run(self, method: str) -> None:
        """Call app.<method>() on the fake's loop and wait until it ran."""
        done = threading.Event()

        def call() -> None:
            getattr(self.app, method)()
            done.set()

        self.server.call(call)
        assert done.wait(5), f"fake did not run {method}"


def token(prefix: str) -> str:
    """A device token unique to the calling test, with a behaviour prefix."""
    return f"{prefix}-{uuid.uuid4().hex}"


def push_env(
    redis_url: str,
    credentials: PushCredentials,
    apns: Fake[FakeApns] | None = None,
    fcm: Fake[FakeFcm] | None = None,
    **overrides: str,
) -> dict[str, str]:
    """Environment for build_push_senders / the worker, pointing at the fakes."""
    env = {
        "REDIS_URL": redis_url,
        "METRICS_PORT": "0",
        "BLOCK_MS": "50",
        "WORKER_ID": "w-push",
        "PUSH_CA_FILE": str(credentials.ca_file),
        "PUSH_TIMEOUT_S": "5",
    }
    if apns is not None:
        env.update(
            ENABLE_APNS_PUSH="true",
            APNS_ENDPOINT=apns.endpoint,
            APNS_CERT_FILE=str(credentials.apns_key_file),
            APNS_KEY_ID=APNS_KEY_ID,
            APNS_TEAM_ID=APNS_TEAM_ID,
            APNS_TOPIC=APNS_TOPIC,
        )
    if fcm is not None:
        assert fcm.service_account is not None
        env.update(
            ENABLE_FCM_PUSH="true",
            FCM_ENDPOINT=f"https://{fcm.endpoint}",
            FCM_SERVICE_ACCOUNT_FILE=str(fcm.service_account),
            FCM_PROJECT_ID=FCM_PROJECT_ID,
        )
    env.update(overrides)
    return env


@contextlib.asynccontextmanager
async def push_worker(redis: aioredis.Redis, env: dict[str, str]) -> AsyncIterator[Worker]:
    """A worker with the push senders the environment enables; senders closed after."""
    senders = build_push_senders(Env(env))
    try:
        yield Worker(redis, WorkerSettings.from_env(Env(env)), senders)
    finally:
        for sender in senders.values():
            await sender.close()


def provider_sender(
    env: dict[str, str], name: str, clock: Callable[[], float] = time.time
) -> HttpPushSender:
    """One provider's sender as the factory builds it, without markers, with a test clock.
    Create inside the running loop."""
    settings = PushSettings.from_env(Env(env))
    entry = next(p for p in PROVIDERS if p.name == name)
    observer = PushObserver(name)
    client_class = {"apns": ApnsClient, "fcm": FcmClient}[name]
    client = client_class(settings.providers[name], settings, observer.credential_refreshed, clock)
    return HttpPushSender(entry, client, settings, observer)


def push_request(channel: str, device_token: str, **data: Any) -> PushRequest:
    payload = NotificationPayload(user_id="u1", event_type="done", data=data)
    content = push_content(payload)
    return PushRequest(channel, "u1", "e1", "done", device_token, content, payload.data)


def push_event(device_token: str, channels: list[str], n: int = 0, **data: Any) -> bytes:
    body = {
        "user_id": f"u{n}",
        "event_type": "ai_generation_done",
        "data": {"title": "Your image is ready", "body": "Tap to open", "n": n, **data},
        "target_channels": channels,
        "device_token": device_token,
    }
    return json.dumps(body).encode()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def fates(redis: aioredis.Redis) -> dict[str, tuple[str, str]]:
    """Device token -> ("dlq", reason) or ("feedback", reason), from what the worker wrote."""
    seen: dict[str, tuple[str, str]] = {}
    for _, fields in await dead_letters(redis):
        token = json.loads(fields[b"payload"])["device_token"]
        seen[token] = ("dlq", fields[b"reason"].decode())
    for fields in await feedback(redis):
        seen[fields[b"token"].decode()] = ("feedback", fields[b"reason"].decode())
    return seen
