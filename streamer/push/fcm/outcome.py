"""What an FCM HTTP v1 answer means. Pure.

The deciding parts of FCM's error JSON are the FcmError ``errorCode`` (else the google.rpc
status) and whether a BadRequest field violation is about ``message.token``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from streamer.push.verdict import DELIVERED, Kind, Verdict, retry_after_ms


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


_error_decoder = msgspec.json.Decoder(_ErrorBody)

_DEAD = frozenset({"UNREGISTERED"})
_CONFIG = frozenset({"SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED"})
_RETRY = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"})
KNOWN = _DEAD | _CONFIG | _RETRY | {"INVALID_ARGUMENT", "UNAUTHENTICATED"}


@dataclass(frozen=True, slots=True)
class FcmError:
    code: str  # FcmError.errorCode when given, else the google.rpc status
    message: str
    about_token: bool  # a BadRequest field violation on message.token


def parse_fcm_error(body: bytes) -> FcmError:
    try:
        error = _error_decoder.decode(body).error
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
    code = error.code if error.code in KNOWN else f"http_{status}"
    label = f"fcm:{code}"
    detail = f"{status} {error.code} {error.message}".strip()
    if error.code in _DEAD:
        return Verdict(Kind.DEAD_TOKEN, label, detail)
    if error.code == "INVALID_ARGUMENT" or status == 400:
        return Verdict(Kind.DEAD_TOKEN if error.about_token else Kind.PERMANENT, label, detail)
    if error.code in _CONFIG:
        return Verdict(Kind.CONFIG, label, detail)
    if status == 401:
        # Our access token was refused: refresh it once before calling it a config error.
        return Verdict(Kind.REFRESH_AUTH, label, detail)
    if error.code in _RETRY or status == 429 or status >= 500:
        return Verdict(Kind.RETRY, label, detail, retry_after_ms(retry_after, now_s))
    if status in (403, 404):
        return Verdict(Kind.CONFIG, label, detail)  # wrong project or missing permission
    return Verdict(Kind.PERMANENT, label, detail)
