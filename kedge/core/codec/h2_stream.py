"""One HTTP/2 stream on the server side: request body intake and the ResponseChannel.

The connection (`server_h2`) routes frames here; the pipeline answers through the
ResponseChannel methods, which queue frames in the connection's h2 state machine and flush
them. Sending respects both flow-control windows (RFC 9113 §5.2): `send_body` waits for a
WINDOW_UPDATE when the window is spent, and for the transport when its buffer is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import h2.errors
import h2.exceptions

from kedge.core.codec.h2_io import StreamFlow
from kedge.core.errors import BodyTooLarge, ClientDisconnected, KedgeError
from kedge.core.http.body import BodyStream
from kedge.core.http.error_response import (
    error_response,
    grpc_error_fields,
    grpc_error_response,
)
from kedge.core.http.exchange import Exchange, TunnelEnd
from kedge.core.http.messages import Headers, ResponseHead

if TYPE_CHECKING:
    from kedge.core.codec.server_h2 import H2ServerConnection

__all__ = ["H2Stream"]

# Response fields that are connection-specific in HTTP/2 (RFC 9113 §8.2.2): a backend's
# HTTP/1.1 hop-by-hop headers are removed by the forwarder; these are belts and braces.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def _client_gone() -> KedgeError:
    return ClientDisconnected("client reset the stream or closed the connection")


def _status_fields(status: int, headers: Headers) -> Headers:
    fields: Headers = [(b":status", b"%d" % status)]
    fields += [item for item in headers if item[0] not in _CONNECTION_SPECIFIC]
    return fields


class H2Stream(StreamFlow):
    """Implements kedge.core.http.exchange.ResponseChannel for one stream."""

    __slots__ = ("body", "ex", "server", "task")

    def __init__(self, conn: H2ServerConnection, sid: int) -> None:
        super().__init__(conn, sid)
        self.server = conn  # the same object as `conn`, with its server-side type
        self.ex: Exchange | None = None
        self.body: BodyStream | None = None
        self.task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, ex: Exchange, body: BodyStream | None, work: Awaitable[None]) -> None:
        self.ex = ex
        self.body = body
        self.task = asyncio.get_running_loop().create_task(self._run(work))

    async def _run(self, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            pass  # the client reset the stream or left: nothing to answer
        finally:
            self.task = None
            self._finish()

    def _finish(self) -> None:
        ex = self.ex
        conn = self.conn
        if ex is not None and not ex.finished and not conn.closed:
            self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif self.body is not None and not self.body.at_eof and not conn.closed:
            # Answered before the whole request arrived: stop the client sending the rest
            # (RFC 9113 §8.1: RST_STREAM with NO_ERROR after a complete response).
            self._reset(h2.errors.ErrorCodes.NO_ERROR)
        self.server.stream_done(self)

    def _reset(self, code: int) -> None:
        try:
            self.conn.h2.reset_stream(self.sid, code)
        except h2.exceptions.ProtocolError:
            return  # already closed
        self.conn.flush_soon()

    # -- request side (called by the connection) ----------------------------------------
    def on_data(self, data: bytes, flow_length: int) -> None:
        body = self.body
        if body is None or body.at_eof:
            self.conn.h2.acknowledge_received_data(flow_length, self.sid)
            return
        body.feed(data)
        limit = self.server.settings.max_request_body_bytes
        if limit and body.total > limit:
            body.feed_error(BodyTooLarge(f"request body larger than {limit} bytes"))
        self.received(flow_length)

    def on_end(self, trailers: Headers | None) -> None:
        body = self.body
        if body is not None and not body.at_eof:
            body.feed_eof(trailers)

    def on_reset(self, error: KedgeError) -> None:
        """The client reset the stream (or the connection died): stop everything for it."""
        if self.body is not None:
            self.body.feed_error(error)
        self.wake_sender()
        task = self.task
        if task is not None and self.ex is not None and not self.ex.finished:
            # Cancelling the pipeline makes the forwarder cancel the upstream request.
            task.cancel()

    # -- ResponseChannel -----------------------------------------------------------------
    def send_head(
        self, ex: Exchange, head: ResponseHead, content_length: int | None, has_body: bool
    ) -> None:
        self._send_headers(_status_fields(head.status, head.headers), end=not has_body)

    def send_interim(self, ex: Exchange, head: ResponseHead) -> None:
        self._send_headers(_status_fields(head.status, head.headers), end=False)

    def _send_headers(self, fields: Headers, *, end: bool) -> None:
        conn = self.conn
        if conn.closed:
            return
        try:
            conn.h2.send_headers(self.sid, fields, end_stream=end)
        except h2.exceptions.StreamClosedError:
            raise ClientDisconnected("client reset the stream") from None
        conn.flush_soon()

    async def send_body(self, ex: Exchange, data: bytes) -> None:
        await self.send_within_window(data, _client_gone)

    async def send_last(self, ex: Exchange, data: bytes, trailers: Headers | None) -> None:
        conn = self.conn
        if data and not trailers and not conn.closed:
            try:
                fits = len(data) <= min(
                    conn.h2.local_flow_control_window(self.sid), conn.h2.max_outbound_frame_size
                )
                if fits:
                    conn.h2.send_data(self.sid, data, end_stream=True)
                    conn.data_sent += len(data)
                    conn.flush_soon()
                    return
            except h2.exceptions.StreamClosedError:
                raise ClientDisconnected("client reset the stream") from None
        if data:
            await self.send_body(ex, data)
        self.end(ex, trailers)

    def end(self, ex: Exchange, trailers: Headers | None) -> None:
        conn = self.conn
        if conn.closed:
            return
        try:
            if trailers:
                conn.h2.send_headers(self.sid, trailers, end_stream=True)
            else:
                conn.h2.end_stream(self.sid)
        except h2.exceptions.ProtocolError:
            return  # the client reset the stream meanwhile
        conn.flush_soon()

    def abort(self, ex: Exchange, error: KedgeError | None) -> None:
        if ex.grpc and error is not None and ex.head_sent:
            # gRPC reads the call's status from trailers; a reset would lose the reason.
            self.end(ex, grpc_error_fields(error, ex.request_id, self.server.settings.error_origin))
            return
        self._reset(
            h2.errors.ErrorCodes.CANCEL if error is None else h2.errors.ErrorCodes.INTERNAL_ERROR
        )

    def send_error_response(self, ex: Exchange, error: KedgeError) -> None:
        ex.head_sent = True
        ex.finished = True
        if ex.grpc:
            ex.status = 200
            head = grpc_error_response(error, ex.request_id, self.server.settings.error_origin)
            self._send_quietly(_status_fields(200, head.headers), b"")
            return
        ex.status = error.http_status
        head, body = error_response(error, ex.request_id, origin=self.server.settings.error_origin)
        ex.bytes_out += len(body)
        self._send_quietly(_status_fields(head.status, head.headers), body)

    def refuse(self, error: KedgeError, request_id: bytes, *, grpc: bool) -> None:
        """Answer a stream whose request head was refused (it never became an exchange)."""
        if grpc:
            head = grpc_error_response(error, request_id, self.server.settings.error_origin)
            self._send_quietly(_status_fields(200, head.headers), b"")
        else:
            head, body = error_response(error, request_id, origin=self.server.settings.error_origin)
            self._send_quietly(_status_fields(head.status, head.headers), body)
        self.server.stream_done(self)

    def _send_quietly(self, fields: Headers, body: bytes) -> None:
        """An edge-made answer: small, so sent at once (the initial window holds it)."""
        conn = self.conn
        if conn.closed:
            return
        try:
            conn.h2.send_headers(self.sid, fields, end_stream=not body)
            if body:
                window = conn.h2.local_flow_control_window(self.sid)
                conn.h2.send_data(self.sid, body[: max(window, 0)], end_stream=True)
        except h2.exceptions.ProtocolError:
            return
        conn.flush_soon()

    def start_tunnel(self, ex: Exchange, peer: TunnelEnd) -> TunnelEnd:
        # Upgrades do not exist in HTTP/2 (RFC 9113 §8.6); extended CONNECT is not offered,
        # so no exchange on this connection ever asks for a tunnel.
        raise RuntimeError("no tunnels over HTTP/2")
