"""RawTunnel: the endpoint side of a byte tunnel over plain TCP (the far end of a CONNECT).

The client side is the server codec's tunnel end (see `ResponseChannel.start_tunnel`), the
same one a WebSocket upgrade uses; this protocol is its peer on a raw TCP connection and
keeps no buffer of its own. Bytes are written through as they arrive, with backpressure:
when one side's transport cannot take more (`pause_writing`), reading from the other side
pauses until it drains.

A half-close travels through (RFC 9110 §9.3.6: the tunnel ends when both sides have
closed): an EOF from one side shuts down writing towards the other where the transport can
(plain TCP; TLS cannot), and once both directions are finished both connections close. A
connection lost on either side closes the other. With `idle_timeout`, a tunnel that
carried no byte either way for that long is closed (the deadline sweeper checks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.http.exchange import TunnelEnd

__all__ = ["HalfClosable", "RawTunnel"]


@runtime_checkable
class HalfClosable(Protocol):
    """A tunnel end that can pass on a half-close (the other side finished sending)."""

    def tunnel_write_eof(self) -> None: ...


class RawTunnel(asyncio.Protocol):
    """One raw TCP connection to an endpoint, spliced with a client connection.

    Open it with `create_connection(lambda: RawTunnel(...))`, hand it to the client's
    `start_tunnel` (it is the TunnelEnd the client side writes into), then `attach` the end
    that call returns. Reading is paused until `attach`, so bytes a speaks-first server
    sends wait (in the kernel, or here if the transport had already read them) until the
    client's 200 is out.
    """

    def __init__(
        self,
        idle_timeout: float = 0.0,
        sweeper: DeadlineSweeper | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self._peer: TunnelEnd | None = None
        self._idle = idle_timeout  # 0: no idle timeout
        self._sweeper = sweeper
        self._clock = clock
        self.deadline = 0.0  # read by the sweeper
        self.last_activity = clock()
        self.bytes_up = 0  # client -> endpoint
        self.bytes_down = 0  # endpoint -> client
        self._eof_up = False  # the client finished sending
        self._eof_down = False  # the endpoint finished sending
        self.idle_expired = False
        self._early = b""  # bytes delivered before `attach`
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- endpoint side (asyncio.Protocol) ---------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.pause_reading()  # until `attach`

    def attach(self, peer: TunnelEnd) -> None:
        """Start splicing with the client's end (after the 200 went out)."""
        self._peer = peer
        t = self.transport
        if t is None or t.is_closing():
            peer.tunnel_close()
            return
        self.last_activity = self._clock()
        if self._idle > 0 and self._sweeper is not None:
            self.deadline = self.last_activity + self._idle
            self._sweeper.add(self)
        if self._early:
            early, self._early = self._early, b""
            peer.tunnel_write(early)
        t.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.last_activity = self._clock()
        if self._peer is not None:
            self._peer.tunnel_write(data)
        else:
            # Reading is paused until `attach`, but a transport may deliver what it had
            # already read (uvloop does, for a connection it has just accepted): keep it.
            self._early += data

    def eof_received(self) -> bool | None:
        self._eof_down = True
        peer = self._peer
        if peer is not None:
            if isinstance(peer, HalfClosable):
                peer.tunnel_write_eof()
            else:
                peer.tunnel_close()
        self._close_if_done()
        t = self.transport
        # Writing to the endpoint may go on: closing is decided above. A TLS transport (a
        # tunnel through an edge) cannot stay half-open, and asyncio ignores True there.
        return True if t is not None and t.can_write_eof() else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sweeper is not None:
            self._sweeper.discard(self)
        self.deadline = 0.0
        if self._peer is not None:
            self._peer.tunnel_close()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        if self._peer is not None:
            self._peer.tunnel_pause()  # the endpoint is slow: stop reading the client

    def resume_writing(self) -> None:
        if self._peer is not None:
            self._peer.tunnel_resume()

    # -- client side writes here (TunnelEnd) --------------------------------------------
    def tunnel_write(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self.last_activity = self._clock()
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def tunnel_close(self) -> None:
        """The client connection is gone: close (after what is buffered is written)."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    def tunnel_pause(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()  # the client is slow: stop reading the endpoint

    def tunnel_resume(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and self._peer is not None:
            t.resume_reading()

    def tunnel_write_eof(self) -> None:
        """The client finished sending: half-close towards the endpoint."""
        self._eof_up = True
        t = self.transport
        if t is not None and not t.is_closing():
            if t.can_write_eof():
                t.write_eof()
            else:
                t.close()
        self._close_if_done()

    # -- ending ------------------------------------------------------------------------
    def _close_if_done(self) -> None:
        if self._eof_up and self._eof_down:
            self.close()

    def close(self) -> None:
        """End the tunnel: both connections close once their buffers are written."""
        self.tunnel_close()
        if self._peer is not None:
            self._peer.tunnel_close()

    def abort(self) -> None:
        t = self.transport
        if t is not None:
            t.abort()

    def on_deadline(self) -> None:
        due = self.last_activity + self._idle
        if self._clock() < due:
            self.deadline = due  # bytes moved since: look again then
            return
        self.idle_expired = True
        self.abort()  # nothing moved for the whole timeout: no buffer worth flushing

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> None:
        """Until the endpoint connection is lost (then the client's is closing too)."""
        await asyncio.shield(self._closed)
