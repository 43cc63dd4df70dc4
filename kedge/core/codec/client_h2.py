"""HTTP/2 client connection to an endpoint: many concurrent streams over one socket.

Used for backends with `protocol: h2` (TLS, ALPN) or `h2c` (prior knowledge). Each request
is an `UpstreamStream`: its response head arrives as a future, its body as a BodyStream
whose consumption grants the endpoint more window (so a slow client slows the endpoint
instead of filling memory), and its trailers with the end of the body.

A GOAWAY from the endpoint stops new streams on this connection; streams above its
`last_stream_id` were never processed (RFC 9113 §6.8), so they fail with a retryable
error, and the rest finish normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import cast

import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from kedge.core.codec.h2_io import H2Output, StreamFlow, new_h2_connection
from kedge.core.errors import (
    KedgeError,
    UpstreamProtocolError,
    UpstreamReset,
)
from kedge.core.http.body import BodyStream
from kedge.core.http.messages import Headers, ResponseHead

__all__ = ["H2ClientConnection", "StreamRefused", "UpstreamStream"]

# Generous windows towards endpoints: the edge reads as fast as its clients take the data,
# and the BodyStream high-water mark (not the window) bounds what it buffers per stream.
_STREAM_WINDOW = 1024 * 1024
_CONNECTION_WINDOW = 16 * 1024 * 1024


class StreamRefused(UpstreamReset):
    """The endpoint did not process the stream (REFUSED_STREAM, or above its GOAWAY's
    last stream): safe to retry elsewhere for any method (RFC 9113 §8.7)."""

    kind = "upstream-reset"


class UpstreamStream(StreamFlow):
    """One request/response on an H2ClientConnection."""

    __slots__ = ("body", "head", "interim")

    def __init__(self, conn: H2ClientConnection, sid: int) -> None:
        super().__init__(conn, sid)
        self.head: asyncio.Future[ResponseHead] = asyncio.get_running_loop().create_future()
        self.body = BodyStream(self.pause_body, self.resume_body)
        self.interim: Callable[[ResponseHead], None] | None = None

    # -- sending ------------------------------------------------------------------------
    async def send_data(self, data: bytes) -> None:
        await self.send_within_window(data, self._gone)

    def _gone(self) -> KedgeError:
        if self.head.done() and self.head.exception() is not None:
            return cast(KedgeError, self.head.exception())
        return UpstreamReset("endpoint closed the stream")

    def end(self, trailers: Headers | None = None) -> None:
        if self.conn.closed:
            raise self._gone()
        try:
            if trailers:
                self.conn.h2.send_headers(self.sid, trailers, end_stream=True)
            else:
                self.conn.h2.end_stream(self.sid)
        except h2.exceptions.StreamClosedError:
            return  # the endpoint answered and closed already
        self.conn.flush_soon()

    def cancel(self) -> None:
        """Reset the stream (the client cancelled, or the edge gave up on it)."""
        conn = cast(H2ClientConnection, self.conn)
        if conn.streams.pop(self.sid, None) is None or conn.closed:
            return
        try:
            conn.h2.reset_stream(self.sid, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:
            return
        conn.flush_soon()
        conn.stream_finished()

    # -- events ---------------------------------------------------------------------------
    def fail(self, error: KedgeError) -> None:
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: no "never retrieved" warning if unused
        self.body.feed_error(error)
        self.wake_sender()


class H2ClientConnection(H2Output, asyncio.Protocol):
    def __init__(
        self,
        key: str,
        max_header_list_size: int = 65536,
        on_lost: Callable[[H2ClientConnection], None] | None = None,
        idle_timeout: float = 60.0,
    ) -> None:
        self.key = key
        self._idle_timeout = idle_timeout
        self.h2 = new_h2_connection(client_side=True)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
            },
        )
        self.streams: dict[int, UpstreamStream] = {}
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop
        self._on_lost = on_lost
        self._init_output()
        self.goaway = False
        self.idle_since = 0.0
        self.deadline = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = UpstreamReset("endpoint closed the connection")
        for stream in list(self.streams.values()):
            stream.fail(error)
        self.streams.clear()
        self._wake_writers()
        if self._on_lost is not None:
            self._on_lost(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self._fail_all(UpstreamProtocolError(f"endpoint broke HTTP/2: {exc}"))
            return
        for event in events:
            self._on_event(event)
        self.flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream.body.feed(event.data)
            stream.received(event.flow_controlled_length)
            if event.stream_ended is not None:
                self._end_stream(event.stream_id, None)
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.head.done():
                stream.head.set_result(_response_head(event.headers))
                if event.stream_ended is not None:
                    self._end_stream(event.stream_id, None)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.interim is not None:
                stream.interim(_response_head(event.headers))
        elif isinstance(event, h2.events.TrailersReceived):
            self._end_stream(event.stream_id, event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self._end_stream(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                cls = StreamRefused if refused else UpstreamReset
                stream.fail(cls(f"endpoint reset the stream ({_code_name(event.error_code)})"))
                self.stream_finished()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            for stream in self.streams.values():
                stream.wake_sender()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = event.last_stream_id or 0
            for sid, stream in list(self.streams.items()):
                if sid > last:
                    self.streams.pop(sid)
                    stream.fail(StreamRefused("endpoint sent GOAWAY before this stream"))
            if event.error_code:
                code = _code_name(event.error_code)
                self._fail_all(UpstreamReset(f"endpoint sent GOAWAY ({code})"))
            elif not self.streams:
                self.close()

    def _end_stream(self, sid: int, trailers: Headers | None) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        if not stream.head.done():
            stream.fail(UpstreamProtocolError("endpoint ended the stream without a response"))
        else:
            stream.body.feed_eof(trailers)
        stream.wake_sender()
        self.stream_finished()

    def stream_finished(self) -> None:
        if self.streams:
            return
        if self.goaway:
            self.close()
        else:
            self.deadline = time.monotonic() + self._idle_timeout  # see on_deadline

    def _fail_all(self, error: KedgeError) -> None:
        for stream in list(self.streams.values()):
            stream.fail(error)
        self.streams.clear()
        self.abort()

    # -- requests -------------------------------------------------------------------------
    @property
    def is_available(self) -> bool:
        """Can carry another stream now."""
        return (
            not self.closed
            and not self.goaway
            and len(self.streams) < self.h2.remote_settings.max_concurrent_streams
        )

    def open_stream(self, fields: Headers, *, end_stream: bool) -> UpstreamStream:
        sid = self.h2.get_next_available_stream_id()
        stream = UpstreamStream(self, sid)
        self.streams[sid] = stream
        self.deadline = 0.0
        self.h2.send_headers(sid, fields, end_stream=end_stream)
        self.flush_soon()
        return stream

    def close(self) -> None:
        """Graceful: GOAWAY, then close the socket."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def on_deadline(self) -> None:
        """Idle (no stream) for the pool's idle timeout: close (the sweeper calls this)."""
        if not self.streams:
            self.close()


def _response_head(fields: Headers) -> ResponseHead:
    status = 0
    headers: Headers = []
    for name, value in fields:
        if name == b":status":
            status = int(value)
        elif name[:1] != b":":
            headers.append((name, value))
    return ResponseHead(status, headers, version="2")


def _code_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
