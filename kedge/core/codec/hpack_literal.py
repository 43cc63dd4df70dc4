"""A fast HPACK encoder that never uses the dynamic table (pure; RFC 7541).

The edge encodes a header block for every response it relays (and every request to an
HTTP/2 endpoint). python-hyper's encoder searches and maintains a dynamic table and
Huffman-codes every string, in Python: the largest single cost of a proxied HTTP/2 request
here (bench/RESULTS.md §5). RFC 7541 lets an encoder choose never to index (§6.2.2), so this
one emits:

- an indexed field (§6.1) for exact static-table pairs such as `:status: 200`;
- a literal without indexing with an indexed name (§6.2.2) for static-table names;
- a literal without indexing with a literal name otherwise;

all with raw (non-Huffman) strings. Blocks come out somewhat larger, which costs nothing
that matters between an edge and its peers, and the decoder on the other side does less
work too. Table-size changes announced by the peer are acknowledged with a dynamic table
size update at the start of the next block (§4.2, §6.3), as the RFC requires.

The output is checked against python-hyper's decoder in the unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack.table import HeaderTable

__all__ = ["LiteralEncoder"]

_STATIC_PAIRS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_PAIRS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1: `value` with an N-bit prefix; `first` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """RFC 7541 §5.2 string literal, not Huffman-coded (H = 0)."""
    size = len(data)
    return (bytes((size,)) if size < 127 else _integer(size, 7, 0)) + data


# Precomputed first bytes: indexed fields and indexed names are at most 61 (one byte for
# an indexed field; a 4-bit prefix overflows from 15, so those take two bytes).
_INDEXED = {index: _integer(index, 7, 0x80) for index in range(1, 62)}
_NAME_INDEXED = {index: _integer(index, 4, 0x00) for index in range(1, 62)}


class LiteralEncoder:
    """Drop-in for `hpack.Encoder` as used by h2: `encode(headers)` and `header_table_size`."""

    __slots__ = ("_pending_sizes", "_table_size")

    def __init__(self) -> None:
        self._table_size = 4096
        self._pending_sizes: list[int] = []

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # Nothing is ever in our table, but the peer must still hear that its new maximum
        # was taken: signal it (the smallest then the final, RFC 7541 §4.2).
        self._table_size = value
        self._pending_sizes.append(value)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = False) -> bytes:
        parts: list[bytes] = []
        if self._pending_sizes:
            sizes = self._pending_sizes
            parts.append(_integer(min(sizes), 5, 0x20))
            if sizes[-1] != min(sizes):
                parts.append(_integer(sizes[-1], 5, 0x20))
            self._pending_sizes = []
        pairs, names = _STATIC_PAIRS, _STATIC_NAMES
        for header in headers:
            name, value = header[0], header[1]
            index = pairs.get((name, value))
            if index is not None:
                parts.append(_INDEXED[index])
                continue
            index = names.get(name)
            if index is not None:
                parts.append(_NAME_INDEXED[index] + _string(value))
            else:
                parts.append(b"\x00" + _string(name) + _string(value))
        return b"".join(parts)
