"""Hypothesis strategies for fuzzed stream entries and client frames, and how to run a
bounded Hypothesis search beside an asyncio scenario.

An entry is generated as a *template* and rendered with a tag (a unique number) only when
it is added, because Hypothesis cannot promise unique values: valid events carry the tag
as ``data.seq`` so the client that receives one can be matched to its entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Invalid UTF-8: a stray continuation byte, a truncated sequence, an overlong encoding, an
# encoded surrogate, a byte that never occurs.
BAD_UTF8 = (b"\x80", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff")
SPLICE = "@@splice@@"
MAX_PAYLOAD_BYTES = 4096

# What the worker must do with an entry. DELIVERED: on its user's sockets; ANY: delivered
# or dead-lettered with a documented reason; REJECTED: dead-lettered with a documented
# reason; otherwise: dead-lettered with that reason.
DELIVERED, ANY, REJECTED = "delivered", "any", "rejected"
REASONS = ("too_large", "invalid_json", "invalid_utf8", "schema", "missing_payload")


@dataclass(frozen=True, slots=True)
class Template:
    kind: str
    body: Any  # a JSON-able value, or raw bytes for kind "bytes"
    bad: bytes | None = None  # replaces SPLICE in the encoded payload
    has_payload: bool = True

    def render(self, tag: int) -> tuple[dict[bytes, bytes], str]:
        """The entry's fields and what must become of it."""
        if not self.has_payload:
            return {b"note": b"no payload field"}, "missing_payload"
        raw = self._encode(tag)
        return {b"payload": raw}, self._expect(raw)

    def _encode(self, tag: int) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        body = self.body
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            body = {**body, "data": {**body["data"], "seq": tag}}
            if body.get("id") == "<tag>":
                body["id"] = f"fz-{tag}"
        raw = json.dumps(body).encode()
        return raw.replace(SPLICE.encode(), self.bad) if self.bad is not None else raw

    def _expect(self, raw: bytes) -> str:
        if len(raw) > MAX_PAYLOAD_BYTES:
            return "too_large"
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            # Anywhere, also in fields the schema ignores (README). A payload that is also
            # a schema violation may be dead-lettered for either.
            return "invalid_utf8" if self.kind in ("valid", "bytes") else REJECTED
        return DELIVERED if self.kind == "valid" else ANY


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_known = {"user_id", "event_type", "data", "target_channels", "device_token", "device_type", "id"}
_unknown_keys = st.text(
    st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=10
).filter(lambda k: k not in _known)


def valid_events(users: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Events the schema accepts, for users with a socket, with unknown fields beside."""
    return st.builds(
        lambda user, kind, data, channels, producer_id, extra: {
            "user_id": user,
            "event_type": kind,
            "data": data,
            **({"target_channels": channels} if channels else {}),
            **({"id": "<tag>"} if producer_id else {}),
            **extra,
        },
        st.sampled_from(users),
        st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=30),
        st.dictionaries(_unknown_keys, _json_scalars, max_size=3),
        st.sampled_from(
            [None, ["websocket"], ["websocket", "push_ios"], ["push_android", "websocket"]]
        ),
        st.booleans(),
        st.dictionaries(_unknown_keys, json_values, max_size=3),
    )


_bad_user_ids = st.one_of(
    st.just(""),
    st.just("a b"),
    st.just("{u}"),
    st.just("x" * 300),
    st.just("tab\there"),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)


def mutants(users: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Events with some fields wrong, missing, or of the wrong type. ``data`` stays, so
    that one that is delivered all the same still carries its tag."""
    return st.builds(
        lambda event, drop, user, kind, data, channels: _mutate(
            event, drop, user, kind, data, channels
        ),
        valid_events(users),
        st.sets(st.sampled_from(["user_id", "event_type"]), max_size=2),
        st.none() | _bad_user_ids,
        st.none() | st.just("") | st.integers() | st.text(min_size=257, max_size=300),
        st.none() | json_values,
        st.none() | st.lists(st.sampled_from(["websocket", "sms", 3, None, ""]), max_size=3),
    )


def _mutate(
    event: dict[str, Any], drop: set[str], user: Any, kind: Any, data: Any, channels: Any
) -> dict[str, Any]:
    mutated = {k: v for k, v in event.items() if k not in drop}
    for field, value in (
        ("user_id", user),
        ("event_type", kind),
        ("data", data),
        ("target_channels", channels),
    ):
        if value is not None:
            mutated[field] = value
    return mutated


def _spliced(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[tuple[Any, bytes]]:
    """The event with invalid UTF-8 inside an unknown field's value or key."""
    return st.tuples(strategy, st.sampled_from(BAD_UTF8), st.booleans()).map(
        lambda t: ({**t[0], **({SPLICE: 1} if t[2] else {"junk": f"a{SPLICE}b"})}, t[1])
    )


def templates(users: list[str]) -> st.SearchStrategy[Template]:
    return st.one_of(
        valid_events(users).map(lambda e: Template("valid", e)),
        _spliced(valid_events(users)).map(lambda t: Template("valid", t[0], bad=t[1])),
        mutants(users).map(lambda e: Template("mutant", e)),
        _spliced(mutants(users)).map(lambda t: Template("mutant", t[0], bad=t[1])),
        json_values.map(lambda v: Template("json", v)),
        st.binary(max_size=200).map(lambda b: Template("bytes", b)),
        valid_events(users).map(lambda e: Template("valid", {**e, "pad": "x" * MAX_PAYLOAD_BYTES})),
        st.just(Template("missing", None, has_payload=False)),
    )


def search(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int) -> None:
    """Run ``check`` on ``examples`` generated values (blocking: call it in a thread). No
    example database: the suite explores afresh on every run, and a failure prints its
    input."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        check(value)

    run()
