"""Turn one raw stream entry into an Event or a Poison verdict. Pure: no I/O."""

from __future__ import annotations

import msgspec

from streamer.contract.event import MAX_USER_IDS, NotificationPayload, payload_decoder

# Dead-letter reasons for entries that can never be decoded.
MISSING_PAYLOAD = "missing_payload"
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
SCHEMA = "schema"
TOO_MANY_USERS = "too_many_users"


class Event(msgspec.Struct, frozen=True):
    """A decoded ingress entry.

    ``event_key`` is what deduplication keys on: the producer's ``id`` when given, else the
    stream entry id. A replayed entry (``replay_of`` set) is a deliberate second delivery,
    so it is keyed on its own new entry id.
    """

    entry_id: str
    payload: NotificationPayload
    event_key: str
    replay_of: str | None = None
    routed: bool = False  # forwarded from another stream: its other targets are not ours


class Poison(msgspec.Struct, frozen=True):
    entry_id: str
    reason: str
    error: str


def decode_payload(raw: bytes, max_bytes: int) -> NotificationPayload | tuple[str, str]:
    """Decode a JSON payload, or return (reason, error). Shared by the worker and the bridges."""
    if len(raw) > max_bytes:
        return TOO_LARGE, f"payload is {len(raw)} bytes, limit {max_bytes}"
    if not raw.isascii():
        # msgspec skips unknown fields without checking their bytes: check the whole payload,
        # so invalid UTF-8 anywhere is refused, as the contract says (isascii is a fast path).
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return INVALID_UTF8, str(exc)
    try:
        payload = payload_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return SCHEMA, str(exc)
    except UnicodeDecodeError as exc:  # msgspec raises this for bad UTF-8 inside strings
        return INVALID_UTF8, str(exc)
    except RecursionError:  # a few KB of nested arrays exhaust the decoder's stack
        return INVALID_JSON, "JSON nested too deeply"
    except msgspec.DecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf_exc:
            return INVALID_UTF8, str(utf_exc)
        return INVALID_JSON, str(exc)
    if payload.user_ids is not None and len(payload.user_ids) > MAX_USER_IDS:
        return TOO_MANY_USERS, f"{len(payload.user_ids)} user_ids, limit {MAX_USER_IDS}"
    return payload


def decode_entry(entry_id: str, fields: dict[bytes, bytes], max_bytes: int) -> Event | Poison:
    raw = fields.get(b"payload")
    if raw is None:
        return Poison(entry_id, MISSING_PAYLOAD, "entry has no 'payload' field")
    result = decode_payload(raw, max_bytes)
    if isinstance(result, tuple):
        return Poison(entry_id, *result)
    routed = b"routed_from" in fields
    replay_of = fields.get(b"replay_of")
    if replay_of is not None:
        return Event(entry_id, result, entry_id, replay_of.decode("utf-8", "replace"), routed)
    return Event(entry_id, result, result.id or entry_id, None, routed)
