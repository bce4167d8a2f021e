"""Unit tests of push delivery's pure parts: outcomes, payloads, tokens, settings. No I/O."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import jwt
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from streamer.contract.event import NotificationPayload, push_content
from streamer.core.policy import Outcome
from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.push.apns import ProviderToken, jwt_due
from streamer.push.base import PushRequest
from streamer.push.factory import build_push_senders
from streamer.push.fcm import TokenState, env_proxy, token_state
from streamer.push.huffman import CachedHuffmanEncoder, huffman_encode
from streamer.push.observe import Throttle
from streamer.push.outcomes import Kind, Verdict, apns_verdict, fcm_verdict, retry_after_ms
from streamer.push.payloads import ApnsNotification, apns_notification, fcm_message
from streamer.push.settings import LEGACY_FCM_KEY_MESSAGE, PushSettings
from tests.fakes.certs import PushCredentials, make_credentials


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> PushCredentials:
    return make_credentials(tmp_path_factory.mktemp("core-credentials"))


def request(data: dict[str, Any], channel: str = "push_ios", token: str = "t" * 64) -> PushRequest:
    payload = NotificationPayload(user_id="u1", event_type="ai_done", data=data)
    return PushRequest(channel, "u1", "evt-1", "ai_done", token, push_content(payload), data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (200, None, Kind.DELIVERED),
        (400, "BadDeviceToken", Kind.DEAD_TOKEN),
        (410, "Unregistered", Kind.DEAD_TOKEN),
        (400, "DeviceTokenNotForTopic", Kind.PERMANENT),
        (400, "TopicDisallowed", Kind.CONFIG),
        (403, "InvalidProviderToken", Kind.CONFIG),
        (403, "BadCertificate", Kind.CONFIG),
        (403, "ExpiredProviderToken", Kind.REFRESH_AUTH),
        (413, "PayloadTooLarge", Kind.PERMANENT),
        (429, "TooManyRequests", Kind.RETRY),
        (500, "InternalServerError", Kind.RETRY),
        (503, "ServiceUnavailable", Kind.RETRY),
        (400, "SomethingNew", Kind.PERMANENT),
    ],
)
def test_apns_answers_are_classified(status: int, reason: str | None, kind: Kind) -> None:
    """Each APNs status/reason maps to the outcome class the issue prescribes."""
    assert apns_verdict(status, reason).kind is kind


def test_apns_reasons_are_bounded_labels() -> None:
    """Unknown APNs reasons become http_<status>, so metric labels stay bounded."""
    assert apns_verdict(400, "Whatever\nInjected").reason == "apns:http_400"
    assert apns_verdict(410, "Unregistered", 1700000000000).detail.endswith("1700000000000 ms)")


def fcm_error(
    status: int, google: str, code: str | None = None, token_field: bool = False
) -> bytes:
    details: list[dict[str, Any]] = []
    if code:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        )
    if token_field:
        violation = {"field": "message.token", "description": "Invalid registration token"}
        details.append(
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        )
    return json.dumps(
        {"error": {"code": status, "message": "m", "status": google, "details": details}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b'{"name":"projects/p/messages/1"}', Kind.DELIVERED),
        (404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"), Kind.DEAD_TOKEN),
        (
            400,
            fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", token_field=True),
            Kind.DEAD_TOKEN,
        ),
        (400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), Kind.PERMANENT),
        (403, fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), Kind.CONFIG),
        (401, fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), Kind.CONFIG),
        (401, fcm_error(401, "UNAUTHENTICATED"), Kind.REFRESH_AUTH),
        (403, fcm_error(403, "PERMISSION_DENIED"), Kind.CONFIG),
        (429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), Kind.RETRY),
        (500, fcm_error(500, "INTERNAL", "INTERNAL"), Kind.RETRY),
        (503, fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), Kind.RETRY),
        (502, b"<html>bad gateway</html>", Kind.RETRY),
    ],
)
def test_fcm_answers_are_classified(status: int, body: bytes, kind: Kind) -> None:
    """Each FCM status/errorCode maps to the outcome class the issue prescribes."""
    assert fcm_verdict(status, body, None, 0.0).kind is kind


def test_fcm_retry_after_is_carried_to_the_channel_result() -> None:
    """QUOTA_EXCEEDED with Retry-After gives a RETRY result carrying the delay in ms."""
    body = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    result = fcm_verdict(429, body, "7", 0.0).result("push_android")
    assert (result.outcome, result.retry_after_ms, result.reason) == (
        Outcome.RETRY,
        7000,
        "fcm:QUOTA_EXCEEDED",
    )


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After as delta-seconds or an HTTP date; garbage is ignored."""
    assert retry_after_ms("30", 0.0) == 30_000
    assert retry_after_ms("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60_000
    assert retry_after_ms("soon", 0.0) is None


def test_config_errors_dead_letter_with_their_reason() -> None:
    """A configuration error is a permanent channel result (DLQ) naming the provider's reason."""
    result = apns_verdict(403, "InvalidProviderToken").result("push_ios")
    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "apns:InvalidProviderToken")


def test_apns_alert_payload_and_headers_come_from_the_event() -> None:
    """Title/body become aps.alert; options become headers; the rest is custom data."""
    data = {
        "title": "Done",
        "body": "Your image",
        "deep_link_url": "cf://x",
        "progress": 100,
        "priority": "normal",
        "collapse_key": "job-1",
        "ttl_s": 60,
        "push_type": "alert",
    }
    built = apns_notification(request(data))
    assert isinstance(built, ApnsNotification)
    assert built.payload == {
        "aps": {"alert": {"title": "Done", "body": "Your image"}},
        "progress": 100,
        "deep_link_url": "cf://x",
        "event_type": "ai_done",
    }
    assert (built.push_type, built.priority, built.collapse_id, built.ttl_s) == (
        "alert",
        5,
        "job-1",
        60,
    )


def test_apns_silent_push_is_background_at_priority_5() -> None:
    """Without title or body the push is content-available, background, priority 5."""
    built = apns_notification(request({"progress": 40, "priority": "high"}))
    assert isinstance(built, ApnsNotification)
    assert built.payload["aps"] == {"content-available": 1}
    assert (built.push_type, built.priority) == ("background", 5)


def test_apns_payload_over_4_kb_is_refused_before_sending() -> None:
    """A payload over 4096 bytes (as encoded on the wire) is permanent; one at the limit is not."""
    base = apns_notification(request({"title": "t", "blob": ""}))
    assert isinstance(base, ApnsNotification)
    room = 4096 - len(json.dumps(base.payload, ensure_ascii=False).encode())
    assert isinstance(
        apns_notification(request({"title": "t", "blob": "é" * (room // 2)})), ApnsNotification
    )
    too_big = apns_notification(request({"title": "t", "blob": "x" * (room + 1)}))
    assert isinstance(too_big, Verdict)
    assert (too_big.kind, too_big.reason) == (Kind.PERMANENT, "apns:PayloadTooLarge")


def test_invalid_delivery_options_are_permanent() -> None:
    """A bad priority, ttl or push type is refused before sending, naming the option."""
    for data in ({"priority": "urgent"}, {"ttl_s": -1}, {"push_type": "email"}):
        verdict = apns_notification(request(data))
        assert isinstance(verdict, Verdict) and verdict.kind is Kind.PERMANENT


def test_fcm_message_has_string_data_and_android_options() -> None:
    """FCM data values are strings (nested JSON-encoded); options fill message.android."""
    data = {
        "title": "Done",
        "body": "b",
        "progress": 40,
        "meta": {"a": [1, 2]},
        "ok": True,
        "name": "x",
        "priority": "high",
        "collapse_key": "c",
        "ttl_s": 30,
    }
    body = fcm_message(request(data, "push_android", "tok"))
    assert isinstance(body, bytes)
    message = json.loads(body)["message"]
    assert message["token"] == "tok"
    assert message["notification"] == {"title": "Done", "body": "b"}
    assert message["data"] == {
        "progress": "40",
        "meta": '{"a":[1,2]}',
        "ok": "true",
        "name": "x",
        "event_type": "ai_done",
    }
    assert message["android"] == {"priority": "HIGH", "collapse_key": "c", "ttl": "30s"}


def test_jwt_is_due_only_when_missing_old_or_from_the_future() -> None:
    """The provider JWT is reused for 40 minutes and re-minted after, or if the clock went back."""
    assert jwt_due(None, 1000.0)
    assert not jwt_due(1000.0, 1000.0 + 39 * 60)
    assert jwt_due(1000.0, 1000.0 + 40 * 60)
    assert jwt_due(1000.0, 999.0)


def test_provider_token_is_reused_and_refreshed_once_for_a_burst(
    credentials: PushCredentials,
) -> None:
    """One JWT for many requests; a burst of ExpiredProviderToken for it mints one new JWT."""
    now = [1_700_000_000.0]
    mints: list[int] = []
    settings = PushSettings.from_env(Env(apns_env(credentials))).apns
    assert settings is not None
    token = ProviderToken(settings, lambda: mints.append(1), lambda: now[0])
    first = token.get_header()
    now[0] += 600
    assert token.get_header() == first
    for _ in range(5):
        token.refresh(first)
    second = token.get_header()
    assert second != first and len(mints) == 2
    claims = jwt.decode(
        second.removeprefix("bearer "),
        credentials.apns_public_pem,
        algorithms=["ES256"],
        options={"verify_iat": False},
    )
    assert claims == {"iss": "TEAM123456", "iat": 1_700_000_600}
    assert jwt.get_unverified_header(second.removeprefix("bearer "))["kid"] == "KEYID12345"


def test_oauth_token_refreshes_in_the_background_before_expiry() -> None:
    """Fresh until 5 minutes before expiry, then refreshed behind; expired means wait."""
    assert token_state(None, 0.0, 300) is TokenState.EXPIRED
    assert token_state(3600.0, 3000.0, 300) is TokenState.FRESH
    assert token_state(3600.0, 3400.0, 300) is TokenState.REFRESH_SOON
    assert token_state(3600.0, 3600.0, 300) is TokenState.EXPIRED


def test_throttle_allows_once_per_interval_per_key() -> None:
    """Config errors are logged once per interval per reason."""
    now = [0.0]
    throttle = Throttle(60.0, lambda: now[0])
    assert [throttle.allow("a"), throttle.allow("a"), throttle.allow("b")] == [True, False, True]
    now[0] = 61.0
    assert throttle.allow("a")


def apns_env(credentials: PushCredentials, **extra: str) -> dict[str, str]:
    env = {
        "ENABLE_APNS_PUSH": "true",
        "APNS_CERT_FILE": str(credentials.apns_key_file),
        "APNS_KEY_ID": "KEYID12345",
        "APNS_TEAM_ID": "TEAM123456",
        "APNS_TOPIC": "com.creativeflow.app",
    }
    env.update(extra)
    return env


@pytest.mark.parametrize("missing", ["APNS_CERT_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC"])
def test_apns_enabled_without_a_credential_names_it(
    credentials: PushCredentials, missing: str
) -> None:
    """ENABLE_APNS_PUSH without one of its variables fails at start-up naming it."""
    env = apns_env(credentials)
    del env[missing]
    with pytest.raises(ConfigError, match=rf"^{missing}: required"):
        PushSettings.from_env(Env(env))


def test_apns_settings_check_the_key_and_endpoint(
    credentials: PushCredentials, tmp_path: Path
) -> None:
    """A non-ES256 key or a bad APNS_ENDPOINT is refused; sandbox picks Apple's sandbox host."""
    not_a_key = tmp_path / "key.p8"
    not_a_key.write_text("nope")
    with pytest.raises(ConfigError, match=r"^APNS_CERT_FILE"):
        PushSettings.from_env(Env(apns_env(credentials, APNS_CERT_FILE=str(not_a_key))))
    with pytest.raises(ConfigError, match=r"^APNS_ENDPOINT"):
        PushSettings.from_env(Env(apns_env(credentials, APNS_ENDPOINT="localhost")))
    sandbox = PushSettings.from_env(Env(apns_env(credentials, APNS_USE_SANDBOX="1"))).apns
    assert sandbox is not None and (sandbox.host, sandbox.port) == (
        "api.sandbox.push.apple.com",
        443,
    )
    local = PushSettings.from_env(Env(apns_env(credentials, APNS_ENDPOINT="[::1]:8443"))).apns
    assert local is not None and (local.host, local.port) == ("::1", 8443)


def test_fcm_legacy_server_key_alone_fails_with_guidance() -> None:
    """FCM_API_KEY without a service account fails at start-up saying what to configure."""
    with pytest.raises(ConfigError) as raised:
        PushSettings.from_env(Env({"ENABLE_FCM_PUSH": "1", "FCM_API_KEY": "AAAA-legacy"}))
    assert str(raised.value) == LEGACY_FCM_KEY_MESSAGE
    assert (
        "FCM_SERVICE_ACCOUNT_FILE" in LEGACY_FCM_KEY_MESSAGE
        and "FCM_PROJECT_ID" in LEGACY_FCM_KEY_MESSAGE
    )


def test_fcm_settings_name_what_is_missing(credentials: PushCredentials, tmp_path: Path) -> None:
    """No service account, or one without a project id and no FCM_PROJECT_ID, names the variable."""
    with pytest.raises(ConfigError, match=r"^FCM_SERVICE_ACCOUNT_FILE: required"):
        PushSettings.from_env(Env({"ENABLE_FCM_PUSH": "1"}))
    account = credentials.service_account(tmp_path, "https://127.0.0.1:1/token")
    info = json.loads(account.read_text())
    del info["project_id"]
    account.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"^FCM_PROJECT_ID: required"):
        PushSettings.from_env(
            Env({"ENABLE_FCM_PUSH": "1", "FCM_SERVICE_ACCOUNT_FILE": str(account)})
        )
    settings = PushSettings.from_env(
        Env(
            {
                "ENABLE_FCM_PUSH": "1",
                "FCM_SERVICE_ACCOUNT_FILE": str(account),
                "FCM_PROJECT_ID": "p1",
            }
        )
    )
    assert settings.fcm is not None and settings.fcm.project_id == "p1"
    assert settings.apns is None and settings.concurrency == 64


def test_push_disabled_builds_no_senders() -> None:
    """With both providers off the factory returns no senders (pushes are skipped)."""
    assert build_push_senders(Env({})) == {}


def test_huffman_encoder_matches_hpack_byte_for_byte() -> None:
    """The faster HPACK Huffman coder (cached or not) produces exactly hpack's output."""
    reference = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    cached = CachedHuffmanEncoder()
    rng = random.Random(7)
    values = [bytes(range(256)), b"bearer " + b"eyJ" * 80, b"", b"a"]
    values += [rng.randbytes(rng.randrange(1, 400)) for _ in range(500)]
    for value in values + values:  # the second pass answers long values from the cache
        if value:
            assert huffman_encode(value) == reference.encode(value)
        assert cached.encode(value) == reference.encode(value)


def test_fcm_proxy_comes_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY applies to FCM unless NO_PROXY names the host; none set, no proxy."""
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://fcm.googleapis.com/v1/projects/p/messages:send") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert env_proxy("https://fcm.googleapis.com/v1/x") == "http://proxy.internal:3128"
    assert env_proxy("https://127.0.0.1:8443/v1/x") is None
