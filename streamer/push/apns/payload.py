"""The APNs request for a PushRequest: path, apns-* headers and JSON payload. Pure.

Anything Apple would refuse for the message itself (a payload over 4 KB, a bad option, a
device token Apple never issues) is refused here, before any request.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import msgspec

from streamer.push.base import PushRequest
from streamer.push.http2.hpack import Field
from streamer.push.options import APNS_PUSH_TYPES, custom_data, invalid, push_options
from streamer.push.provider import Outbound
from streamer.push.verdict import Kind, Verdict

MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
# Device tokens are hexadecimal; anything outside URL-safe characters cannot be a token,
# and would not be a valid request path either.
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{1,512}$")
_PRIORITIES = {"high": b"10", "normal": b"5"}
_json = msgspec.json.Encoder()


class ApnsNotification(NamedTuple):
    token: str
    payload: bytes  # the JSON document, as sent
    push_type: str
    priority: bytes | None  # apns-priority
    ttl_s: int | None
    collapse_id: str | None


def apns_notification(
    request: PushRequest, max_bytes: int = MAX_PAYLOAD_BYTES
) -> ApnsNotification | Verdict:
    """The payload and options, or a verdict when it cannot be sent."""
    if _TOKEN.match(request.device_token) is None:
        detail = "the device token has characters APNs tokens never have"
        return Verdict(Kind.DEAD_TOKEN, "apns:BadDeviceToken", detail)
    options = push_options(request.data)
    if isinstance(options, Verdict):
        return options
    title, body = request.content.title, request.content.body
    alert = {"title": title, "body": body} if title and body else _alert(title, body)
    # Without anything to show it is a silent (background) push, which Apple requires at
    # priority 5.
    push_type = options.push_type or ("alert" if alert else "background")
    priority = b"5" if push_type == "background" else _PRIORITIES.get(options.priority or "")
    collapse = options.collapse_key
    if collapse is not None and len(collapse.encode()) > MAX_COLLAPSE_ID_BYTES:
        return invalid("collapse_key is over APNs' 64 bytes")
    document = custom_data(request)
    document.pop("aps", None)
    document["aps"] = {"alert": alert} if alert else _SILENT
    payload = _json.encode(document)
    if len(payload) > max_bytes:
        detail = f"payload is {len(payload)} bytes, APNs allows {max_bytes}"
        return Verdict(Kind.PERMANENT, "apns:PayloadTooLarge", detail)
    return ApnsNotification(
        request.device_token, payload, push_type, priority, options.ttl_s, collapse
    )


def _alert(title: str | None, body: str | None) -> dict[str, str]:
    return {k: v for k, v in (("title", title), ("body", body)) if v}


def apns_request(request: PushRequest, topic: Field, now_s: float) -> Outbound | Verdict:
    """The POST /3/device/<token> request (authorization is the sender's to add);
    ``topic`` is the apns-topic field."""
    built = apns_notification(request)
    if isinstance(built, Verdict):
        return built
    fields = [topic, _PUSH_TYPES[built.push_type]]
    if built.priority is not None:
        fields.append(_PRIORITY_FIELDS[built.priority])
    if built.ttl_s is not None:
        fields.append((b"apns-expiration", str(int(now_s) + built.ttl_s).encode(), False))
    if built.collapse_id is not None:
        fields.append((b"apns-collapse-id", built.collapse_id.encode(), False))
    path = b"/3/device/" + built.token.encode()
    return Outbound(path, tuple(fields), built.payload)


def topic_field(topic: str) -> Field:
    return (b"apns-topic", topic.encode(), True)


# Header fields that repeat from request to request are built once (and HPACK-indexed).
_PUSH_TYPES = {t: (b"apns-push-type", t.encode(), True) for t in APNS_PUSH_TYPES}
_PRIORITY_FIELDS = {p: (b"apns-priority", p, True) for p in _PRIORITIES.values()}
_SILENT = {"content-available": 1}
