"""What both HTTP/2 drivers (server_h2, client_h2) share: output and per-stream flow control.

`H2Output` is the write side of a connection: frames queued in h2 during one loop iteration
leave in one socket write (`flush_soon`), and writers wait while the transport's buffer is
over its high-water mark (`drain`). `StreamFlow` is one stream's flow control in both
directions (RFC 9113 §5.2): DATA is sent only within the peer's window, and the window we
grant grows only as the stream's BodyStream is consumed, so a slow reader on one side slows
the writer on the other instead of filling memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h2.config
import h2.connection
import h2.exceptions

from kedge.core.codec.hpack_literal import LiteralEncoder
from kedge.core.errors import KedgeError

__all__ = ["H2Output", "StreamFlow", "new_h2_connection"]


def new_h2_connection(*, client_side: bool) -> h2.connection.H2Connection:
    """An h2 state machine as both drivers use it: header bytes as given, no outbound
    re-checks (what the edge sends is built from validated messages, with lower-case names
    and hop-by-hop fields removed; re-checking every field costs more than the rest of a
    small response; inbound validation stays on), and the never-indexing literal HPACK
    encoder (see hpack_literal)."""
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.encoder = LiteralEncoder()  # type: ignore[assignment]
    return conn


class H2Output:
    """Mixin for an asyncio.Protocol that owns `h2` (an H2Connection) and a transport."""

    h2: h2.connection.H2Connection
    transport: asyncio.Transport | None
    _loop: asyncio.AbstractEventLoop

    def _init_output(self) -> None:
        self.closed = False
        self.data_sent = 0  # DATA payload bytes sent (the flood guard reads and resets it)
        self._flush_pending = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    def flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def flush_soon(self) -> None:
        """Write what h2 queued at the end of this loop iteration: a small response's
        HEADERS and DATA (and other streams' frames) leave in one write."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._write_paused and not self.closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter


class StreamFlow:
    """One stream's flow control; the drivers' stream classes extend it."""

    __slots__ = ("_sender", "conn", "paused", "sid", "unacked")

    def __init__(self, conn: H2Output, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.paused = False  # the body is over its high-water mark: grant no more window
        self.unacked = 0  # flow-controlled bytes received but not acknowledged yet
        self._sender: asyncio.Future[None] | None = None  # a send waiting for window

    # -- receiving: window granted as the body is consumed --------------------------------
    def received(self, flow_length: int) -> None:
        """Account DATA that was fed to the body (acknowledged now unless paused)."""
        if self.paused:
            self.unacked += flow_length
        else:
            self.conn.h2.acknowledge_received_data(flow_length, self.sid)

    def pause_body(self) -> None:
        self.paused = True

    def resume_body(self) -> None:
        self.paused = False
        if self.unacked and not self.conn.closed:
            unacked, self.unacked = self.unacked, 0
            try:
                self.conn.h2.acknowledge_received_data(unacked, self.sid)
            except h2.exceptions.ProtocolError:
                return  # the stream closed meanwhile
            self.conn.flush_soon()

    # -- sending: within the peer's window ------------------------------------------------
    def wake_sender(self) -> None:
        waiter = self._sender
        if waiter is not None:
            self._sender = None
            if not waiter.done():
                waiter.set_result(None)

    async def send_within_window(self, data: bytes, gone: Callable[[], KedgeError]) -> None:
        """Send `data` as DATA frames as the peer's windows allow; `gone()` is raised when
        the connection or the stream is closed meanwhile."""
        conn = self.conn
        view = memoryview(data)
        while view:
            if conn.closed:
                raise gone()
            try:
                window = conn.h2.local_flow_control_window(self.sid)
            except h2.exceptions.StreamClosedError:
                raise gone() from None
            if window <= 0:
                self._sender = asyncio.get_running_loop().create_future()
                await self._sender
                continue
            size = min(window, conn.h2.max_outbound_frame_size, len(view))
            try:
                conn.h2.send_data(self.sid, view[:size].tobytes())
            except h2.exceptions.StreamClosedError:
                raise gone() from None
            conn.data_sent += size
            view = view[size:]
            conn.flush_soon()
            await conn.drain()
