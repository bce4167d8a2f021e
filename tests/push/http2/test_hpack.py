"""HPACK against the `hpack` library, in both directions: what we encode it decodes, what it
encodes (Huffman, indexing, never-indexed, size updates) we decode. No I/O."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder as ReferenceDecoder
from hpack import Encoder as ReferenceEncoder
from hpack import NeverIndexedHeaderTuple

from streamer.push.http2.frames import ProtocolError
from streamer.push.http2.hpack import EVERY_FIELD, Decoder, Encoder, decode_int, encode_int

JWT = b"bearer " + b"eyJhbGciOiJFUzI1NiIsImtpZCI6IktFWUlEMTIzNDUifQ" * 4


def request_fields(path: bytes, credential: bytes = JWT) -> list[tuple[bytes, bytes, bool]]:
    return [
        (b":method", b"POST", True),
        (b":scheme", b"https", True),
        (b":authority", b"api.push.apple.com", True),
        (b":path", path, False),
        (b"authorization", credential, True),
        (b"apns-topic", b"com.creativeflow.app", True),
        (b"apns-expiration", b"1700000000", False),
    ]


def test_integers_round_trip_across_prefix_boundaries() -> None:
    """RFC 7541 §5.1 integers, including C.1's examples."""
    assert encode_int(10, 5, 0) == b"\x0a"
    assert encode_int(1337, 5, 0) == b"\x1f\x9a\x0a"
    for prefix in (4, 5, 6, 7):
        for value in (0, 1, 14, 15, 16, 126, 127, 128, 300, 16_383, 2**20):
            octets = encode_int(value, prefix, 0)
            assert decode_int(octets, 0, prefix) == (value, len(octets))


def test_requests_decode_with_the_reference_decoder_and_repeat_as_indexes() -> None:
    """Repeated fields are indexed once per connection, then cost one octet each; the
    reference decoder reads every block exactly as sent."""
    encoder, reference = Encoder(), ReferenceDecoder()
    sizes = []
    for n in range(50):
        fields = request_fields(f"/3/device/{n:064x}".encode())
        block = encoder.encode(fields)
        sizes.append(len(block))
        assert reference.decode(block, raw=True) == [(k, v) for k, v, _ in fields]
    assert sizes[1] < sizes[0] - len(JWT)  # the JWT went into the table on the first request
    # Five one-octet indexes, then the path and expiration literals (raw, no Huffman).
    path_literal = 2 + len("/3/device/") + 64
    expiration_literal = 2 + len("apns-expiration") + 1 + len("1700000000")
    assert set(sizes[1:]) == {5 + path_literal + expiration_literal}


def test_a_new_credential_is_indexed_and_old_entries_are_evicted_in_step() -> None:
    """A refreshed credential gets a new entry; the table stays within its size and within
    the reference decoder's idea of it, across many refreshes and a peer table resize."""
    encoder, reference = Encoder(), ReferenceDecoder()
    rng = random.Random(5)
    for round_ in range(60):
        if round_ == 30:
            encoder.resize(512)  # the peer's SETTINGS_HEADER_TABLE_SIZE went down ...
            reference.max_allowed_table_size = 512
        credential = b"bearer " + rng.randbytes(rng.randrange(100, 400)).hex().encode()
        for n in range(3):
            fields = request_fields(f"/3/device/{n}".encode(), credential)
            assert reference.decode(encoder.encode(fields), raw=True) == [
                (k, v) for k, v, _ in fields
            ]
    assert reference.header_table_size == 512  # ... and was signalled (§4.2)


def test_shrinking_then_growing_signals_the_smallest_size_first() -> None:
    """Two resizes between blocks: the smallest size, then the final one (RFC 7541 §4.2)."""
    encoder = Encoder()
    encoder.resize(0)
    encoder.resize(4096)
    block = encoder.encode([(b":method", b"POST", True)])
    assert block == b"\x20\x3f\xe1\x1f\x83"


def test_responses_from_the_reference_encoder_decode_including_huffman_and_indexing() -> None:
    """Whatever representation the server chooses, the wanted fields come out right, and the
    dynamic table stays in step across blocks."""
    wanted = frozenset({b":status", b"retry-after", b"apns-id"})
    reference, decoder = ReferenceEncoder(), Decoder(wanted)
    for n in range(20):
        headers = [
            (":status", "429" if n % 2 else "200"),
            ("apns-id", f"0000-{n}"),
            ("retry-after", "30"),
            ("content-type", "application/json"),
            NeverIndexedHeaderTuple("x-secret", "s3cret"),
        ]
        found = decoder.decode(reference.encode(headers, huffman=bool(n % 3)))
        assert found == {
            b":status": headers[0][1].encode(),
            b"apns-id": f"0000-{n}".encode(),
            b"retry-after": b"30",
        }


def test_with_a_zero_table_unwanted_values_are_skipped() -> None:
    """After the peer empties its table (size update 0), indexing literals store nothing and
    only the wanted fields are decoded."""
    reference = ReferenceEncoder()
    reference.header_table_size = 0
    decoder = Decoder(frozenset())
    decoder.limit = 0
    block = reference.encode([(":status", "200"), ("apns-id", "abc"), ("x", "y")])
    assert decoder.decode(block) == {}
    assert Decoder(EVERY_FIELD).decode(ReferenceEncoder().encode([("a", "b")])) == {b"a": b"b"}


@pytest.mark.parametrize(
    "block",
    [b"\xbe", b"\x80", b"\x3f\xe1\x3f", b"\x88\x20", b"\x00\x85ab", b"\x40\x01a\x7f"],
    ids=["no-such-index", "index-0", "size-over-limit", "late-size-update", "short", "short-value"],
)
def test_malformed_blocks_are_compression_errors(block: bytes) -> None:
    """An index past the table, a size update over our limit or after a field, or a truncated
    string is a connection error (COMPRESSION_ERROR), never a crash."""
    with pytest.raises(ProtocolError):
        Decoder(frozenset()).decode(block)


def test_repeated_blocks_are_remembered_only_while_the_table_is_not_involved() -> None:
    """A block that neither reads nor changes the table decodes from memory; one that does
    is decoded every time, and a table resize forgets what was remembered."""
    decoder = Decoder(frozenset({b":status", b"content-type"}))
    plain = Encoder().encode([(b":status", b"200", False), (b"content-type", b"text/x", False)])
    first = decoder.decode(plain)
    assert first == {b":status": b"200", b"content-type": b"text/x"}
    assert decoder.decode(plain) is first  # remembered
    reference = ReferenceEncoder()
    adding = reference.encode([("content-type", "application/json")])  # into the table
    using = reference.encode([("content-type", "application/json")])  # from the table
    assert decoder.decode(adding) == decoder.decode(using) == {b"content-type": b"application/json"}
    assert decoder.decode(using) is not decoder.decode(using)  # never remembered
    decoder.decode(b"\x3f\xe1\x1f")  # a size update (4096): forget
    assert decoder.decode(plain) is not first
