"""Push settings as a whole: one error naming every problem, defaults, nothing enabled."""

from __future__ import annotations

import pytest

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.factory import build_push_senders
from streamer.push.settings import PushSettings


def test_every_missing_variable_of_every_enabled_provider_is_named_in_one_error() -> None:
    """APNs and FCM on with nothing else set: one ConfigError naming all five variables, so
    an operator fixes them in one go instead of one per restart."""
    with pytest.raises(ConfigError) as raised:
        PushSettings.from_env(Env({"ENABLE_APNS_PUSH": "1", "ENABLE_FCM_PUSH": "yes"}))
    assert str(raised.value) == (
        "missing APNS_CERT_FILE, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC "
        "(required when ENABLE_APNS_PUSH is on); "
        "FCM_SERVICE_ACCOUNT_FILE (required when ENABLE_FCM_PUSH is on)"
    )


def test_invalid_values_are_named_beside_the_missing_ones() -> None:
    """Bad numbers and a bad switch join the same single message."""
    env = {"ENABLE_APNS_PUSH": "1", "PUSH_CONCURRENCY": "0", "ENABLE_FCM_PUSH": "maybe"}
    with pytest.raises(ConfigError) as raised:
        PushSettings.from_env(Env(env))
    message = str(raised.value)
    assert message.startswith("missing APNS_CERT_FILE, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC")
    assert "PUSH_CONCURRENCY: must be >= 1" in message
    assert "ENABLE_FCM_PUSH: expected true/false" in message


def test_defaults_apply_when_nothing_is_set() -> None:
    """No provider enabled: no provider settings, the shared defaults."""
    settings = PushSettings.from_env(Env({}))
    assert settings.providers == {}
    assert (settings.concurrency, settings.timeout_s, settings.marker_ttl_s) == (256, 10.0, 3600)


def test_push_disabled_builds_no_senders() -> None:
    """With every provider off the factory returns no senders (pushes are skipped)."""
    assert build_push_senders(Env({})) == {}
