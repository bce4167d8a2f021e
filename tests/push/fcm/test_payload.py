"""The FCM v1 message built from an event. No I/O."""

from __future__ import annotations

import json

from streamer.push.fcm.payload import fcm_message
from streamer.push.verdict import Kind, Verdict
from tests.fakes.harness import push_request


def test_data_values_are_strings_and_options_fill_android() -> None:
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
    body = fcm_message(push_request("push_android", "tok", **data))
    assert isinstance(body, bytes)
    message = json.loads(body)["message"]
    assert message["token"] == "tok"
    assert message["notification"] == {"title": "Done", "body": "b"}
    assert message["data"] == {
        "progress": "40",
        "meta": '{"a":[1,2]}',
        "ok": "true",
        "name": "x",
        "event_type": "done",
    }
    assert message["android"] == {"priority": "HIGH", "collapse_key": "c", "ttl": "30s"}


def test_a_data_only_message_has_no_notification_and_no_android_block() -> None:
    """Without title/body or options, only token and data are sent."""
    body = fcm_message(push_request("push_android", "tok", progress=1))
    assert isinstance(body, bytes)
    assert json.loads(body) == {
        "message": {"token": "tok", "data": {"progress": "1", "event_type": "done"}}
    }


def test_invalid_options_are_refused_before_sending() -> None:
    """A bad priority is a permanent verdict, as for APNs."""
    verdict = fcm_message(push_request("push_android", "tok", priority="asap"))
    assert isinstance(verdict, Verdict) and verdict.kind is Kind.PERMANENT
