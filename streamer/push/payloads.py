"""Build what each provider is sent from a PushRequest. Pure: no I/O.

Delivery options come from the event's data when given and are not forwarded as custom
data: ``priority`` ("high" | "normal"), ``collapse_key``, ``ttl_s`` (seconds) and, for
APNs, ``push_type`` (apns-push-type).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from streamer.push.base import PushRequest
from streamer.push.outcomes import Kind, Verdict

APNS_MAX_PAYLOAD_BYTES = 4096
APNS_MAX_COLLAPSE_ID_BYTES = 64
OPTION_KEYS = frozenset({"priority", "collapse_key", "ttl_s", "push_type"})
APNS_PUSH_TYPES = frozenset(
    {"alert", "background", "voip", "complication", "fileprovider", "mdm", "liveactivity"}
)
INVALID_OPTION = "push:invalid_option"

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class PushOptions:
    priority: str | None = None  # "high" | "normal"
    collapse_key: str | None = None
    ttl_s: int | None = None
    push_type: str | None = None


def push_options(data: dict[str, Any]) -> PushOptions | Verdict:
    """Delivery options from the event's data, or a permanent verdict naming the bad one."""
    priority = data.get("priority")
    if priority is not None and str(priority).lower() not in ("high", "normal"):
        return _invalid(f"priority must be 'high' or 'normal', got {priority!r}")
    collapse = data.get("collapse_key")
    if collapse is not None and not isinstance(collapse, str):
        return _invalid("collapse_key must be a string")
    ttl = data.get("ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
        return _invalid(f"ttl_s must be a non-negative integer, got {ttl!r}")
    push_type = data.get("push_type")
    if push_type is not None and push_type not in APNS_PUSH_TYPES:
        return _invalid(f"push_type {push_type!r} is not an APNs push type")
    return PushOptions(
        None if priority is None else str(priority).lower(), collapse, ttl, push_type
    )


def _invalid(detail: str) -> Verdict:
    return Verdict(Kind.PERMANENT, INVALID_OPTION, detail)


def _custom(request: PushRequest) -> dict[str, Any]:
    """Custom data for the app: the event's data minus what the notification shows itself
    and the delivery options, plus the event type and deep link."""
    custom = {k: v for k, v in request.content.custom.items() if k not in OPTION_KEYS}
    if request.content.deep_link_url is not None:
        custom["deep_link_url"] = request.content.deep_link_url
    custom.setdefault("event_type", request.event_type)
    return custom


# --- APNs ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApnsNotification:
    token: str
    payload: dict[str, Any]
    push_type: str
    priority: int | None
    ttl_s: int | None
    collapse_id: str | None


def apns_notification(
    request: PushRequest, max_bytes: int = APNS_MAX_PAYLOAD_BYTES
) -> ApnsNotification | Verdict:
    """The APNs payload and headers, or a permanent verdict when it cannot be sent
    (over 4 KB, bad options): refused here rather than by Apple."""
    options = push_options(request.data)
    if isinstance(options, Verdict):
        return options
    alert = {
        k: v for k, v in (("title", request.content.title), ("body", request.content.body)) if v
    }
    # Without anything to show it is a silent (background) push, which Apple requires at
    # priority 5.
    aps: dict[str, Any] = {"alert": alert} if alert else {"content-available": 1}
    push_type = options.push_type or ("alert" if alert else "background")
    priority = {"high": 10, "normal": 5}.get(options.priority or "")
    if push_type == "background":
        priority = 5
    collapse = options.collapse_key
    if collapse is not None and len(collapse.encode()) > APNS_MAX_COLLAPSE_ID_BYTES:
        return _invalid("collapse_key is over APNs' 64 bytes")
    payload = {k: v for k, v in _custom(request).items() if k != "aps"}
    payload["aps"] = aps
    # Measured exactly as aioapns will encode it: json.dumps with its default separators.
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > max_bytes:
        detail = f"payload is {size} bytes, APNs allows {max_bytes}"
        return Verdict(Kind.PERMANENT, "apns:PayloadTooLarge", detail)
    return ApnsNotification(
        request.device_token, payload, push_type, priority, options.ttl_s, collapse
    )


# --- FCM -------------------------------------------------------------------------------
def _string(value: Any) -> str:
    """FCM data values must be strings: nested values travel JSON-encoded."""
    return value if isinstance(value, str) else _json.encode(value).decode()


def fcm_message(request: PushRequest) -> bytes | Verdict:
    """The JSON body of an FCM v1 ``messages:send`` request."""
    options = push_options(request.data)
    if isinstance(options, Verdict):
        return options
    message: dict[str, Any] = {"token": request.device_token}
    title, body = request.content.title, request.content.body
    if title or body:
        message["notification"] = {k: v for k, v in (("title", title), ("body", body)) if v}
    message["data"] = {k: _string(v) for k, v in _custom(request).items()}
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
