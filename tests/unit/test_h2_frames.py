"""FrameScanner and count_rst_stream: frame counts over raw HTTP/2 bytes, however split."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from kedge.core.codec.h2_frames import FrameCounts, FrameScanner, count_rst_stream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def wire(frame: Frame, *flags: str, pad: int | None = None) -> bytes:
    for flag in flags:
        frame.flags.add(flag)
    if pad is not None:
        frame.flags.add("PADDED")
        frame.pad_length = pad  # type: ignore[attr-defined]
    return bytes(frame.serialize())


def data(sid: int = 1, body: bytes = b"", *flags: str, pad: int | None = None) -> bytes:
    return wire(DataFrame(sid, body), *flags, pad=pad)


def headers(sid: int = 1, block: bytes = b"\x82", *flags: str, pad: int | None = None) -> bytes:
    return wire(HeadersFrame(sid, block), *flags, pad=pad)


def cont(sid: int = 1, block: bytes = b"\x84", *flags: str) -> bytes:
    return wire(ContinuationFrame(sid, block), *flags)


def raw(length: int, kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """A frame hyperframe would refuse to build (reserved bit, bad padding, unknown type)."""
    return length.to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def total(parts: list[FrameCounts]) -> FrameCounts:
    sums = [sum(values) for values in zip(*map(dataclasses.astuple, parts), strict=True)]
    return FrameCounts(*sums)


# (id, bytes, expected counts, header_block_open afterwards)
CASES = [
    ("ping", wire(PingFrame(0)), FrameCounts(ping=1), False),
    ("ping-ack", wire(PingFrame(0), "ACK"), FrameCounts(), False),
    ("settings", wire(SettingsFrame(0)), FrameCounts(settings=1), False),
    ("settings-ack", wire(SettingsFrame(0), "ACK"), FrameCounts(), False),
    ("window-update", wire(WindowUpdateFrame(0, 100)), FrameCounts(window_update=1), False),
    ("priority", wire(PriorityFrame(3)), FrameCounts(priority=1), False),
    ("rst", wire(RstStreamFrame(1)), FrameCounts(rst_stream=1), False),
    ("goaway", wire(GoAwayFrame(0)), FrameCounts(), False),
    ("unknown-type", raw(3, 0xFA, 0xFF, 1, b"abc"), FrameCounts(), False),
    ("data", data(1, b"hello"), FrameCounts(data_bytes=5), False),
    ("data-empty", data(1), FrameCounts(empty=1), False),
    ("data-empty-end", data(1, b"", "END_STREAM"), FrameCounts(), False),
    ("data-only-padding", data(1, b"", pad=3), FrameCounts(empty=1, data_bytes=4), False),
    ("data-pad-zero", data(1, b"", pad=0), FrameCounts(empty=1, data_bytes=1), False),
    ("data-padded", data(1, b"ab", pad=3), FrameCounts(data_bytes=6), False),
    ("data-padding-end", data(1, b"", "END_STREAM", pad=3), FrameCounts(data_bytes=4), False),
    # Padding longer than the frame: h2 rejects it; here it is simply empty.
    ("data-overpadded", raw(2, 0x0, 0x8, 1, b"\x09x"), FrameCounts(empty=1, data_bytes=2), False),
    ("data-padded-len0", raw(0, 0x0, 0x8, 1), FrameCounts(empty=1), False),
    (
        "headers",
        headers(1, b"\x82", "END_HEADERS"),
        FrameCounts(headers=1, new_streams=1),
        False,
    ),
    ("headers-open", headers(1, b"\x82"), FrameCounts(headers=1, new_streams=1), True),
    (
        "headers-empty-open",
        headers(1, b""),
        FrameCounts(headers=1, new_streams=1, empty=1),
        True,
    ),
    (
        "headers-empty-end-stream",  # END_STREAM does not complete a header block
        headers(1, b"", "END_STREAM"),
        FrameCounts(headers=1, new_streams=1, empty=1),
        True,
    ),
    (
        "headers-empty-end-headers",
        headers(1, b"", "END_HEADERS"),
        FrameCounts(headers=1, new_streams=1),
        False,
    ),
    (
        "headers-priority-only",
        headers(1, b"", "PRIORITY"),
        FrameCounts(headers=1, new_streams=1, empty=1),
        True,
    ),
    (
        "headers-priority-block",
        headers(1, b"\x82", "PRIORITY"),
        FrameCounts(headers=1, new_streams=1),
        True,
    ),
    (
        "headers-padding-only",
        headers(1, b"", "PRIORITY", pad=4),
        FrameCounts(headers=1, new_streams=1, empty=1),
        True,
    ),
    (
        "headers-padded-block",
        headers(1, b"\x82", "PRIORITY", pad=4),
        FrameCounts(headers=1, new_streams=1),
        True,
    ),
    (
        "continuation-sequence",
        headers(1, b"\x82") + cont(1, b"\x84") + cont(1, b"\x87", "END_HEADERS"),
        FrameCounts(headers=1, new_streams=1),
        False,
    ),
    (
        "continuation-still-open",
        headers(1, b"\x82") + cont(1, b"\x84") + cont(1, b"\x87"),
        FrameCounts(headers=1, new_streams=1),
        True,
    ),
    (
        "continuation-empty",
        headers(1, b"\x82") + cont(1, b"") + cont(1, b"") + cont(1, b"", "END_HEADERS"),
        FrameCounts(headers=1, new_streams=1, empty=2),
        False,
    ),
    (
        "push-promise-open",  # a client must not send it; the block is open all the same
        wire(PushPromiseFrame(1, promised_stream_id=2, data=b"\x82")),
        FrameCounts(),
        True,
    ),
    (
        "new-streams",  # odd ids above the highest; trailers, even and lower ids are not new
        headers(1, b"\x82", "END_HEADERS")
        + headers(5, b"\x82", "END_HEADERS")
        + headers(5, b"\x82", "END_HEADERS", "END_STREAM")
        + headers(3, b"\x82", "END_HEADERS")
        + headers(6, b"\x82", "END_HEADERS")
        + headers(7, b"\x82", "END_HEADERS"),
        FrameCounts(headers=6, new_streams=3),
        False,
    ),
    (
        "reserved-bit-ignored",  # RFC 9113 §4.1: R is ignored on receipt
        raw(1, 0x1, 0x4, 0x8000_0001, b"\x82") + headers(1, b"\x82", "END_HEADERS"),
        FrameCounts(headers=2, new_streams=1),
        False,
    ),
    (
        "mixed",
        headers(1, b"\x82\x84", "END_HEADERS")
        + data(1, b"x" * 100)
        + wire(PingFrame(0))
        + wire(WindowUpdateFrame(1, 10))
        + data(1, b"", "END_STREAM")
        + wire(RstStreamFrame(3)),
        FrameCounts(
            headers=1, new_streams=1, ping=1, window_update=1, rst_stream=1, data_bytes=100
        ),
        False,
    ),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize(("name", "stream", "expected", "block_open"), CASES, ids=IDS)
def test_one_chunk(name: str, stream: bytes, expected: FrameCounts, block_open: bool) -> None:
    scanner = FrameScanner()
    assert scanner.feed(stream) == expected
    assert scanner.header_block_open is block_open


@pytest.mark.parametrize(("name", "stream", "expected", "block_open"), CASES, ids=IDS)
def test_split_at_every_offset(
    name: str, stream: bytes, expected: FrameCounts, block_open: bool
) -> None:
    # The same stream, after the preface, cut in two everywhere (the preface too).
    full = PREFACE + stream
    for cut in range(len(full) + 1):
        scanner = FrameScanner(skip_preface=True)
        parts = [scanner.feed(full[:cut]), scanner.feed(full[cut:])]
        assert total(parts) == expected, cut
        assert scanner.header_block_open is block_open, cut


@pytest.mark.parametrize(("name", "stream", "expected", "block_open"), CASES, ids=IDS)
def test_one_byte_at_a_time(
    name: str, stream: bytes, expected: FrameCounts, block_open: bool
) -> None:
    scanner = FrameScanner()
    assert total([scanner.feed(stream[i : i + 1]) for i in range(len(stream))]) == expected
    assert scanner.header_block_open is block_open


ALL = b"".join(case[1] for case in CASES if case[0] != "push-promise-open")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ALL)), max_size=30))
def test_any_split_gives_the_same_counts(cuts: list[int]) -> None:
    whole = FrameScanner()
    expected = whole.feed(ALL)
    scanner = FrameScanner()
    bounds = [0, *sorted(cuts), len(ALL)]
    parts = [scanner.feed(memoryview(ALL)[a:b]) for a, b in itertools.pairwise(bounds)]
    assert total(parts) == expected
    assert scanner.header_block_open is whole.header_block_open


def test_counts_land_in_the_chunk_that_completes_the_header() -> None:
    ping = wire(PingFrame(0))
    scanner = FrameScanner()
    assert scanner.feed(ping[:4]) == FrameCounts()  # 9-byte header split 4 + 5
    assert scanner.feed(ping[4:9]) == FrameCounts(ping=1)
    assert scanner.feed(ping[9:]) == FrameCounts()  # the payload alone
    assert scanner.feed(wire(SettingsFrame(0))) == FrameCounts(settings=1)


def test_padded_data_whose_pad_length_is_in_the_next_chunk() -> None:
    only_padding = data(1, b"", pad=200)
    with_data = data(1, b"abc", pad=200)
    for frame, empty in ((only_padding, 1), (with_data, 0)):
        scanner = FrameScanner()
        assert scanner.feed(frame[:9]) == FrameCounts(data_bytes=len(frame) - 9)
        assert scanner.feed(frame[9:50]) == FrameCounts(empty=empty)
        assert scanner.feed(frame[50:] + wire(PingFrame(0))) == FrameCounts(ping=1)


def test_header_block_open_transitions() -> None:
    scanner = FrameScanner(skip_preface=True)
    steps = [
        (PREFACE, False),
        (headers(1, b"\x82"), True),
        (cont(1, b"\x84"), True),
        (data(3, b"x", "END_STREAM"), True),  # illegal here (h2's to reject); no change
        (cont(1, b"\x87", "END_HEADERS"), False),
        (headers(3, b"\x82", "END_HEADERS", "END_STREAM"), False),
        (headers(5, b"\x82"), True),
        (cont(5, b"", "END_HEADERS"), False),
    ]
    for chunk, block_open in steps:
        scanner.feed(chunk)
        assert scanner.header_block_open is block_open, chunk


def test_a_block_is_open_until_its_last_frame_has_fully_arrived() -> None:
    # A complete-looking HEADERS trickled byte by byte must still meet the timeout.
    frame = headers(1, b"\x82" * 30, "END_HEADERS")
    scanner = FrameScanner()
    for i in range(len(frame) - 1):
        scanner.feed(frame[i : i + 1])
        assert scanner.header_block_open is (i >= 8), i
    scanner.feed(frame[-1:])
    assert scanner.header_block_open is False


def test_preface_is_skipped_only_when_asked() -> None:
    ping = wire(PingFrame(0))
    assert FrameScanner(skip_preface=True).feed(PREFACE + ping) == FrameCounts(ping=1)
    scanner = FrameScanner(skip_preface=True)
    assert scanner.feed(PREFACE[:10]) == FrameCounts()
    assert scanner.feed(PREFACE[10:] + ping) == FrameCounts(ping=1)
    assert FrameScanner().feed(ping) == FrameCounts(ping=1)


def test_payloads_are_skipped_not_parsed() -> None:
    # A DATA payload full of frame-looking bytes counts as data only.
    fake = wire(PingFrame(0)) * 100
    scanner = FrameScanner()
    frame = data(1, fake)
    assert scanner.feed(frame[:100]) == FrameCounts(data_bytes=len(fake))
    assert scanner.feed(frame[100:]) == FrameCounts()
    assert scanner.feed(wire(RstStreamFrame(1))) == FrameCounts(rst_stream=1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_garbage_never_raises(blob: bytes, step: int) -> None:
    scanner = FrameScanner()
    for i in range(0, len(blob), step):
        counts = scanner.feed(blob[i : i + step])
        assert min(dataclasses.astuple(counts)) >= 0


@pytest.mark.parametrize(
    ("buffer", "expected"),
    [
        (b"", 0),
        (wire(RstStreamFrame(1)), 1),
        (
            wire(RstStreamFrame(1))
            + data(3, wire(RstStreamFrame(9)) * 3)  # RST-looking payload: not counted
            + headers(5, b"\x88", "END_HEADERS")
            + wire(RstStreamFrame(5))
            + wire(GoAwayFrame(0)),
            2,
        ),
        (data(1, b"x" * 20000) + wire(RstStreamFrame(1)), 1),
        (wire(SettingsFrame(0), "ACK") + wire(PingFrame(0), "ACK"), 0),
        (wire(RstStreamFrame(1))[:8], 0),  # not a whole frame header
    ],
)
def test_count_rst_stream(buffer: bytes, expected: int) -> None:
    assert count_rst_stream(buffer) == expected
