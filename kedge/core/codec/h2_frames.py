"""Counting HTTP/2 frames in a raw byte stream, without parsing payloads (pure).

python-hyper h2 hides frames behind events and keeps no count of them (hardening.md F3), so
the flood guard (`h2_guard`) looks at the wire itself: every chunk a client connection reads
is scanned here before h2 sees it. Only the 9-byte frame headers (RFC 9113 §4.1) are read,
plus one payload byte of padded DATA/HEADERS frames (the Pad Length, §6.1/§6.2) so that a
frame carrying nothing but padding counts as empty. Payloads are skipped by length, never
copied; a frame header split across reads (at most 8 bytes) is the only thing kept.

The scanner trusts nothing it counts: a malformed stream (bad lengths, padding longer than
the frame) is h2's to reject with GOAWAY; here it only has to stay bounded and not raise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["PREFACE_LENGTH", "FrameCounts", "FrameScanner", "count_rst_stream"]

# Frame types (RFC 9113 §6) and the flags we look at.
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x8, 0x9
_END_STREAM = 0x1  # DATA, HEADERS
_ACK = 0x1  # SETTINGS, PING
_END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
_PADDED = 0x8  # DATA, HEADERS, PUSH_PROMISE
_PRIORITY_FLAG = 0x20  # HEADERS: 5 bytes of stream dependency and weight precede the block
_STREAM_MASK = 0x7FFFFFFF  # the reserved bit is ignored on receipt (§4.1)

PREFACE_LENGTH = 24  # "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (RFC 9113 §3.4)

# One C call per frame header: (length << 8 | type, flags, R | stream id).
_FRAME_HEADER = struct.Struct(">LBL")


@dataclass(slots=True)
class FrameCounts:
    """What one chunk held. A frame counts in the chunk where its 9-byte header completes
    (a padded frame's emptiness, in the chunk holding its Pad Length byte).

    Not frozen: a frozen dataclass costs ~7x more to build, and one is built per read.
    Treat it as a value all the same."""

    headers: int = 0  # HEADERS frames: header blocks started (trailers included)
    new_streams: int = 0  # HEADERS on an odd stream id above every id seen before
    rst_stream: int = 0
    ping: int = 0  # without ACK
    settings: int = 0  # without ACK
    window_update: int = 0
    priority: int = 0
    # Frames that carry nothing (CVE-2019-9518): DATA without END_STREAM and with no data
    # after padding; HEADERS or CONTINUATION without END_HEADERS and with no header block.
    empty: int = 0
    data_bytes: int = 0  # DATA frame lengths: what flow control counts, padding included


class FrameScanner:
    """Incremental frame counter for one connection's inbound bytes: `feed` every chunk in
    order; each call returns the counts for that chunk."""

    __slots__ = (
        "_block_ends_with_frame",
        "_highest_stream",
        "_pad_flags",
        "_pad_kind",
        "_pad_length",
        "_partial",
        "_preface_left",
        "_skip",
        "header_block_open",
    )

    def __init__(self, *, skip_preface: bool = False) -> None:
        self._preface_left = PREFACE_LENGTH if skip_preface else 0
        self._partial = b""  # the first bytes (< 9) of a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to come
        # A padded DATA/HEADERS frame whose payload had not started when its chunk ended:
        # its Pad Length is the next byte read, and only then is its emptiness known.
        self._pad_kind = -1
        self._pad_flags = 0
        self._pad_length = 0
        self._highest_stream = 0
        # The frame being skipped carries END_HEADERS: the block completes with its payload.
        self._block_ends_with_frame = False
        # True from a HEADERS/PUSH_PROMISE without END_HEADERS (or one whose own payload is
        # still arriving) until the CONTINUATION with END_HEADERS has fully arrived. h2 keeps
        # such a stream open forever (hardening.md F4): the caller runs a completion timeout.
        self.header_block_open = False

    def feed(self, data: bytes | bytearray | memoryview) -> FrameCounts:
        """Account one chunk of the inbound byte stream."""
        pos = 0
        if self._preface_left:
            pos = min(self._preface_left, len(data))
            self._preface_left -= pos
        if not self._partial:
            return self._scan(data, pos)
        # Rare: the previous chunk ended inside a frame header. Complete it (copying at most
        # 9 bytes), account that frame on its own, then scan the rest of this chunk.
        need = 9 - len(self._partial)
        header = self._partial + bytes(data[pos : pos + need])
        self._partial = b""
        if len(header) < 9:
            self._partial = header
            return FrameCounts()
        first = self._scan(header, 0)
        rest = self._scan(data, pos + need)
        return FrameCounts(
            first.headers + rest.headers,
            first.new_streams + rest.new_streams,
            first.rst_stream + rest.rst_stream,
            first.ping + rest.ping,
            first.settings + rest.settings,
            first.window_update + rest.window_update,
            first.priority + rest.priority,
            first.empty + rest.empty,
            first.data_bytes + rest.data_bytes,
        )

    def _scan(self, data: bytes | bytearray | memoryview, pos: int) -> FrameCounts:
        """Account data[pos:], which starts inside the current frame's payload (or at a frame
        boundary), and remember where the chunk's last frame stops."""
        end = len(data)
        headers = new_streams = rst_stream = ping = settings = 0
        window_update = priority = empty = data_bytes = 0
        if self._pad_kind >= 0 and pos < end:
            if _is_empty_padded(self._pad_kind, self._pad_flags, self._pad_length, data[pos]):
                empty += 1
            self._pad_kind = -1
        if self._skip:
            if self._skip > end - pos:
                self._skip -= end - pos
                return FrameCounts(empty=empty)
            pos += self._skip
            self._skip = 0
            if self._block_ends_with_frame:
                self._block_ends_with_frame = False
                self.header_block_open = False
        highest = self._highest_stream
        block_open = self.header_block_open
        unpack = _FRAME_HEADER.unpack_from
        kind = flags = 0
        # Ordered by how common each type is on a client connection.
        while pos + 9 <= end:
            length_kind, flags, stream = unpack(data, pos)
            length = length_kind >> 8
            kind = length_kind & 0xFF
            body = pos + 9
            pos = body + length
            if kind == _DATA:
                data_bytes += length
                if not flags & _END_STREAM:
                    if not length:
                        empty += 1
                    elif flags & _PADDED:
                        if body == end:
                            self._await_pad(kind, flags, length)
                        elif length <= 1 + data[body]:
                            empty += 1
            elif kind == _HEADERS:
                headers += 1
                stream &= _STREAM_MASK
                if stream > highest and stream & 1:
                    highest = stream
                    new_streams += 1
                block_open = not flags & _END_HEADERS
                if block_open:
                    if not flags & _PADDED:
                        if length <= (5 if flags & _PRIORITY_FLAG else 0):
                            empty += 1
                    elif body == end and length:
                        self._await_pad(kind, flags, length)
                    elif _is_empty_padded(kind, flags, length, data[body] if length else 0):
                        empty += 1
            elif kind == _WINDOW_UPDATE:
                window_update += 1
            elif kind == _RST_STREAM:
                rst_stream += 1
            elif kind == _CONTINUATION:
                if flags & _END_HEADERS:
                    block_open = False
                elif not length:
                    empty += 1
            elif kind == _PING:
                if not flags & _ACK:
                    ping += 1
            elif kind == _SETTINGS:
                if not flags & _ACK:
                    settings += 1
            elif kind == _PRIORITY:
                priority += 1
            elif kind == _PUSH_PROMISE:  # a client must not send it (§8.4); h2 says so
                block_open = not flags & _END_HEADERS
        if pos > end:
            # The last frame's payload runs into the next chunk. A block that ends with this
            # frame stays open until its payload is in: a header block trickled a byte at a
            # time must still meet the completion timeout.
            self._skip = pos - end
            if flags & _END_HEADERS and kind in (_HEADERS, _CONTINUATION, _PUSH_PROMISE):
                block_open = True
                self._block_ends_with_frame = True
        elif pos < end:
            self._partial = bytes(data[pos:end])
        self._highest_stream = highest
        self.header_block_open = block_open
        return FrameCounts(
            headers,
            new_streams,
            rst_stream,
            ping,
            settings,
            window_update,
            priority,
            empty,
            data_bytes,
        )

    def _await_pad(self, kind: int, flags: int, length: int) -> None:
        self._pad_kind = kind
        self._pad_flags = flags
        self._pad_length = length


def _is_empty_padded(kind: int, flags: int, length: int, pad_length: int) -> bool:
    """Whether a padded DATA/HEADERS frame carries no data or header block: its length
    less the Pad Length byte, the padding and (HEADERS with PRIORITY) 5 bytes of priority
    (RFC 9113 §6.1, §6.2). Padding longer than the frame counts as empty too."""
    overhead = 0
    if flags & _PADDED:
        overhead = 1 + pad_length
    if kind == _HEADERS and flags & _PRIORITY_FLAG:
        overhead += 5
    return length <= overhead


def count_rst_stream(data: bytes | bytearray | memoryview) -> int:
    """RST_STREAM frames in `data`, a buffer of whole frames (what h2 queued to send in
    reply to one read: the resets a client provoked, for MadeYouReset, CVE-2025-8671)."""
    found = 0
    pos = 0
    end = len(data)
    unpack = _FRAME_HEADER.unpack_from
    while pos + 9 <= end:
        length_kind = unpack(data, pos)[0]
        if length_kind & 0xFF == _RST_STREAM:
            found += 1
        pos += 9 + (length_kind >> 8)
    return found
