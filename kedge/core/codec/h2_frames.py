"""Counting HTTP/2 frames in a byte stream, without parsing payloads (pure).

python-hyper h2 hides the frames behind events and keeps no count of them, so the flood
guard (`h2_guard`) looks at the wire itself: every chunk a client connection reads is
scanned here first. Only the 9-byte frame headers (RFC 9113 §4.1) are read, plus the
one flag byte that matters; payloads are skipped by length, never copied, and a header
split across reads is kept until its last byte arrives.
"""

from __future__ import annotations

__all__ = ["FrameCounts", "FrameScanner", "count_rst_stream"]

# Frame types (RFC 9113 §6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_PREFACE_LENGTH = 24  # "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (RFC 9113 §3.4)


class FrameCounts:
    """What one chunk held. A plain slots class: one is made per read."""

    __slots__ = (
        "data_bytes",
        "empty",
        "headers",
        "new_streams",
        "ping",
        "priority",
        "rst_stream",
        "settings",
        "window_update",
    )

    def __init__(self) -> None:
        self.headers = 0  # HEADERS frames: header blocks started
        self.new_streams = 0  # HEADERS on a stream id above every one seen before
        self.rst_stream = 0
        self.ping = 0  # without ACK
        self.settings = 0  # without ACK
        self.window_update = 0
        self.priority = 0
        self.empty = 0  # no payload and no END_STREAM / END_HEADERS (CVE-2019-9518)
        self.data_bytes = 0  # DATA payload, padding included

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__ if getattr(self, k))
        return f"FrameCounts({fields})"


class FrameScanner:
    """Incremental: `feed` each chunk in order; counts are per chunk."""

    __slots__ = ("_header", "_highest_stream", "_preface_left", "_skip", "header_block_open")

    def __init__(self, *, skip_preface: bool = False) -> None:
        self._preface_left = _PREFACE_LENGTH if skip_preface else 0
        self._skip = 0  # payload bytes of the current frame still to come
        self._header = b""  # a frame header split across chunks, so far
        self._highest_stream = 0
        # A HEADERS (or PUSH_PROMISE) without END_HEADERS was seen and its last
        # CONTINUATION has not arrived: the caller times this out (hardening F4).
        self.header_block_open = False

    def feed(self, data: bytes) -> FrameCounts:
        counts = FrameCounts()
        pos = 0
        end = len(data)
        if self._preface_left:
            taken = min(self._preface_left, end)
            self._preface_left -= taken
            pos = taken
        if self._skip:
            taken = min(self._skip, end - pos)
            self._skip -= taken
            pos += taken
        if self._header:
            need = 9 - len(self._header)
            self._header += data[pos : pos + need]
            pos += need
            if len(self._header) < 9:
                return counts
            header, self._header = self._header, b""
            pos = self._frame(header, 0, counts, data, pos)
        while pos < end:
            if end - pos < 9:
                self._header = data[pos:]
                break
            pos = self._frame(data, pos, counts, data, pos + 9)
        return counts

    def _frame(self, hdr: bytes, at: int, counts: FrameCounts, data: bytes, body: int) -> int:
        """Account one frame whose header is hdr[at:at+9] and whose payload starts at
        data[body]; returns the position after the payload (or the chunk's end)."""
        length = int.from_bytes(hdr[at : at + 3], "big")
        kind = hdr[at + 3]
        flags = hdr[at + 4]
        if kind == _DATA:
            counts.data_bytes += length
            if length == 0 and not flags & _END_STREAM:
                counts.empty += 1
        elif kind == _HEADERS:
            counts.headers += 1
            stream = int.from_bytes(hdr[at + 5 : at + 9], "big") & 0x7FFFFFFF
            if stream > self._highest_stream:
                self._highest_stream = stream
                counts.new_streams += 1
            self.header_block_open = not flags & _END_HEADERS
            if length == 0 and not flags & (_END_STREAM | _END_HEADERS):
                counts.empty += 1
        elif kind == _CONTINUATION:
            self.header_block_open = not flags & _END_HEADERS
            if length == 0 and not flags & _END_HEADERS:
                counts.empty += 1
        elif kind == _PUSH_PROMISE:
            self.header_block_open = not flags & _END_HEADERS
        elif kind == _RST_STREAM:
            counts.rst_stream += 1
        elif kind == _PING:
            if not flags & _ACK:
                counts.ping += 1
        elif kind == _SETTINGS:
            if not flags & _ACK:
                counts.settings += 1
        elif kind == _WINDOW_UPDATE:
            counts.window_update += 1
        elif kind == _PRIORITY:
            counts.priority += 1
        available = len(data) - body
        if length > available:
            self._skip = length - available
            return len(data)
        return body + length


def count_rst_stream(data: bytes) -> int:
    """RST_STREAM frames in `data`, a buffer of whole frames (what h2 queued to send)."""
    found = 0
    pos = 0
    end = len(data)
    while pos + 9 <= end:
        if data[pos + 3] == _RST_STREAM:
            found += 1
        pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
    return found
