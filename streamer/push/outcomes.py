"""What a provider's answer means, decided in one pure function per provider.

``apns_verdict`` and ``fcm_verdict`` turn a status code and error body into a Verdict; the
senders carry verdicts out and the worker's policy turns them into ack / retry / DLQ.
Reasons are bounded (known provider codes, else the HTTP status) so they can label metrics.
"""

from __future__ import annotations

import email.utils
import enum
from dataclasses import dataclass

import msgspec

from streamer.contract.event import Channel
from streamer.core.policy import ChannelResult, Outcome


class Kind(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: back off (honouring Retry-After), DLQ after MAX_DELIVERIES
    DEAD_TOKEN = "dead_token"  # record in the feedback stream and ack
    PERMANENT = "permanent"  # this message can never be sent: DLQ
    CONFIG = "config_error"  # our credentials/topic/project are wrong: DLQ, alarm
    REFRESH_AUTH = "refresh_auth"  # our provider token expired: mint a new one, send again


_OUTCOMES = {
    Kind.DELIVERED: Outcome.DELIVERED,
    Kind.RETRY: Outcome.RETRY,
    Kind.DEAD_TOKEN: Outcome.DEAD_TOKEN,
    Kind.PERMANENT: Outcome.PERMANENT,
    Kind.CONFIG: Outcome.PERMANENT,
    # Only reached when a fresh token was rejected too; that clears up by itself or not at
    # all, and MAX_DELIVERIES bounds it either way.
    Kind.REFRESH_AUTH: Outcome.RETRY,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    reason: str = ""  # bounded: "apns:<reason>" / "fcm:<code>"
    detail: str = ""  # the provider's words, for the DLQ's error field
    retry_after_ms: int | None = None

    def result(self, channel: Channel) -> ChannelResult:
        return ChannelResult(
            channel, _OUTCOMES[self.kind], self.reason, self.detail, self.retry_after_ms
        )


DELIVERED = Verdict(Kind.DELIVERED)

# --- APNs ------------------------------------------------------------------------------
# Reasons from Apple's "Handling notification responses from APNs".
_APNS_DEAD = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})
_APNS_CONFIG = frozenset(
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
_APNS_RETRY = frozenset(
    {
        "TooManyRequests",
        "TooManyProviderTokenUpdates",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
        "IdleTimeout",
    }
)
_APNS_PERMANENT = frozenset(
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
_APNS_KNOWN = _APNS_DEAD | _APNS_CONFIG | _APNS_RETRY | _APNS_PERMANENT | {"ExpiredProviderToken"}


def apns_verdict(status: int, reason: str | None, timestamp_ms: int | None = None) -> Verdict:
    """Classify one APNs response (status and the ``reason`` of its JSON body)."""
    if status == 200:
        return DELIVERED
    code = reason if reason in _APNS_KNOWN else f"http_{status}"
    label = f"apns:{code}"
    detail = f"{status} {reason or ''}".strip()
    if reason == "ExpiredProviderToken":
        return Verdict(Kind.REFRESH_AUTH, label, detail)
    if reason in _APNS_DEAD or status == 410:
        when = f" (unregistered at {timestamp_ms} ms)" if timestamp_ms else ""
        return Verdict(Kind.DEAD_TOKEN, label, detail + when)
    if reason in _APNS_CONFIG or status == 403:
        return Verdict(Kind.CONFIG, label, detail)
    if reason in _APNS_RETRY or status in (429, 500, 502, 503, 504):
        return Verdict(Kind.RETRY, label, detail)
    return Verdict(Kind.PERMANENT, label, detail)


def apns_connection_failure(what: str) -> Verdict:
    """GOAWAY, refused or dropped connections, timeouts: all transient."""
    return Verdict(Kind.RETRY, "apns:connection", what)


# --- FCM HTTP v1 -----------------------------------------------------------------------
class _FieldViolation(msgspec.Struct):
    field: str = ""


class _ErrorDetail(msgspec.Struct):
    error_code: str = msgspec.field(default="", name="errorCode")
    field_violations: list[_FieldViolation] = msgspec.field(
        default_factory=list, name="fieldViolations"
    )


class _Error(msgspec.Struct):
    message: str = ""
    status: str = ""
    details: list[_ErrorDetail] = msgspec.field(default_factory=list)


class _ErrorBody(msgspec.Struct):
    error: _Error = msgspec.field(default_factory=_Error)


_fcm_error_decoder = msgspec.json.Decoder(_ErrorBody)

_FCM_DEAD = frozenset({"UNREGISTERED"})
_FCM_CONFIG = frozenset({"SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED"})
_FCM_RETRY = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"})
_FCM_KNOWN = _FCM_DEAD | _FCM_CONFIG | _FCM_RETRY | {"INVALID_ARGUMENT", "UNAUTHENTICATED"}


@dataclass(frozen=True, slots=True)
class FcmError:
    """The parts of FCM's error JSON that decide an outcome."""

    code: str  # FcmError.errorCode when given, else the google.rpc status
    message: str
    about_token: bool  # a BadRequest field violation on message.token


def parse_fcm_error(body: bytes) -> FcmError:
    try:
        error = _fcm_error_decoder.decode(body).error
    except msgspec.DecodeError:
        return FcmError("", body[:200].decode("utf-8", "replace"), False)
    codes = [d.error_code for d in error.details if d.error_code]
    violations = [v.field for d in error.details for v in d.field_violations]
    about_token = "message.token" in violations or "registration token" in error.message.lower()
    return FcmError(codes[0] if codes else error.status, error.message, about_token)


def fcm_verdict(status: int, body: bytes, retry_after: str | None, now_s: float) -> Verdict:
    """Classify one FCM v1 ``messages:send`` response."""
    if status == 200:
        return DELIVERED
    error = parse_fcm_error(body)
    code = error.code if error.code in _FCM_KNOWN else f"http_{status}"
    label = f"fcm:{code}"
    detail = f"{status} {error.code} {error.message}".strip()
    if error.code in _FCM_DEAD:
        return Verdict(Kind.DEAD_TOKEN, label, detail)
    if error.code == "INVALID_ARGUMENT" or status == 400:
        return Verdict(Kind.DEAD_TOKEN if error.about_token else Kind.PERMANENT, label, detail)
    if error.code in _FCM_CONFIG:
        return Verdict(Kind.CONFIG, label, detail)
    if status == 401:
        # Our access token was refused: refresh it once before calling it a config error.
        return Verdict(Kind.REFRESH_AUTH, label, detail)
    if error.code in _FCM_RETRY or status == 429 or status >= 500:
        return Verdict(Kind.RETRY, label, detail, retry_after_ms(retry_after, now_s))
    if status in (403, 404):
        return Verdict(Kind.CONFIG, label, detail)  # wrong project or missing permission
    return Verdict(Kind.PERMANENT, label, detail)


def fcm_connection_failure(what: str) -> Verdict:
    return Verdict(Kind.RETRY, "fcm:connection", what)


def retry_after_ms(value: str | None, now_s: float) -> int | None:
    """A Retry-After header (delay in seconds, or an HTTP date) as milliseconds from now."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((when.timestamp() - now_s) * 1000))
