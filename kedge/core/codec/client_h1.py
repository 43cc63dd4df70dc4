"""HTTP/1.1 client connection to an endpoint: send a request, parse the response strictly.

One connection carries one exchange at a time (no pipelining upstream). Responses are
parsed by llhttp; what it cannot know is handled here: a response to HEAD has no body, a
body without Content-Length or chunked ends at close, and the head is bounded while it
arrives. Anything invalid (CL with TE, bad chunking, a 101 nobody asked for, a header block
over the limit) is an UpstreamProtocolError and the connection is never reused
(hardening S19/R16: the next request on a desynced connection would be poisoned).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import httptools

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import (
    KedgeError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from kedge.core.http.body import BodyStream
from kedge.core.http.exchange import TunnelEnd
from kedge.core.http.messages import Headers, ResponseHead

__all__ = ["H1ClientConnection", "ResponseStart"]

_MAX_INTERIM = 10  # 1xx responses accepted per request (hardening R16)


class _Stop(Exception):
    pass


class ResponseStart:
    """What `H1ClientConnection.response()` returns: the head and how the body is framed."""

    __slots__ = ("body", "content_length", "has_body", "head")

    def __init__(
        self,
        head: ResponseHead,
        has_body: bool,
        content_length: int | None,
        body: BodyStream | None,
    ) -> None:
        self.head = head
        self.has_body = has_body
        self.content_length = content_length
        self.body = body  # this response's body (None: none); never read conn.body instead


class H1ClientConnection(asyncio.Protocol):
    """A connection to one endpoint; the pool owns it while idle."""

    def __init__(
        self,
        endpoint_key: str,
        sweeper: DeadlineSweeper,
        max_header_bytes: int = 65536,
    ) -> None:
        self.endpoint_key = endpoint_key
        self._sweeper = sweeper
        self._max_header_bytes = max_header_bytes
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop  # set in connection_made
        self._parser = httptools.HttpResponseParser(self)
        self.deadline = 0.0
        self._deadline_error: KedgeError | None = None
        self.closed = False
        self.reusable = True  # False once anything makes the framing doubtful
        self.requests = 0
        self.idle_since = 0.0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # Per-exchange state.
        self._head_waiter: asyncio.Future[ResponseStart] | None = None
        self._is_head_request = False
        self._on_interim: Callable[[ResponseHead], None] | None = None
        self._interim = 0
        self._in_head = False
        self._head_bytes = 0
        self._head_size = 0  # exact bytes of the header fields, counted as they arrive
        self._content_length: int | None = None
        self._chunked = False
        self._headers: Headers = []
        self._trailers: Headers = []
        self._reason = b""
        self._status = 0
        self.body: BodyStream | None = None
        self._body_framed = True  # False: the body ends when the connection closes
        self.response_complete = False
        self.received_any = False  # a byte of response arrived for the current request
        self._tunnel: TunnelEnd | None = None
        self._tunnel_prefix = b""
        self._error: KedgeError | None = None
        self._response_timeout = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self._sweeper.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._sweeper.discard(self)
        if self._tunnel is not None:
            self._tunnel.tunnel_close()
            self._tunnel = None
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)
        body = self.body
        if body is not None and not body.at_eof and not self.response_complete:
            if not self._body_framed and self._error is None:
                # RFC 9112 §6.3 rule 8: this body is delimited by the close.
                self.response_complete = True
                body.feed_eof()
            else:
                body.feed_error(
                    self._error or UpstreamReset("endpoint closed the connection mid-body")
                )
        self._fail_head(
            self._error or UpstreamReset("endpoint closed the connection before responding")
        )

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._tunnel is not None:
            self._tunnel.tunnel_pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._tunnel is not None:
            self._tunnel.tunnel_resume()
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.tunnel_write(data)
            return
        if self.response_complete or (self._head_waiter is None and self.body is None):
            # Bytes nobody asked for (one exchange at a time, no pipelining upstream): the
            # endpoint is out of step with us, and a reused connection would hand them to
            # the next request as its response (hardening R16). Never reuse it.
            self._protocol_error("unsolicited bytes from endpoint")
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            self._tunnel_prefix = data[offset:]
            self.reusable = False
            if self.transport is not None:
                self.transport.pause_reading()
            return
        except _Stop:
            return
        except httptools.HttpParserCallbackError:
            # httptools wraps whatever a callback raised (our _Stop included). Unless the
            # response is already complete (HEAD), fail it now: a pending head waiter would
            # otherwise wait for the response timeout.
            if not self.response_complete:
                error = self._error
                self._protocol_error(error.reason if error else "invalid response from endpoint")
            elif self._error is not None:
                # The response is complete and stays good; the connection does not.
                self.reusable = False
                if self.transport is not None:
                    self.transport.abort()
            return
        except httptools.HttpParserError as exc:
            self._protocol_error(f"invalid response from endpoint: {str(exc)[:100]}")
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_header_bytes:
                self._protocol_error("response head from endpoint too large")

    # -- llhttp callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.response_complete:
            # A second message in the same segment as a complete response: unsolicited.
            self._error = UpstreamProtocolError("unsolicited response from endpoint")
            raise _Stop
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._content_length = None
        self._chunked = False
        self._headers = []
        self._trailers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if self._in_head:
            self._headers.append((lname, value))
            self._head_size += len(name) + len(value) + 4
            if lname == b"content-length":
                self._content_length = int(value)  # llhttp validated it
            elif lname == b"transfer-encoding":
                self._chunked = True
        else:
            self._trailers.append((lname, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        # data_received bounds a head spread over reads; this bounds one that came in one.
        if self._head_size + len(self._reason) > self._max_header_bytes:
            self._error = UpstreamProtocolError("response head from endpoint too large")
            raise _Stop
        status = self._parser.get_status_code()
        head = ResponseHead(status, self._headers, self._reason, self._parser.get_http_version())
        if 100 <= status < 200 and status != 101:
            self._interim += 1
            if self._interim > _MAX_INTERIM:
                self._error = UpstreamProtocolError("too many interim responses from endpoint")
                raise _Stop
            if self._on_interim is not None and status != 100:
                self._on_interim(head)  # e.g. 103 Early Hints; 100 was answered by the edge
            return
        self._status = status
        content_length = self._content_length
        chunked = self._chunked
        no_body = self._is_head_request or status in (204, 304) or status == 101
        has_body = not no_body and (content_length is None or content_length > 0)
        self._body_framed = chunked or content_length is not None
        if not self._body_framed and has_body:
            self.reusable = False
        if has_body:
            self.body = BodyStream(self._pause, self._resume)
        waiter = self._head_waiter
        self._head_waiter = None
        self.deadline = 0.0
        if waiter is not None and not waiter.done():
            waiter.set_result(
                ResponseStart(head, has_body, None if chunked else content_length, self.body)
            )
        if self._is_head_request:
            # llhttp cannot be told the request was HEAD, so it would wait for a body of
            # Content-Length bytes. Stop here; such a connection is not reused.
            self.reusable = False
            self.response_complete = True
            raise _Stop

    def on_body(self, data: bytes) -> None:
        if self.body is not None:
            self.body.feed(data)

    def on_message_complete(self) -> None:
        if self._in_head or (100 <= self._parser.get_status_code() < 200 and self._status == 0):
            return  # end of an interim response
        self.response_complete = True
        if not self._parser.should_keep_alive():
            self.reusable = False
        if self.body is not None:
            self.body.feed_eof(self._trailers or None)

    # -- flow control -------------------------------------------------------------
    def _pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- errors and deadlines -------------------------------------------------------
    def _protocol_error(self, reason: str) -> None:
        self._error = UpstreamProtocolError(reason)
        self.reusable = False
        self._fail_head(self._error)
        if self.body is not None:
            self.body.feed_error(self._error)
        if self.transport is not None:
            self.transport.abort()

    def _fail_head(self, error: KedgeError) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def on_deadline(self) -> None:
        if self._head_waiter is not None or (self.body is not None and not self.response_complete):
            self._error = self._deadline_error or UpstreamTimeout(
                f"endpoint sent no response head within {self._response_timeout:g}s"
                if self._head_waiter is not None
                else "endpoint went idle mid-response"
            )
            self._fail_head(self._error)
            if self.body is not None:
                self.body.feed_error(self._error)
        self.close()

    def expect_head_within(self, seconds: float) -> None:
        """Start the response-head timeout now (the request body has been sent)."""
        if self._head_waiter is not None:
            self._response_timeout = seconds
            self.set_deadline(seconds)

    def set_deadline(self, seconds: float, error: KedgeError | None = None) -> None:
        self.deadline = time.monotonic() + seconds if seconds > 0 else 0.0
        self._deadline_error = error

    # -- exchange API ----------------------------------------------------------------
    @property
    def is_available(self) -> bool:
        """Idle and reusable: the pool may hand it out."""
        return self.reusable and not self.closed and self.transport is not None

    def start(
        self,
        head_bytes: bytes,
        *,
        is_head_request: bool,
        response_timeout: float,
        on_interim: Callable[[ResponseHead], None] | None = None,
    ) -> None:
        """Write a request head and get ready for its response."""
        assert self.transport is not None
        self.requests += 1
        self._is_head_request = is_head_request
        self._on_interim = on_interim
        self._interim = 0
        self._status = 0
        self.body = None
        self.response_complete = False
        self.received_any = False
        self._error = None
        # llhttp parses one response after another on the same parser; a connection whose
        # parser was stopped mid-message (HEAD, errors) is never reused, so no reset is due.
        self._head_waiter = self._loop.create_future()
        # The error is built only if the deadline fires: no allocation per request.
        self._response_timeout = response_timeout
        self.set_deadline(response_timeout)
        self.transport.write(head_bytes)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            await waiter
        if self.closed and self._head_waiter is None and not self.response_complete:
            raise self._error or UpstreamReset("endpoint closed the connection")

    async def response(self) -> ResponseStart:
        waiter = self._head_waiter
        if waiter is None:
            raise self._error or UpstreamReset("no response pending")
        return await waiter

    def tunnel_end(self) -> TunnelEnd:
        """The end the client side writes into once the tunnel is open."""
        return _UpstreamTunnelEnd(self)

    def start_tunnel(self, client_end: TunnelEnd) -> None:
        """Become a raw tunnel: bytes from the endpoint go to `client_end`."""
        self._tunnel = client_end
        self.reusable = False
        self.deadline = 0.0
        if self._tunnel_prefix:
            client_end.tunnel_write(self._tunnel_prefix)
            self._tunnel_prefix = b""
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class _UpstreamTunnelEnd:
    """The endpoint side of a tunnel: bytes from the client are written to the endpoint."""

    __slots__ = ("conn",)

    def __init__(self, conn: H1ClientConnection) -> None:
        self.conn = conn

    def tunnel_write(self, data: bytes) -> None:
        self.conn.write(data)

    def tunnel_close(self) -> None:
        self.conn.close()

    def tunnel_pause(self) -> None:
        self.conn._pause()

    def tunnel_resume(self) -> None:
        self.conn._resume()
