"""BodyStream: a bounded buffer between a protocol's data callbacks and one async reader.

The producer (a connection's `data_received`) calls `feed`; when more than `high_water`
bytes are buffered it calls `pause()` (pause_reading on its transport), and the reader's
`read` calls `resume()` once the buffer drains below `low_water`. This is the edge's whole
backpressure story: no body is ever fully buffered, whatever its size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from kedge.core.errors import BodyTooLarge, KedgeError
from kedge.core.http.messages import Headers

__all__ = ["BodyStream"]

_noop: Callable[[], None] = lambda: None  # noqa: E731


class BodyStream:
    __slots__ = (
        "_chunks",
        "_eof",
        "_error",
        "_paused",
        "_size",
        "_waiter",
        "high_water",
        "low_water",
        "on_first_read",
        "pause",
        "resume",
        "total",
        "trailers",
    )

    def __init__(
        self,
        pause: Callable[[], None] = _noop,
        resume: Callable[[], None] = _noop,
        high_water: int = 256 * 1024,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: KedgeError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.pause = pause
        self.resume = resume
        self.high_water = high_water
        self.low_water = high_water // 4
        self.total = 0  # bytes fed so far
        self.trailers: Headers | None = None
        # Called once, before the first read: the server codec answers
        # `Expect: 100-continue` here (RFC 9110 §10.1.1), i.e. only when the body is wanted.
        self.on_first_read: Callable[[], None] | None = None

    # -- producer side -------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self.total += len(data)
        if self._size > self.high_water and not self._paused:
            self._paused = True
            self.pause()
        self._wake()

    def feed_eof(self, trailers: Headers | None = None) -> None:
        self.trailers = trailers
        self._eof = True
        self._wake()

    def feed_error(self, error: KedgeError) -> None:
        if not self._eof:
            self._error = error
            self._eof = True
            self._chunks.clear()
            self._size = 0
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    # -- consumer side -------------------------------------------------------------
    @property
    def is_complete(self) -> bool:
        """True when everything has arrived without error (the rest can be taken at once)."""
        return self._eof and self._error is None

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    @property
    def error(self) -> KedgeError | None:
        return self._error

    def take_all(self) -> bytes:
        """Everything buffered right now, without waiting."""
        if self.on_first_read is not None:
            cb, self.on_first_read = self.on_first_read, None
            cb()
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._maybe_resume()
        return data

    async def within(self, limit: int) -> AsyncIterator[bytes]:
        """The rest of the body, read by read(); BodyTooLarge once more than `limit` bytes
        (0 = no limit) arrived in all: what a route's body limit stops while streaming."""
        while data := await self.read():
            if limit and self.total > limit:
                raise BodyTooLarge(f"request body larger than this route's limit of {limit} bytes")
            yield data

    async def read(self) -> bytes:
        """The next buffered bytes (all of them, joined); b"" at the end. Raises the feed error."""
        if self.on_first_read is not None:
            cb, self.on_first_read = self.on_first_read, None
            cb()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self._size = 0
        self._maybe_resume()
        return data

    def _maybe_resume(self) -> None:
        if self._paused and self._size <= self.low_water:
            self._paused = False
            self.resume()
