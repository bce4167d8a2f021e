"""FCM settings: the service account, the project, the endpoint, the legacy key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.fcm.settings import LEGACY_KEY_MESSAGE
from streamer.push.settings import PushSettings
from tests.fakes.certs import PushCredentials, make_credentials


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> PushCredentials:
    return make_credentials(tmp_path_factory.mktemp("fcm-settings"))


def test_the_legacy_server_key_alone_fails_with_guidance() -> None:
    """FCM_API_KEY without a service account fails at start-up saying what to configure."""
    with pytest.raises(ConfigError) as raised:
        PushSettings.from_env(Env({"ENABLE_FCM_PUSH": "1", "FCM_API_KEY": "AAAA-legacy"}))
    assert str(raised.value) == LEGACY_KEY_MESSAGE
    assert (
        "FCM_SERVICE_ACCOUNT_FILE" in LEGACY_KEY_MESSAGE and "FCM_PROJECT_ID" in LEGACY_KEY_MESSAGE
    )


def test_the_project_comes_from_the_variable_or_the_account(
    credentials: PushCredentials, tmp_path: Path
) -> None:
    """No project_id in the account and no FCM_PROJECT_ID is named; either one is enough."""
    account = credentials.service_account(tmp_path, "https://127.0.0.1:1/token")
    info = json.loads(account.read_text())
    from_account = PushSettings.from_env(
        Env({"ENABLE_FCM_PUSH": "1", "FCM_SERVICE_ACCOUNT_FILE": str(account)})
    )
    assert from_account.providers["fcm"].project_id == info["project_id"]
    del info["project_id"]
    account.write_text(json.dumps(info))
    env = {"ENABLE_FCM_PUSH": "1", "FCM_SERVICE_ACCOUNT_FILE": str(account)}
    with pytest.raises(ConfigError, match=r"^FCM_PROJECT_ID: required"):
        PushSettings.from_env(Env(env))
    settings = PushSettings.from_env(Env({**env, "FCM_PROJECT_ID": "p1"}))
    assert settings.providers["fcm"].project_id == "p1" and "apns" not in settings.providers


def test_the_endpoint_is_an_https_base_url_with_an_optional_path(
    credentials: PushCredentials, tmp_path: Path
) -> None:
    """FCM_ENDPOINT gives host, port and a path prefix; anything but https:// is refused."""
    account = credentials.service_account(tmp_path, "https://127.0.0.1:1/token")
    env = {"ENABLE_FCM_PUSH": "1", "FCM_SERVICE_ACCOUNT_FILE": str(account)}
    fcm = PushSettings.from_env(
        Env({**env, "FCM_ENDPOINT": "https://egress.internal:8443/fcm/"})
    ).providers["fcm"]
    assert (fcm.host, fcm.port, fcm.path_prefix) == ("egress.internal", 8443, "/fcm")
    default = PushSettings.from_env(Env(env)).providers["fcm"]
    assert (default.host, default.port, default.path_prefix) == ("fcm.googleapis.com", 443, "")
    with pytest.raises(ConfigError, match="FCM_ENDPOINT: expected an https:// base URL"):
        PushSettings.from_env(Env({**env, "FCM_ENDPOINT": "http://fcm.googleapis.com"}))
