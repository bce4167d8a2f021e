"""Verdicts shared by the providers: results, Retry-After, connection failures. No I/O."""

from __future__ import annotations

from streamer.core.policy import Outcome
from streamer.push.verdict import Kind, Verdict, connection_failure, retry_after_ms


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After as delta-seconds or an HTTP date; garbage is ignored."""
    assert retry_after_ms("30", 0.0) == 30_000
    assert retry_after_ms("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60_000
    assert retry_after_ms("soon", 0.0) is None
    assert retry_after_ms(None, 0.0) is None


def test_a_connection_failure_is_a_retry_labelled_by_provider() -> None:
    """No answer is transient, with a bounded reason per provider."""
    result = connection_failure("fcm", "GOAWAY").result("push_android")
    assert (result.outcome, result.reason, result.error) == (
        Outcome.RETRY,
        "fcm:connection",
        "GOAWAY",
    )


def test_a_refused_fresh_credential_retries_and_a_config_error_dead_letters() -> None:
    """REFRESH_AUTH that reaches the worker is a retry; CONFIG is permanent."""
    assert Verdict(Kind.REFRESH_AUTH).result("push_ios").outcome is Outcome.RETRY
    assert Verdict(Kind.CONFIG).result("push_ios").outcome is Outcome.PERMANENT
