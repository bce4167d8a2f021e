"""What FCM HTTP v1 answers mean: pure classification, Retry-After carried. No I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamer.core.policy import Outcome
from streamer.push.fcm.outcome import fcm_verdict
from streamer.push.verdict import Kind


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
    error = {"code": status, "message": "m", "status": google, "details": details}
    return json.dumps({"error": error}).encode()


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
    """Each FCM status/errorCode maps to the outcome class the README's table prescribes."""
    assert fcm_verdict(status, body, None, 0.0).kind is kind


def test_retry_after_is_carried_to_the_channel_result() -> None:
    """QUOTA_EXCEEDED with Retry-After gives a RETRY result carrying the delay in ms."""
    body = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    result = fcm_verdict(429, body, "7", 0.0).result("push_android")
    assert (result.outcome, result.retry_after_ms, result.reason) == (
        Outcome.RETRY,
        7000,
        "fcm:QUOTA_EXCEEDED",
    )
