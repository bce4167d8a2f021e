"""The APNs request built from an event: headers, payload, refusals before sending. No I/O."""

from __future__ import annotations

import json

from streamer.push.apns.payload import (
    ApnsNotification,
    apns_notification,
    apns_request,
    topic_field,
)
from streamer.push.provider import Outbound
from streamer.push.verdict import Kind, Verdict
from tests.fakes.harness import push_request

TOKEN = "a1" * 32
TOPIC = topic_field("com.creativeflow.app")


def test_alert_payload_and_headers_come_from_the_event() -> None:
    """Title/body become aps.alert; options become apns-* headers; the rest is custom data."""
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
    built = apns_request(push_request("push_ios", TOKEN, **data), TOPIC, 1_700_000_000.5)
    assert isinstance(built, Outbound)
    assert built.path == f"/3/device/{TOKEN}".encode()
    assert json.loads(built.body) == {
        "aps": {"alert": {"title": "Done", "body": "Your image"}},
        "progress": 100,
        "deep_link_url": "cf://x",
        "event_type": "done",
    }
    assert [(name, value) for name, value, _ in built.fields] == [
        (b"apns-topic", b"com.creativeflow.app"),
        (b"apns-push-type", b"alert"),
        (b"apns-priority", b"5"),
        (b"apns-expiration", b"1700000060"),
        (b"apns-collapse-id", b"job-1"),
    ]
    # Fields that repeat are HPACK-indexed; per-request values are not.
    assert [index for _, _, index in built.fields] == [True, True, True, False, False]


def test_a_silent_push_is_background_at_priority_5() -> None:
    """Without title or body the push is content-available, background, priority 5."""
    built = apns_notification(push_request("push_ios", TOKEN, progress=40, priority="high"))
    assert isinstance(built, ApnsNotification)
    assert json.loads(built.payload)["aps"] == {"content-available": 1}
    assert (built.push_type, built.priority) == ("background", b"5")


def test_a_payload_over_4_kb_is_refused_before_sending() -> None:
    """Over 4096 bytes as sent is permanent; exactly at the limit is not."""
    base = apns_notification(push_request("push_ios", TOKEN, title="t", blob=""))
    assert isinstance(base, ApnsNotification)
    room = 4096 - len(base.payload)
    at_limit = apns_notification(push_request("push_ios", TOKEN, title="t", blob="é" * (room // 2)))
    assert isinstance(at_limit, ApnsNotification) and len(at_limit.payload) == 4096 - room % 2
    too_big = apns_notification(push_request("push_ios", TOKEN, title="t", blob="x" * (room + 1)))
    assert isinstance(too_big, Verdict)
    assert (too_big.kind, too_big.reason) == (Kind.PERMANENT, "apns:PayloadTooLarge")


def test_invalid_delivery_options_are_permanent() -> None:
    """A bad priority, ttl, push type or over-long collapse id is refused before sending."""
    for data in (
        {"priority": "urgent"},
        {"ttl_s": -1},
        {"push_type": "email"},
        {"collapse_key": "x" * 65},
    ):
        verdict = apns_notification(push_request("push_ios", TOKEN, **data))
        assert isinstance(verdict, Verdict) and verdict.kind is Kind.PERMANENT


def test_a_token_apple_never_issues_is_a_dead_token_without_a_request() -> None:
    """Characters that cannot be in a token (or a path) make it a BadDeviceToken at once."""
    for bad in ("", "ab cd", "ab/../cd", "tok\r\nx-injected: 1"):
        verdict = apns_notification(push_request("push_ios", bad, title="t"))
        assert isinstance(verdict, Verdict)
        assert (verdict.kind, verdict.reason) == (Kind.DEAD_TOKEN, "apns:BadDeviceToken")
