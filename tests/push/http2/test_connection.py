"""The sans-I/O client connection against the `h2` library as the server, in memory: bytes
pass between the two objects, no sockets. Covers SETTINGS, flow control both ways, frame
and stream limits, CONTINUATION, PING, GOAWAY, RST_STREAM and the protocol errors."""

from __future__ import annotations

from typing import Any

import pytest
from h2 import events as h2e
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from streamer.push.http2 import connection as c
from streamer.push.http2 import frames as f
from streamer.push.http2.connection import (
    ClientConnection,
    GoAwayReceived,
    PingAcknowledged,
    ResponseReceived,
    StreamFailed,
)

FIELDS = [
    (b":method", b"POST", True),
    (b":scheme", b"https", True),
    (b":authority", b"fcm.googleapis.com", True),
    (b":path", b"/v1/projects/p/messages:send", True),
    (b"authorization", b"Bearer token", True),
]


class Peer:
    """An `h2` server connection: the independent other end."""

    def __init__(self, **settings: int) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings({getattr(SettingCodes, k): v for k, v in settings.items()})
        self.events: list[Any] = []

    def take(self, client: ClientConnection) -> list[Any]:
        """Feed the client's bytes to h2; return h2's events."""
        new = self.h2.receive_data(client.data_to_send())
        self.events += new
        return new

    def give(self, client: ClientConnection) -> list[c.Event]:
        """Feed h2's bytes to the client; return the client's events."""
        return client.receive(self.h2.data_to_send())

    def respond(self, stream_id: int, status: int, body: bytes = b"", **headers: str) -> None:
        fields = [(":status", str(status)), *((k.replace("_", "-"), v) for k, v in headers.items())]
        self.h2.send_headers(stream_id, fields, end_stream=not body)
        for start in range(0, len(body), 16_384):
            chunk = body[start : start + 16_384]
            self.h2.send_data(stream_id, chunk, end_stream=start + 16_384 >= len(body))


def connected(**settings: int) -> tuple[ClientConnection, Peer]:
    client, peer = ClientConnection([b"retry-after"]), Peer(**settings)
    peer.take(client)
    peer.give(client)
    peer.take(client)  # the client's SETTINGS ACK
    return client, peer


def bodies(events: list[Any]) -> dict[int, bytes]:
    received: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, h2e.DataReceived):
            received[event.stream_id] = received.get(event.stream_id, b"") + event.data
    return received


def test_the_handshake_asks_for_no_push_no_table_and_wide_windows() -> None:
    """Preface, SETTINGS (ENABLE_PUSH 0, HEADER_TABLE_SIZE 0, 1 MiB windows) and a connection
    WINDOW_UPDATE; no request may start before the server's SETTINGS."""
    client, peer = ClientConnection(), Peer(MAX_CONCURRENT_STREAMS=7)
    assert client.available() == 0
    events = peer.take(client)
    changed = next(e for e in events if isinstance(e, h2e.RemoteSettingsChanged))
    assert {k: v.new_value for k, v in changed.changed_settings.items()} == {
        SettingCodes.ENABLE_PUSH: 0,
        SettingCodes.HEADER_TABLE_SIZE: 0,
        SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
    }
    assert any(isinstance(e, h2e.WindowUpdated) and e.stream_id == 0 for e in events)
    peer.give(client)
    assert client.available() == 7
    assert any(isinstance(e, h2e.SettingsAcknowledged) for e in peer.take(client))


def test_a_request_and_its_response_cross_intact() -> None:
    """Headers and body reach the server as sent; status, wanted headers and a body split over
    DATA frames come back as one response."""
    client, peer = connected()
    stream_id = client.request([*FIELDS, (b"content-type", b"application/json", True)], b"{}")
    events = peer.take(client)
    request = next(e for e in events if isinstance(e, h2e.RequestReceived))
    assert dict(request.headers)[b":path"] == b"/v1/projects/p/messages:send"
    assert dict(request.headers)[b"authorization"] == b"Bearer token"
    assert bodies(events) == {stream_id: b"{}"}
    assert any(isinstance(e, h2e.StreamEnded) for e in events)
    peer.h2.send_headers(stream_id, [(":status", "429"), ("retry-after", "7"), ("x", "y")])
    peer.h2.send_data(stream_id, b'{"error":')
    peer.h2.send_data(stream_id, b"{}}", end_stream=True)
    (answer,) = peer.give(client)
    assert isinstance(answer, ResponseReceived) and answer.stream_id == stream_id
    assert answer.response.status == 429
    assert answer.response.headers == {b":status": b"429", b"retry-after": b"7"}
    assert answer.response.body == b'{"error":{}}'
    assert client.open_streams == 0


def test_informational_answers_are_skipped_for_the_final_one() -> None:
    """A 1xx HEADERS block is followed by the real answer; only that one is reported."""
    client, peer = connected()
    stream_id = client.request(FIELDS, b"")
    peer.take(client)
    peer.h2.send_headers(stream_id, [(":status", "100")])
    assert peer.give(client) == []
    peer.respond(stream_id, 200)
    (answer,) = peer.give(client)
    assert isinstance(answer, ResponseReceived) and answer.response.status == 200


def test_a_body_waits_for_the_stream_window_the_server_grants() -> None:
    """With the server's INITIAL_WINDOW_SIZE at 10 octets a body goes out 10 at a time, as
    WINDOW_UPDATEs arrive, and never more than granted (h2 would refuse it)."""
    client, peer = connected(INITIAL_WINDOW_SIZE=10)
    stream_id = client.request(FIELDS, b"x" * 25)
    received = b""
    for _ in range(3):
        events = peer.take(client)
        chunk = bodies(events).get(stream_id, b"")
        assert len(chunk) <= 10
        received += chunk
        if chunk:
            peer.h2.acknowledge_received_data(len(chunk), stream_id)
        peer.give(client)
    assert received == b"x" * 25
    assert any(isinstance(e, h2e.StreamEnded) for e in peer.events)


def test_bodies_wait_for_the_connection_window_too() -> None:
    """Two bodies larger than the connection's 65,535 octets together: the second resumes
    when the server opens the connection window, and frames never exceed 16,384 octets."""
    client, peer = connected()
    first, second = client.request(FIELDS, b"a" * 40_000), client.request(FIELDS, b"b" * 40_000)
    raw = client.data_to_send()
    assert all(length <= 16_384 for length in _frame_lengths(raw))
    events = peer.h2.receive_data(raw)
    got = bodies(events)
    assert len(got[first]) + len(got.get(second, b"")) == 65_535
    peer.h2.acknowledge_received_data(65_535 // 2 + 1, first)
    peer.give(client)
    peer.h2.acknowledge_received_data(65_535 // 2, first)
    peer.give(client)
    got = bodies([*events, *peer.take(client)])
    assert (got[first], got[second]) == (b"a" * 40_000, b"b" * 40_000)


def _frame_lengths(raw: bytes) -> list[int]:
    raw = raw.removeprefix(f.PREFACE)
    return [len(payload) for _, _, _, payload in f.FrameReader(1 << 24).feed(raw)]


def test_a_large_header_block_continues_in_continuation_frames() -> None:
    """A header block over the server's frame size is split into HEADERS + CONTINUATION."""
    client, peer = connected()
    big = b"x" * 40_000
    client.request([*FIELDS, (b"x-big", big, False)], b"")
    request = next(e for e in peer.take(client) if isinstance(e, h2e.RequestReceived))
    assert dict(request.headers)[b"x-big"] == big


def test_the_server_stream_limit_is_honoured() -> None:
    """MAX_CONCURRENT_STREAMS 2: two requests, then none until one ends."""
    client, peer = connected(MAX_CONCURRENT_STREAMS=2)
    first = client.request(FIELDS, b"")
    client.request(FIELDS, b"")
    assert client.available() == 0
    peer.take(client)
    peer.respond(first, 200)
    peer.give(client)
    assert client.available() == 1


def test_pings_are_answered_and_acknowledged() -> None:
    """The server's PING gets an ACK with its payload; ours comes back as an event."""
    client, peer = connected()
    peer.h2.ping(b"12345678")
    assert peer.give(client) == []
    assert any(isinstance(e, h2e.PingAckReceived) for e in peer.take(client))
    client.ping(b"abcdefgh")
    peer.take(client)
    assert peer.give(client) == [PingAcknowledged(b"abcdefgh")]


def test_goaway_fails_only_the_streams_the_server_never_read() -> None:
    """GOAWAY(last=3): stream 5 is unprocessed (safe to resend elsewhere), 1 and 3 still get
    their answers, and no new stream starts on the connection."""
    client, peer = connected()
    ids = [client.request(FIELDS, b"{}") for _ in range(3)]
    assert ids == [1, 3, 5]
    peer.take(client)
    peer.h2.close_connection(last_stream_id=3)
    events = peer.give(client)
    assert events[0] == StreamFailed(5, True, "GOAWAY (0) before it was read")
    assert isinstance(events[1], GoAwayReceived) and events[1].last_stream_id == 3
    assert client.available() == 0 and client.open_streams == 2


def test_goaway_after_answers_on_the_wire_still_delivers_them() -> None:
    """Answers sent before GOAWAY arrive; streams at or below the last id stay open."""
    client, peer = connected()
    first, second = client.request(FIELDS, b""), client.request(FIELDS, b"")
    peer.take(client)
    peer.respond(first, 200)
    raw = peer.h2.data_to_send() + f.goaway_frame(second, f.NO_ERROR)
    events = client.receive(raw)
    assert [type(e) for e in events] == [ResponseReceived, GoAwayReceived]
    assert client.open_streams == 1


def test_resets_say_whether_the_server_processed_the_stream() -> None:
    """REFUSED_STREAM means never processed; any other RST_STREAM means it may have been."""
    client, peer = connected()
    refused, broken = client.request(FIELDS, b""), client.request(FIELDS, b"")
    peer.take(client)
    peer.h2.reset_stream(refused, ErrorCodes.REFUSED_STREAM)
    peer.h2.reset_stream(broken, ErrorCodes.INTERNAL_ERROR)
    failed = peer.give(client)
    assert [(e.stream_id, e.unprocessed) for e in failed if isinstance(e, StreamFailed)] == [
        (refused, True),
        (broken, False),
    ]


def test_a_cancelled_stream_is_reset_and_its_late_answer_ignored() -> None:
    """cancel() sends RST_STREAM(CANCEL); an answer already in flight is dropped and the
    connection carries on."""
    client, peer = connected()
    stream_id = client.request(FIELDS, b"")
    peer.take(client)
    peer.h2.send_headers(stream_id, [(":status", "200")])
    late = peer.h2.data_to_send() + f.frame(f.DATA, f.END_STREAM, stream_id, b"late")
    client.cancel(stream_id)
    reset = [e for e in peer.take(client) if isinstance(e, h2e.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in reset] == [(stream_id, ErrorCodes.CANCEL)]
    assert client.receive(late) == []
    following = client.request(FIELDS, b"")
    peer.take(client)
    peer.respond(following, 200)
    (answer,) = peer.give(client)
    assert isinstance(answer, ResponseReceived) and answer.stream_id == following


def test_the_connection_window_is_replenished(monkeypatch: pytest.MonkeyPatch) -> None:
    """After half the connection window is consumed, a WINDOW_UPDATE restores it (h2 would
    stall, then refuse, without one)."""
    monkeypatch.setattr(c, "CONNECTION_WINDOW", 1 << 17)
    client, peer = connected()
    for _ in range(4):
        stream_id = client.request(FIELDS, b"")
        peer.take(client)
        peer.respond(stream_id, 200, b"z" * 30_000)
        (answer,) = peer.give(client)
        assert isinstance(answer, ResponseReceived) and len(answer.response.body) == 30_000
    peer.take(client)
    updates = [e for e in peer.events if isinstance(e, h2e.WindowUpdated)]
    # The opening update, then one when under half was left: two 30,000-octet bodies and the
    # first 16,384-octet frame of the third.
    assert [(e.stream_id, e.delta) for e in updates] == [(0, (1 << 17) - 65_535), (0, 76_384)]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (f.frame(f.PUSH_PROMISE, f.END_HEADERS, 1, b"\x00\x00\x00\x02\x88"), f.PROTOCOL_ERROR),
        (f.frame(f.DATA, 0, 9, b"x"), f.PROTOCOL_ERROR),
        (f.frame(f.HEADERS, f.END_HEADERS, 2, b"\x88"), f.PROTOCOL_ERROR),
        (f.u32_frame(f.WINDOW_UPDATE, 0, 2**31 - 1), f.FLOW_CONTROL_ERROR),
        (f.settings_frame({f.MAX_FRAME_SIZE: 100}), f.PROTOCOL_ERROR),
        (f.frame(f.CONTINUATION, f.END_HEADERS, 1, b"\x88"), f.PROTOCOL_ERROR),
        (f.frame(f.PING, 0, 0, b"short"), f.FRAME_SIZE_ERROR),
    ],
    ids=[
        "push-promise",
        "idle-stream",
        "server-stream",
        "window-overflow",
        "frame-size",
        "stray-continuation",
        "ping-size",
    ],
)
def test_protocol_violations_are_connection_errors(raw: bytes, code: int) -> None:
    """What the RFC calls a connection error raises ProtocolError with its code."""
    client, _ = connected()
    client.request(FIELDS, b"")
    with pytest.raises(f.ProtocolError) as raised:
        client.receive(raw)
    assert raised.value.code == code


def test_close_sends_goaway_and_nothing_after() -> None:
    """close() sends GOAWAY with our last stream id 0 (we accept no server streams)."""
    client, peer = connected()
    client.close(f.NO_ERROR, "bye")
    client.ping(b"12345678")  # queued after close: never answered by the peer
    terminated = [e for e in peer.take(client) if isinstance(e, h2e.ConnectionTerminated)]
    assert [(e.error_code, e.last_stream_id) for e in terminated] == [(ErrorCodes.NO_ERROR, 0)]
    assert client.available() == 0
