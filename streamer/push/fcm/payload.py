"""The FCM HTTP v1 ``messages:send`` body for a PushRequest. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from streamer.push.base import PushRequest
from streamer.push.options import custom_data, push_options
from streamer.push.verdict import Verdict

_json = msgspec.json.Encoder()


def _string(value: Any) -> str:
    """FCM data values must be strings: nested values travel JSON-encoded."""
    return value if isinstance(value, str) else _json.encode(value).decode()


def fcm_message(request: PushRequest) -> bytes | Verdict:
    """The JSON body, or a verdict when the event's options are invalid."""
    options = push_options(request.data)
    if isinstance(options, Verdict):
        return options
    message: dict[str, Any] = {"token": request.device_token}
    title, body = request.content.title, request.content.body
    if title or body:
        message["notification"] = {k: v for k, v in (("title", title), ("body", body)) if v}
    message["data"] = {k: _string(v) for k, v in custom_data(request).items()}
    android: dict[str, str] = {}
    if options.priority is not None:
        android["priority"] = options.priority.upper()
    if options.collapse_key is not None:
        android["collapse_key"] = options.collapse_key
    if options.ttl_s is not None:
        android["ttl"] = f"{options.ttl_s}s"
    if android:
        message["android"] = android
    return _json.encode({"message": message})
