"""APNs settings: required variables, the key, the endpoint. No I/O beyond reading files."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.settings import PushSettings
from tests.fakes.certs import PushCredentials, make_credentials


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> PushCredentials:
    return make_credentials(tmp_path_factory.mktemp("apns-settings"))


def apns_env(credentials: PushCredentials, **extra: str) -> dict[str, str]:
    return {
        "ENABLE_APNS_PUSH": "true",
        "APNS_CERT_FILE": str(credentials.apns_key_file),
        "APNS_KEY_ID": "KEYID12345",
        "APNS_TEAM_ID": "TEAM123456",
        "APNS_TOPIC": "com.creativeflow.app",
        **extra,
    }


@pytest.mark.parametrize("missing", ["APNS_CERT_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC"])
def test_apns_enabled_without_a_credential_names_it(
    credentials: PushCredentials, missing: str
) -> None:
    """ENABLE_APNS_PUSH without one of its variables fails at start-up naming it."""
    env = apns_env(credentials)
    del env[missing]
    with pytest.raises(ConfigError) as raised:
        PushSettings.from_env(Env(env))
    assert str(raised.value) == f"missing {missing} (required when ENABLE_APNS_PUSH is on)"


def test_the_key_must_be_an_es256_p8_and_the_endpoint_host_port(
    credentials: PushCredentials, tmp_path: Path
) -> None:
    """A non-ES256 key and a bad APNS_ENDPOINT are both named, in one error."""
    not_a_key = tmp_path / "key.p8"
    not_a_key.write_text("nope")
    env = apns_env(credentials, APNS_CERT_FILE=str(not_a_key), APNS_ENDPOINT="localhost")
    with pytest.raises(ConfigError) as raised:
        PushSettings.from_env(Env(env))
    assert "APNS_ENDPOINT: expected host:port, got 'localhost'" in str(raised.value)
    assert f"APNS_CERT_FILE: cannot read the .p8 key {not_a_key}" in str(raised.value)


def test_sandbox_and_endpoint_choose_the_host(credentials: PushCredentials) -> None:
    """APNS_USE_SANDBOX picks Apple's sandbox; APNS_ENDPOINT (IPv6 too) overrides both."""
    sandbox = PushSettings.from_env(Env(apns_env(credentials, APNS_USE_SANDBOX="1")))
    assert (sandbox.providers["apns"].host, sandbox.providers["apns"].port) == (
        "api.sandbox.push.apple.com",
        443,
    )
    local = PushSettings.from_env(Env(apns_env(credentials, APNS_ENDPOINT="[::1]:8443")))
    assert (local.providers["apns"].host, local.providers["apns"].port) == ("::1", 8443)
    production = PushSettings.from_env(Env(apns_env(credentials)))
    assert production.providers["apns"].host == "api.push.apple.com"
