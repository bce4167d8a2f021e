"""What APNs answers mean: pure classification, bounded reasons. No I/O."""

from __future__ import annotations

import pytest

from streamer.core.policy import Outcome
from streamer.push.apns.outcome import apns_verdict, response_verdict
from streamer.push.http2.connection import Response
from streamer.push.verdict import Kind


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
    """Each APNs status/reason maps to the outcome class the README's table prescribes."""
    assert apns_verdict(status, reason).kind is kind


def test_apns_reasons_are_bounded_labels() -> None:
    """Unknown APNs reasons become http_<status>, so metric labels stay bounded."""
    assert apns_verdict(400, "Whatever\nInjected").reason == "apns:http_400"
    assert apns_verdict(410, "Unregistered", 1700000000000).detail.endswith("1700000000000 ms)")


def test_config_errors_dead_letter_with_their_reason() -> None:
    """A configuration error is a permanent channel result (DLQ) naming Apple's reason."""
    result = apns_verdict(403, "InvalidProviderToken").result("push_ios")
    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "apns:InvalidProviderToken")


def test_the_json_body_of_an_answer_is_read() -> None:
    """reason and timestamp come from the body; a body that is not JSON still classifies."""
    gone = response_verdict(Response(410, {}, b'{"reason":"Unregistered","timestamp":17}'))
    assert (gone.kind, gone.reason) == (Kind.DEAD_TOKEN, "apns:Unregistered")
    assert gone.detail.endswith("(unregistered at 17 ms)")
    assert response_verdict(Response(503, {}, b"<html>")).kind is Kind.RETRY
    assert response_verdict(Response(200, {}, b"")).kind is Kind.DELIVERED
