"""What an APNs answer means. Pure.

Reasons from Apple's "Handling notification responses from APNs"; unknown ones become
``apns:http_<status>`` so the label set stays bounded.
"""

from __future__ import annotations

import msgspec

from streamer.push.http2.connection import Response
from streamer.push.verdict import DELIVERED, Kind, Verdict

_DEAD = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})
_CONFIG = frozenset(
    {
        "InvalidProviderToken",
        "MissingProviderToken",
        "BadCertificate",
        "BadCertificateEnvironment",
        "TopicDisallowed",
        "BadTopic",
        "MissingTopic",
        "Forbidden",
    }
)
_RETRY = frozenset(
    {
        "TooManyRequests",
        "TooManyProviderTokenUpdates",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
        "IdleTimeout",
    }
)
_PERMANENT = frozenset(
    {
        "BadCollapseId",
        "BadExpirationDate",
        "BadMessageId",
        "BadPriority",
        "BadPath",
        "DeviceTokenNotForTopic",  # could be our topic being wrong: never prune tokens on it
        "DuplicateHeaders",
        "InvalidPushType",
        "MissingDeviceToken",
        "PayloadEmpty",
        "PayloadTooLarge",
        "MethodNotAllowed",
    }
)
KNOWN = _DEAD | _CONFIG | _RETRY | _PERMANENT | {"ExpiredProviderToken"}


class _ErrorBody(msgspec.Struct):
    reason: str | None = None
    timestamp: int | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)


def apns_verdict(status: int, reason: str | None, timestamp_ms: int | None = None) -> Verdict:
    """Classify one APNs response (status and the ``reason`` of its JSON body)."""
    if status == 200:
        return DELIVERED
    code = reason if reason in KNOWN else f"http_{status}"
    label = f"apns:{code}"
    detail = f"{status} {reason or ''}".strip()
    if reason == "ExpiredProviderToken":
        return Verdict(Kind.REFRESH_AUTH, label, detail)
    if reason in _DEAD or status == 410:
        when = f" (unregistered at {timestamp_ms} ms)" if timestamp_ms else ""
        return Verdict(Kind.DEAD_TOKEN, label, detail + when)
    if reason in _CONFIG or status == 403:
        return Verdict(Kind.CONFIG, label, detail)
    if reason in _RETRY or status in (429, 500, 502, 503, 504):
        return Verdict(Kind.RETRY, label, detail)
    return Verdict(Kind.PERMANENT, label, detail)


def response_verdict(response: Response) -> Verdict:
    if response.status == 200:
        return DELIVERED
    try:
        body = _error_decoder.decode(response.body)
    except msgspec.DecodeError:
        body = _ErrorBody()
    return apns_verdict(response.status, body.reason, body.timestamp)
