"""The FCM HTTP v1 ``messages:send`` body for a PushRequest. Pure.

Built as msgspec Structs rather than nested dicts: encoded in one pass, absent parts left
out (``omit_defaults``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamer.push.base import PushRequest
from streamer.push.options import custom_data, push_options
from streamer.push.verdict import Verdict

_json = msgspec.json.Encoder()


class _Notification(msgspec.Struct, omit_defaults=True):
    title: str | None = None
    body: str | None = None


class _Android(msgspec.Struct, omit_defaults=True):
    priority: str | None = None  # HIGH | NORMAL
    collapse_key: str | None = None
    ttl: str | None = None  # "<seconds>s"


class _Message(msgspec.Struct, omit_defaults=True):
    token: str
    notification: _Notification | None = None
    data: dict[str, str] = msgspec.field(default_factory=dict)
    android: _Android | None = None


class _Body(msgspec.Struct):
    message: _Message


def _string(value: Any) -> str:
    """FCM data values must be strings: nested values travel JSON-encoded."""
    return value if isinstance(value, str) else _json.encode(value).decode()


def fcm_message(request: PushRequest) -> bytes | Verdict:
    """The JSON body, or a verdict when the event's options are invalid."""
    options = push_options(request.data)
    if isinstance(options, Verdict):
        return options
    title, body = request.content.title or None, request.content.body or None
    notification = _Notification(title, body) if title or body else None
    data = {k: _string(v) for k, v in custom_data(request).items()}
    android = None
    if (
        options.priority is not None
        or options.collapse_key is not None
        or options.ttl_s is not None
    ):
        priority = None if options.priority is None else options.priority.upper()
        ttl = None if options.ttl_s is None else f"{options.ttl_s}s"
        android = _Android(priority, options.collapse_key, ttl)
    return _json.encode(_Body(_Message(request.device_token, notification, data, android)))
