"""Pytest fixtures for the fake push providers: ``pytest_plugins = ["tests.fakes.plugin"]``.

One private fake APNs and one fake FCM (with its token endpoint) per test session, each on
its own thread and event loop, with credentials the tests make for themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import h1server
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
from tests.fakes.harness import Fake


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
    context = h1server.server_context(push_credentials.cert_file, push_credentials.key_file)
    server = ServerThread(app.handle, context, h1server.serve).start()
    account = push_credentials.service_account(
        tmp_path_factory.mktemp("fcm"), f"https://127.0.0.1:{server.port}/token"
    )
    yield Fake(app, server, account)
    server.stop()
