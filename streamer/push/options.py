"""Delivery options and custom data, shared by every provider's payload builder. Pure.

Options come from the event's data when given and are not forwarded as custom data:
``priority`` ("high" | "normal"), ``collapse_key``, ``ttl_s`` (seconds) and ``push_type``
(APNs' apns-push-type; other providers ignore it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamer.push.base import PushRequest
from streamer.push.verdict import Kind, Verdict

OPTION_KEYS = frozenset({"priority", "collapse_key", "ttl_s", "push_type"})
APNS_PUSH_TYPES = frozenset(
    {"alert", "background", "voip", "complication", "fileprovider", "mdm", "liveactivity"}
)
INVALID_OPTION = "push:invalid_option"


@dataclass(frozen=True, slots=True)
class PushOptions:
    priority: str | None = None  # "high" | "normal"
    collapse_key: str | None = None
    ttl_s: int | None = None
    push_type: str | None = None


NO_OPTIONS = PushOptions()


def push_options(data: dict[str, Any]) -> PushOptions | Verdict:
    """Delivery options from the event's data, or a permanent verdict naming the bad one."""
    if OPTION_KEYS.isdisjoint(data):
        return NO_OPTIONS  # the usual case
    priority = data.get("priority")
    if priority is not None and str(priority).lower() not in ("high", "normal"):
        return invalid(f"priority must be 'high' or 'normal', got {priority!r}")
    collapse = data.get("collapse_key")
    if collapse is not None and not isinstance(collapse, str):
        return invalid("collapse_key must be a string")
    ttl = data.get("ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
        return invalid(f"ttl_s must be a non-negative integer, got {ttl!r}")
    push_type = data.get("push_type")
    if push_type is not None and push_type not in APNS_PUSH_TYPES:
        return invalid(f"push_type {push_type!r} is not an APNs push type")
    return PushOptions(
        None if priority is None else str(priority).lower(), collapse, ttl, push_type
    )


def invalid(detail: str) -> Verdict:
    return Verdict(Kind.PERMANENT, INVALID_OPTION, detail)


def custom_data(request: PushRequest) -> dict[str, Any]:
    """Custom data for the app: the event's data minus what the notification shows itself
    and the delivery options, plus the event type and deep link."""
    custom = {k: v for k, v in request.content.custom.items() if k not in OPTION_KEYS}
    if request.content.deep_link_url is not None:
        custom["deep_link_url"] = request.content.deep_link_url
    custom.setdefault("event_type", request.event_type)
    return custom
