"""Pytest fixtures for the fake push providers (import them into a test module).

Each fake runs in its own thread with its own event loop; tests read its counters after
waiting on a condition, and make device tokens unique per test so state never leaks.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from tests.fakes.apns import FakeApns
from tests.fakes.certs import (
    APNS_KEY_ID,
    APNS_TEAM_ID,
    APNS_TOPIC,
    FCM_CLIENT_EMAIL,
    FCM_PROJECT_ID,
    PushCredentials,
    make_credentials,
)
from tests.fakes.fcm import FakeFcm
from tests.fakes.h2server import ServerThread, server_context

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


@pytest.fixture(scope="session")
def push_credentials(tmp_path_factory: pytest.TempPathFactory) -> PushCredentials:
    return make_credentials(tmp_path_factory.mktemp("push-credentials"))


@pytest.fixture(scope="session")
def fake_apns(push_credentials: PushCredentials) -> Iterator[Fake[FakeApns]]:
    app = FakeApns(push_credentials.apns_public_pem, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC)
    context = server_context(push_credentials.cert_file, push_credentials.key_file)
    server = ServerThread(app.handle, context).start()
    yield Fake(app, server)
    server.stop()


@pytest.fixture(scope="session")
def fake_fcm(
    push_credentials: PushCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fake[FakeFcm]]:
    app = FakeFcm(push_credentials.fcm_public_pem, FCM_CLIENT_EMAIL, FCM_PROJECT_ID)
    context = server_context(push_credentials.cert_file, push_credentials.key_file)
    server = ServerThread(app.handle, context).start()
    account = push_credentials.service_account(
        tmp_path_factory.mktemp("fcm"), f"https://127.0.0.1:{server.port}/token"
    )
    yield Fake(app, server, account)
    server.stop()


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
