"""Unit tests: decoding stream entries and the wire schemas (no I/O)."""

from __future__ import annotations

import pytest

from streamer.contract.decode import Event, Poison, decode_entry
from streamer.contract.event import push_content

LIMIT = 65536


def entry(payload: bytes | None, **extra: bytes) -> dict[bytes, bytes]:
    fields = {k.encode(): v for k, v in extra.items()}
    if payload is not None:
        fields[b"payload"] = payload
    return fields


def test_valid_event_defaults() -> None:
    """A minimal payload decodes with the seed's defaults and is keyed on its entry id."""
    result = decode_entry("1-0", entry(b'{"user_id":"u1","event_type":"x","extra":1}'), LIMIT)
    assert isinstance(result, Event)
    assert result.payload.data == {}
    assert result.payload.channels() == ("websocket",)
    assert result.event_key == "1-0"


def test_producer_id_is_the_dedupe_key_and_replays_use_their_own_id() -> None:
    """A producer id keys dedupe; a replayed entry is keyed on its new entry id."""
    raw = b'{"user_id":"u1","event_type":"x","id":"evt-9"}'
    assert decode_entry("1-0", entry(raw), LIMIT).event_key == "evt-9"  # type: ignore[union-attr]
    replayed = decode_entry("5-0", entry(raw, replay_of=b"1-0"), LIMIT)
    assert isinstance(replayed, Event)
    assert (replayed.event_key, replayed.replay_of) == ("5-0", "1-0")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (entry(None, other=b"x"), "missing_payload"),
        (entry(b"\xff\xfe{"), "invalid_utf8"),
        (entry(b'{"user_id": "u1", "event_type": "x", "data": {"t": "\xff"}}'), "invalid_utf8"),
        (entry(b"{not json"), "invalid_json"),
        (entry(b'{"event_type":"x"}'), "schema"),
        (entry(b'{"user_id":"u1","event_type":"x","target_channels":["sms"]}'), "schema"),
        (entry(b'{"user_id":"u1","event_type":"x","target_channels":[]}'), "schema"),
        (entry(b'{"user_id":"a b","event_type":"x"}'), "schema"),
        (entry(b'{"user_id":"{u}","event_type":"x"}'), "schema"),
        (entry(b'{"user_id":"u1","event_type":"x","data":[1]}'), "schema"),
        (
            entry(
                b'{"user_id":"u","event_type":"x","data":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
            ),
            "invalid_json",
        ),
        (
            entry(b'{"user_id":"u1","event_type":"x","data":{"pad":"' + b"a" * LIMIT + b'"}}'),
            "too_large",
        ),
    ],
)
def test_poison_entries_get_a_reason(fields: dict[bytes, bytes], reason: str) -> None:
    """Every kind of poison entry is classified with its dead-letter reason."""
    result = decode_entry("1-0", fields, LIMIT)
    assert isinstance(result, Poison)
    assert result.reason == reason
    assert result.error


def test_push_content_splits_known_fields_from_custom_data() -> None:
    """Title, body and deep link come from data; other keys become custom data."""
    result = decode_entry(
        "1-0",
        entry(
            b'{"user_id":"u1","event_type":"x","data":{"title":"T","body":"B",'
            b'"deep_link_url":"app://x","job":7,"device_token":"tok"}}'
        ),
        LIMIT,
    )
    assert isinstance(result, Event)
    content = push_content(result.payload)
    assert (content.title, content.body, content.deep_link_url) == ("T", "B", "app://x")
    assert content.custom == {"job": 7}
    assert result.payload.token() == "tok"
