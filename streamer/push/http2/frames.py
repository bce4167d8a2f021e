"""HTTP/2 frames (RFC 9113 §4 and §6): the 9-octet header, the codes this client uses, and a
reader that cuts a byte stream into whole frames. Pure: no I/O."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (§6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (§7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9

# Settings (§6.5.2)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME_SIZE = 16_384
LARGEST_FRAME_SIZE = 16_777_215
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1

# The 24-bit length is packed as 16 + 8 bits; the stream id's reserved bit is masked on read.
_HEAD = struct.Struct(">HBBBL")
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


class ProtocolError(Exception):
    """The peer broke the protocol (a connection error, §5.4.1): the connection ends with
    GOAWAY carrying ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def u32_frame(kind: int, stream_id: int, value: int) -> bytes:
    """RST_STREAM (an error code) or WINDOW_UPDATE (an increment)."""
    return frame(kind, 0, stream_id, _U32.pack(value))


def parse_u32(payload: bytes, what: str) -> int:
    if len(payload) != 4:
        raise ProtocolError(FRAME_SIZE_ERROR, f"{what} payload is not 4 octets")
    value: int = _U32.unpack(payload)[0]
    return value & 0x7FFFFFFF if what == "WINDOW_UPDATE" else value


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def parse_goaway(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < 8:
        raise ProtocolError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets")
    last, code = _GOAWAY.unpack_from(payload)
    return last & 0x7FFFFFFF, code, payload[8:]


def unpad(flags: int, payload: bytes) -> bytes:
    """The payload of a DATA or HEADERS frame without its padding (§6.1)."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError(PROTOCOL_ERROR, "padding exceeds the frame")
    return payload[1 : len(payload) - payload[0]]


class FrameReader:
    """Whole frames out of a byte stream, refusing any longer than our SETTINGS allow."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_frame_size

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        position, end = 0, len(buffer)
        while end - position >= 9:
            high, low, kind, flags, stream_id = _HEAD.unpack_from(buffer, position)
            size = high << 8 | low
            if size > self._max:
                raise ProtocolError(FRAME_SIZE_ERROR, f"a {size}-octet frame")
            start = position + 9
            if end - start < size:
                break
            frames.append(
                (kind, flags, stream_id & 0x7FFFFFFF, bytes(buffer[start : start + size]))
            )
            position = start + size
        del buffer[:position]
        return frames
