"""LiteralEncoder: every block decodes with python-hyper's HPACK decoder to the same fields."""

from __future__ import annotations

import pytest
from hpack import Decoder
from hypothesis import given
from hypothesis import strategies as st

from kedge.core.codec.hpack_literal import LiteralEncoder

CASES = [
    [(b":status", b"200")],  # exact static pair: one byte
    [(b":status", b"418"), (b"content-type", b"text/plain")],  # static names
    [(b"x-request-id", b"abc-1"), (b"via", b"1.1 kedge")],  # new name, static name
    [(b"x-long", b"v" * 300), (b"n" * 200, b"")],  # multi-byte length prefixes
    [(b"grpc-status", b"0"), (b"grpc-message", b"%E2%9C%93")],  # trailers
    [],
]


@pytest.mark.parametrize("fields", CASES)
def test_round_trip(fields: list[tuple[bytes, bytes]]) -> None:
    block = LiteralEncoder().encode(fields)
    assert Decoder().decode(block, raw=True) == fields


def test_exact_static_pair_is_one_byte() -> None:
    assert LiteralEncoder().encode([(b":status", b"200")]) == b"\x88"


def test_never_indexes() -> None:
    enc, dec = LiteralEncoder(), Decoder()
    fields = [(b"x-a", b"1"), (b"content-type", b"x/y")]
    for _ in range(3):
        assert dec.decode(enc.encode(fields), raw=True) == fields
    assert len(dec.header_table.dynamic_entries) == 0


def test_table_size_change_is_signalled_once() -> None:
    enc, dec = LiteralEncoder(), Decoder()
    enc.header_table_size = 0
    enc.header_table_size = 256
    first = enc.encode([(b"x-a", b"1")])
    assert first[0] & 0xE0 == 0x20  # starts with a dynamic table size update
    # A decoder must accept the updates (0 then 256, both within its own maximum).
    assert dec.decode(first, raw=True) == [(b"x-a", b"1")]
    assert dec.header_table.maxsize == 256
    second = enc.encode([(b"x-a", b"1")])
    assert second[0] & 0xE0 != 0x20


_token = st.binary(min_size=1, max_size=40).map(lambda b: bytes(c % 26 + 97 for c in b))


@given(st.lists(st.tuples(_token, st.binary(max_size=300)), max_size=20))
def test_any_fields_round_trip(fields: list[tuple[bytes, bytes]]) -> None:
    assert Decoder().decode(LiteralEncoder().encode(fields), raw=True) == fields
