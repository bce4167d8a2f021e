"""Frames: the 9-octet header both ways, whole frames out of any split, size limits. No I/O."""

from __future__ import annotations

import pytest

from streamer.push.http2 import frames as f


def test_frames_are_cut_whole_from_a_stream_fed_octet_by_octet() -> None:
    """However the bytes arrive, the reader yields each frame once, whole, in order."""
    stream = (
        f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x88")
        + f.frame(f.DATA, f.END_STREAM, 1, b"x" * 300)
        + f.settings_frame({f.MAX_CONCURRENT_STREAMS: 5})
        + f.frame(f.PING, 0, 0, b"12345678")
    )
    reader = f.FrameReader()
    frames = [frame for i in range(len(stream)) for frame in reader.feed(stream[i : i + 1])]
    assert frames == [
        (f.HEADERS, f.END_HEADERS, 1, b"\x88"),
        (f.DATA, f.END_STREAM, 1, b"x" * 300),
        (f.SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x05"),
        (f.PING, 0, 0, b"12345678"),
    ]


def test_the_reserved_bit_of_the_stream_id_is_ignored() -> None:
    """RFC 9113 §4.1: the R bit must be ignored when receiving."""
    raw = bytearray(f.frame(f.DATA, 0, 3, b"a"))
    raw[5] |= 0x80
    assert f.FrameReader().feed(bytes(raw)) == [(f.DATA, 0, 3, b"a")]


def test_a_frame_over_our_max_frame_size_is_a_connection_error() -> None:
    """A frame longer than SETTINGS_MAX_FRAME_SIZE (16,384 by default) is FRAME_SIZE_ERROR."""
    with pytest.raises(f.ProtocolError) as raised:
        f.FrameReader().feed(f.frame(f.DATA, 0, 1, b"x" * 16_385))
    assert raised.value.code == f.FRAME_SIZE_ERROR


def test_padding_is_removed_and_checked() -> None:
    """PADDED frames lose their pad length octet and padding; padding past the end is an error."""
    assert f.unpad(f.PADDED, b"\x02abc\x00\x00") == b"abc"
    assert f.unpad(0, b"\x02abc") == b"\x02abc"
    with pytest.raises(f.ProtocolError):
        f.unpad(f.PADDED, b"\x09ab")


def test_settings_goaway_and_window_update_payloads_round_trip() -> None:
    """The fixed-layout payloads decode to what was encoded; malformed lengths are errors."""
    settings = f.settings_frame({f.HEADER_TABLE_SIZE: 0, f.INITIAL_WINDOW_SIZE: 1 << 20})
    assert f.parse_settings(settings[9:]) == [
        (f.HEADER_TABLE_SIZE, 0),
        (f.INITIAL_WINDOW_SIZE, 1 << 20),
    ]
    assert f.parse_goaway(f.goaway_frame(7, f.PROTOCOL_ERROR, b"bye")[9:]) == (7, 1, b"bye")
    assert f.parse_u32(f.u32_frame(f.WINDOW_UPDATE, 0, 1000)[9:], "WINDOW_UPDATE") == 1000
    for bad in (lambda: f.parse_settings(b"\x00" * 5), lambda: f.parse_goaway(b"\x00" * 7)):
        with pytest.raises(f.ProtocolError):
            bad()
