"""StreamSplice: a byte tunnel between a raw end and an HTTP/2 stream (RFC 9113 §8.5).

A CONNECT over HTTP/2 is a stream whose DATA frames are the tunnel's bytes. One side of
the splice is a raw end (the TunnelEnd of a TCP connection: the edge's RawTunnel to the
endpoint, or winch's client connection after its 200), the other a flow-controlled stream
given as three calls: `read()` (b"" at the end), `write(data)` (waits for the window)
and `end()` (END_STREAM), plus `abort()` (RST_STREAM).

Backpressure both ways: bytes from the raw end queue for the stream, and past
`high_water` the raw end is told to stop reading (`tunnel_pause`) until the queue drains
below a quarter of it; the raw end tells the splice when its own socket is full
(`tunnel_pause` on us), and reading the stream waits, which holds back the stream's
WINDOW_UPDATEs. A half-close travels through: the stream's END_STREAM half-closes the raw
end, and the raw end's EOF ends the stream. A close of the raw end resets the stream
unless both directions had finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from kedge.core.errors import KedgeError
from kedge.core.http.exchange import TunnelEnd
from kedge.core.net.raw_tunnel import HalfClosable

__all__ = ["StreamSplice"]


class StreamSplice:
    def __init__(
        self,
        read: Callable[[], Awaitable[bytes]],
        write: Callable[[bytes], Awaitable[None]],
        end: Callable[[], None],
        abort: Callable[[], None],
        *,
        high_water: int = 256 * 1024,
    ) -> None:
        self._read = read
        self._write = write
        self._end = end
        self._abort = abort
        self._high = high_water
        self._raw: TunnelEnd | None = None
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._raw_paused = False  # we told the raw end to stop reading
        self._ready = asyncio.Event()  # the queue has bytes, or the raw end finished
        self._raw_writable = asyncio.Event()
        self._raw_writable.set()
        self._raw_eof = False  # the raw end sent everything (half-close)
        self._raw_closed = False
        self.bytes_from_raw = 0
        self.bytes_to_raw = 0

    def attach(self, raw: TunnelEnd) -> None:
        self._raw = raw

    # -- the raw end calls these (we are its peer) ------------------------------------------
    def tunnel_write(self, data: bytes) -> None:
        self.bytes_from_raw += len(data)
        self._queue.append(data)
        self._queued += len(data)
        self._ready.set()
        if self._queued > self._high and not self._raw_paused and self._raw is not None:
            self._raw_paused = True
            self._raw.tunnel_pause()

    def tunnel_write_eof(self) -> None:
        self._raw_eof = True
        self._ready.set()

    def tunnel_close(self) -> None:
        self._raw_closed = True
        self._ready.set()
        self._raw_writable.set()

    def tunnel_pause(self) -> None:
        self._raw_writable.clear()  # the raw end's socket is full

    def tunnel_resume(self) -> None:
        self._raw_writable.set()

    # -- running ------------------------------------------------------------------------
    async def run(self) -> None:
        """Carry bytes until both directions finished, or either side failed or the raw
        end closed (then the other direction has nothing left to do)."""
        pending = {
            asyncio.ensure_future(self._to_stream()),
            asyncio.ensure_future(self._to_raw()),
        }
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(not t.cancelled() and t.exception() is not None for t in done)
                if failed or self._raw_closed:
                    break
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, KedgeError, OSError):
                    await task

    async def _to_stream(self) -> None:
        """Raw end -> stream."""
        try:
            while True:
                while not self._queue and not (self._raw_eof or self._raw_closed):
                    self._ready.clear()
                    await self._ready.wait()
                if self._queue:
                    data = self._queue.popleft()
                    self._queued -= len(data)
                    await self._write(data)
                    if self._raw_paused and self._queued < self._high // 4 and self._raw:
                        self._raw_paused = False
                        self._raw.tunnel_resume()
                    continue
                if self._raw_eof:
                    self._end()  # the raw end finished sending (then maybe closed): END_STREAM
                else:
                    self._abort()  # the raw end closed without an EOF: reset
                return
        except (KedgeError, OSError):
            self._abort()
            self._close_raw()
            raise

    async def _to_raw(self) -> None:
        """Stream -> raw end."""
        try:
            while data := await self._read():
                await self._raw_writable.wait()
                if self._raw_closed:
                    return
                self.bytes_to_raw += len(data)
                if self._raw is not None:
                    self._raw.tunnel_write(data)
        except (KedgeError, OSError):
            self._close_raw()
            raise
        raw = self._raw
        if raw is not None and not self._raw_closed:
            if isinstance(raw, HalfClosable):
                raw.tunnel_write_eof()
            else:
                raw.tunnel_close()

    def _close_raw(self) -> None:
        if self._raw is not None and not self._raw_closed:
            self._raw_closed = True
            self._raw.tunnel_close()
