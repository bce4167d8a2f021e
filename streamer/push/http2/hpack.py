"""HPACK (RFC 7541) for the push client. Pure: no I/O.

The encoder indexes, once per connection, the fields a provider repeats on every request
(authority, the provider JWT or OAuth token, the APNs topic, the FCM path), so a request's
header block is mostly one-octet references; per-request values (the device path, the
expiration) are literals that are never indexed. It never Huffman-codes: a few more octets on
the wire, no CPU on either side.

Indexing the credential is safe here: HPACK only matches whole fields, so a compression
oracle (RFC 7541 §7.1) would have to guess the entire token, and the only request fields an
event's producer influences (device token, expiration, collapse id) are never indexed.

The decoder keeps the peer's dynamic table exactly as RFC 7541 §4 requires, but decodes a
string only when it is needed: a field the caller asked for, or an entry that will stay in
the table. The client advertises a table of 0 octets (SETTINGS_HEADER_TABLE_SIZE), so once
the peer honours it nothing stays, and unwanted values (a unique ``apns-id`` per response)
are skipped without Huffman decoding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from streamer.push.http2.frames import COMPRESSION_ERROR, ProtocolError

STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE  # indexes 1..61
ENTRY_OVERHEAD = 32  # §4.1
DEFAULT_TABLE_SIZE = 4096
_FIRST_DYNAMIC = len(STATIC) + 1

_STATIC_FIELD = {field: i for i, field in reversed(list(enumerate(STATIC, 1)))}
_STATIC_NAME = {name: i for i, (name, _) in reversed(list(enumerate(STATIC, 1)))}

# One request field: name, value and whether it is worth indexing (repeated as is).
Field = tuple[bytes, bytes, bool]


def encode_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An integer with an N-bit prefix (§5.1); ``first`` holds the representation's flags."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_int(data: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """The integer at ``position`` and the position after it."""
    limit = (1 << prefix_bits) - 1
    value = data[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while True:
        if position >= len(data) or shift > 28:
            raise ProtocolError(COMPRESSION_ERROR, "truncated or oversized HPACK integer")
        octet = data[position]
        position += 1
        value += (octet & 0x7F) << shift
        shift += 7
        if not octet & 0x80:
            return value, position


def _literal_head(name: bytes, prefix_bits: int, first: int) -> bytes:
    """A literal's representation up to its value: the name by static index, or itself."""
    index = _STATIC_NAME.get(name)
    if index is not None:
        return encode_int(index, prefix_bits, first)
    return bytes((first,)) + encode_int(len(name), 7, 0) + name


class Encoder:
    """Request header blocks for one connection.

    A field's octets are remembered while the table is unchanged (an index shifts with each
    insertion), so the fields a request repeats cost a dictionary lookup each; literals that
    are never indexed are unique (device paths) and encoded every time."""

    def __init__(self) -> None:
        self._limit = DEFAULT_TABLE_SIZE  # what the peer's decoder accepts
        self._size = 0
        self._entries: deque[tuple[bytes, bytes, int]] = deque()  # oldest first
        self._serials: dict[tuple[bytes, bytes], int] = {}
        self._inserted = 0  # serial of the next entry
        self._lowest: int | None = None  # the smallest size since the last block (§4.2)
        self._known: dict[Field, bytes] = {}  # field -> its octets, until the table changes
        self._literal_heads: dict[bytes, bytes] = {}  # name -> octets before a literal's value

    def resize(self, limit: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE. We use at most the default."""
        limit = min(limit, DEFAULT_TABLE_SIZE)
        if limit == self._limit:
            return
        self._lowest = limit if self._lowest is None else min(self._lowest, limit)
        self._limit = limit
        self._evict(0)

    def encode(self, fields: Iterable[Field]) -> bytes:
        parts: list[bytes] = []
        if self._lowest is not None:
            # The smallest size the table went through, then the final one (§4.2).
            parts.append(encode_int(self._lowest, 5, 0x20))
            if self._lowest != self._limit:
                parts.append(encode_int(self._limit, 5, 0x20))
            self._lowest = None
        known = self._known
        for field in fields:
            octets = known.get(field)
            if octets is None:
                octets = self._field(field)
            parts.append(octets)
        return b"".join(parts)

    def _field(self, field: Field) -> bytes:
        name, value, index = field
        static = _STATIC_FIELD.get((name, value))
        if static is not None:
            octets = self._known[field] = encode_int(static, 7, 0x80)
            return octets
        if not index:  # a literal without indexing (§6.2.2)
            head = self._literal_heads.get(name)
            if head is None:
                head = self._literal_heads[name] = _literal_head(name, 4, 0x00)
            return head + encode_int(len(value), 7, 0) + value
        serial = self._serials.get((name, value))
        if serial is not None:
            octets = encode_int(_FIRST_DYNAMIC + self._inserted - 1 - serial, 7, 0x80)
            self._known[field] = octets
            return octets
        self._add(name, value)  # a literal with incremental indexing (§6.2.1)
        return _literal_head(name, 6, 0x40) + encode_int(len(value), 7, 0) + value

    def _add(self, name: bytes, value: bytes) -> None:
        self._known.clear()  # every index shifts
        size = len(name) + len(value) + ENTRY_OVERHEAD
        self._evict(size)
        if size > self._limit:
            return  # too big for the table: the peer empties it and indexes nothing (§4.4)
        self._entries.append((name, value, size))
        self._serials[(name, value)] = self._inserted
        self._inserted += 1
        self._size += size

    def _evict(self, room: int) -> None:
        while self._entries and self._size + room > self._limit:
            name, value, size = self._entries.popleft()
            self._size -= size
            del self._serials[(name, value)]
            self._known.clear()


class _Everything(frozenset[bytes]):
    def __contains__(self, name: object) -> bool:
        return True


EVERY_FIELD: frozenset[bytes] = _Everything()


class Decoder:
    """Header blocks of one connection: the fields in ``wanted`` (EVERY_FIELD for all of
    them), by name; a repeated name keeps its last value. The mapping returned may be shared
    between calls: read it, never change it.

    Answers repeat byte for byte (status, content type and length): a block whose decoding
    neither read nor changed the dynamic table is remembered, and decoded once."""

    NAME_CACHE_ENTRIES = 64  # Huffman-coded names repeat (apns-id, content-type, ...)
    BLOCK_CACHE_ENTRIES = 256  # cleared when full: unique blocks (dates, ids) cannot grow it

    def __init__(self, wanted: frozenset[bytes]) -> None:
        self._blocks: dict[bytes, dict[bytes, bytes]] = {}
        self._stateful = False  # the block being decoded read or changed the dynamic table
        self._wanted = wanted
        self._entries: deque[tuple[bytes, bytes, int]] = deque()  # newest first
        self._size = 0
        self._max = DEFAULT_TABLE_SIZE  # as the peer's encoder last announced it
        self.limit = DEFAULT_TABLE_SIZE  # the most it may announce (our SETTINGS, once acked)
        self._names: dict[bytes, bytes] = {}

    def decode(self, block: bytes) -> dict[bytes, bytes]:
        found = self._blocks.get(block)
        if found is not None:
            return found
        self._stateful = False
        found = self._decode(block)
        if not self._stateful:
            if len(self._blocks) >= self.BLOCK_CACHE_ENTRIES:
                self._blocks.clear()
            self._blocks[block] = found
        return found

    def _decode(self, block: bytes) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        position, end = 0, len(block)
        fields_seen = False
        while position < end:
            octet = block[position]
            if octet & 0x80:  # indexed field
                index, position = decode_int(block, position, 7)
                name, value = self._lookup(index)
                if name in self._wanted:
                    found[name] = value
            elif octet & 0xE0 == 0x20:  # dynamic table size update
                if fields_seen:
                    raise ProtocolError(COMPRESSION_ERROR, "table size update after a field")
                size, position = decode_int(block, position, 5)
                self._resize(size)
                continue
            else:  # a literal: with (0x40), without (0x00) or never (0x10) indexing
                indexing = octet & 0xC0 == 0x40
                position = self._literal(block, position, indexing, found)
            fields_seen = True
        return found

    def _literal(
        self, block: bytes, position: int, indexing: bool, found: dict[bytes, bytes]
    ) -> int:
        index, position = decode_int(block, position, 6 if indexing else 4)
        if index:
            name = self._lookup(index)[0]
        else:
            coded, huffman, position = _string(block, position)
            name = self._name(coded) if huffman else coded
        # With a table of 0 octets nothing stays, so an unwanted value is never decoded.
        coded, huffman, position = _string(block, position)
        keep = indexing and self._max > 0
        if name in self._wanted or keep:
            value = _huffman(coded) if huffman else coded
            if name in self._wanted:
                found[name] = value
            if keep:
                self._add(name, value)
        return position

    def _name(self, coded: bytes) -> bytes:
        name = self._names.get(coded)
        if name is None:
            name = _huffman(coded)
            if len(self._names) < self.NAME_CACHE_ENTRIES:
                self._names[coded] = name
        return name

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index < _FIRST_DYNAMIC:
            return STATIC[index - 1]
        self._stateful = True
        position = index - _FIRST_DYNAMIC
        if index == 0 or position >= len(self._entries):
            raise ProtocolError(COMPRESSION_ERROR, f"no HPACK table entry {index}")
        name, value, _ = self._entries[position]
        return name, value

    def _resize(self, size: int) -> None:
        self._stateful = True
        self._blocks.clear()  # remembered blocks may index into a table of the old size
        if size > self.limit:
            raise ProtocolError(COMPRESSION_ERROR, f"table size {size} over our {self.limit}")
        self._max = size
        self._evict(0)

    def _add(self, name: bytes, value: bytes) -> None:
        self._stateful = True
        size = len(name) + len(value) + ENTRY_OVERHEAD
        self._evict(size)
        if size <= self._max:
            self._entries.appendleft((name, value, size))
            self._size += size

    def _evict(self, room: int) -> None:
        while self._entries and self._size + room > self._max:
            self._size -= self._entries.pop()[2]


def _string(block: bytes, position: int) -> tuple[bytes, bool, int]:
    """A string literal (§5.2): its octets, whether Huffman-coded, the position after it."""
    if position >= len(block):
        raise ProtocolError(COMPRESSION_ERROR, "truncated HPACK string")
    huffman = bool(block[position] & 0x80)
    size, position = decode_int(block, position, 7)
    if position + size > len(block):
        raise ProtocolError(COMPRESSION_ERROR, "truncated HPACK string")
    return block[position : position + size], huffman, position + size


def _huffman(coded: bytes) -> bytes:
    try:
        return decode_huffman(coded)
    except HPACKDecodingError as exc:
        raise ProtocolError(COMPRESSION_ERROR, f"bad Huffman string: {exc}") from None
