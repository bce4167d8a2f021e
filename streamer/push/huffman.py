"""HPACK Huffman encoding (RFC 7541 §5.2, Appendix B) for the APNs HTTP/2 connections.

hpack's encoder shifts one growing Python int per input byte; on an APNs request that is
the largest single cost, mostly for the provider JWT, which HTTP/2 sends as a never-indexed
literal (RFC 7541 §7.1.3) on every request. This encoder joins precomputed bit strings and
converts them once, and remembers the codes of recent long values (the JWT repeats for 40
minutes). Its output is byte-for-byte hpack's.
"""

from __future__ import annotations

from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

_BITS = tuple(
    format(code, f"0{length}b")
    for code, length in zip(REQUEST_CODES[:256], REQUEST_CODES_LENGTH[:256], strict=True)
)
CACHE_MIN_BYTES = 32  # shorter values are cheap to encode
CACHE_ENTRIES = 128  # cleared when full: unique values (device paths) cannot grow it


def huffman_encode(data: bytes) -> bytes:
    bits = "".join(map(_BITS.__getitem__, data))
    padding = -len(bits) % 8  # pad with the most significant bits of EOS: all ones
    return int(bits + "1" * padding, 2).to_bytes((len(bits) + padding) // 8, "big")


class CachedHuffmanEncoder(HuffmanEncoder):
    """A drop-in for ``hpack.Encoder.huffman_coder``."""

    def __init__(self) -> None:
        super().__init__(REQUEST_CODES, REQUEST_CODES_LENGTH)
        self._recent: dict[bytes, bytes] = {}

    def encode(self, bytes_to_encode: bytes | None) -> bytes:
        if not bytes_to_encode:
            return b""
        if len(bytes_to_encode) < CACHE_MIN_BYTES:
            return huffman_encode(bytes_to_encode)
        encoded = self._recent.get(bytes_to_encode)
        if encoded is None:
            if len(self._recent) >= CACHE_ENTRIES:
                self._recent.clear()
            encoded = self._recent[bytes_to_encode] = huffman_encode(bytes_to_encode)
        return encoded
