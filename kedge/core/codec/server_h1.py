"""HTTP/1.1 server connection: llhttp (httptools) parsing made strict, exchanges, responses.

llhttp already rejects the classic smuggling vectors (CL with TE, duplicate or invalid
Content-Length, bad chunk sizes, bare LF, obs-fold, invalid names and values). This driver
adds what it lets through or cannot know: HTTP/0.9 and 2.0 request lines, TE on HTTP/1.0,
size limits on the head (bounded while bytes arrive, not after), Host rules (RFC 9112
§3.2), target forms, body limits, and the header timeout. Every violation becomes a typed
KedgeError, answered once and followed by a close: nothing malformed reaches a backend.

Requests on one connection are handled strictly in order (RFC 9112 §9.3.2); at most
`max_pipelined` wait behind the active one, beyond that the connection stops reading, answers
what it queued and closes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import httptools

from kedge.core.codec.h1_request import validate_request
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import (
    BadRequest,
    BodyTooLarge,
    ClientDisconnected,
    HeaderTooLarge,
    KedgeError,
    RequestTimeout,
    UriTooLong,
)
from kedge.core.http.body import BodyStream
from kedge.core.http.error_response import error_response, reason_phrase
from kedge.core.http.exchange import Exchange, TunnelEnd
from kedge.core.http.headers import RequestIdGenerator
from kedge.core.http.messages import (
    Headers,
    ResponseHead,
    field_lines,
    last_chunk,
)
from kedge.core.net.raw_tunnel import HalfClosable
from kedge.core.net.tls import TlsPeer, tls_peer

__all__ = ["H1ServerConnection", "H1ServerSettings", "Handler"]

Handler = Callable[[Exchange], Awaitable[None]]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4


@lru_cache(maxsize=1024)  # statuses are 3-digit numbers: the cache stays small
def _default_status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode()


def _status_line(status: int, reason: bytes) -> bytes:
    if not reason:
        return _default_status_line(status)
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


@dataclass(frozen=True, slots=True)
class H1ServerSettings:
    listener: str
    scheme: str  # "http" or "https": what X-Forwarded-Proto says
    max_uri_bytes: int = 8192
    max_header_bytes: int = 65536
    max_header_count: int = 100
    max_request_body_bytes: int = 0  # 0 = no limit here (routes may set their own)
    max_pipelined: int = 16
    max_keepalive_requests: int = 1000
    request_header_timeout: float = 10.0
    request_body_idle_timeout: float = 60.0
    keepalive_idle_timeout: float = 60.0
    error_origin: bytes = b"kedge"  # X-<origin>-Error on the errors this connection renders


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp (the error is kept on the connection)."""


class _Tunnel:
    """The client side of a raw tunnel: bytes from the client go to `peer`."""

    __slots__ = ("conn", "peer")

    def __init__(self, conn: H1ServerConnection, peer: TunnelEnd) -> None:
        self.conn = conn
        self.peer = peer

    def tunnel_write(self, data: bytes) -> None:
        t = self.conn.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def tunnel_close(self) -> None:
        t = self.conn.transport
        if t is not None and not t.is_closing():
            t.close()

    def tunnel_pause(self) -> None:
        t = self.conn.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def tunnel_resume(self) -> None:
        t = self.conn.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    def tunnel_write_eof(self) -> None:
        """The far end finished sending: half-close towards the client (a CONNECT tunnel).
        TLS in asyncio cannot shut down only its sending side, so it closes instead."""
        t = self.conn.transport
        if t is not None and not t.is_closing():
            if t.can_write_eof():
                t.write_eof()
            else:
                t.close()


class H1ServerConnection(asyncio.Protocol):
    """One client connection. Implements kedge.core.http.exchange.ResponseChannel."""

    def __init__(
        self,
        settings: H1ServerSettings,
        handler: Handler,
        request_ids: RequestIdGenerator,
        sweeper: DeadlineSweeper,
        on_open: Callable[[H1ServerConnection], None] | None = None,
        on_close: Callable[[H1ServerConnection], None] | None = None,
        on_error: Callable[[KedgeError, H1ServerConnection, bytes], None] | None = None,
        switch_to_h2: Callable[[asyncio.Transport, bytes], None] | None = None,
    ) -> None:
        self.settings = settings
        # Hands the transport (and the bytes read so far) to an HTTP/2 connection: after
        # ALPN `h2`, or when a plaintext connection opens with the h2c preface.
        self._switch_to_h2 = switch_to_h2
        self._sniff = b""  # the start of a possible h2c preface, until it is whole
        self._handler = handler
        self._request_ids = request_ids
        self._sweeper = sweeper
        self._on_open = on_open
        self._on_close = on_close
        self._on_error = on_error
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop  # set in connection_made
        self.client_ip = ""
        self.client_port = 0
        self.tls: TlsPeer | None = None
        self._parser = httptools.HttpRequestParser(self)
        self.deadline = 0.0
        # Parse state of the request whose head or body is arriving.
        self._url = b""
        self._headers: Headers = []
        self._header_count = 0
        self._header_bytes = 0
        self._head_bytes = 0
        self._in_head = False
        self._head_clock = False  # the header timeout of the next request is running
        self._in_trailers = False
        self._trailers: Headers = []
        self._body: BodyStream | None = None
        self._body_limit = 0
        self._body_seen = 0
        self._parse_error: KedgeError | None = None
        self._deferred_error: KedgeError | None = None
        # Exchanges: parsed and waiting, and the one being handled.
        self._queue: deque[Exchange] = deque()
        self._active: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._requests = 0
        # The connection closes once the queue is answered (error, drain, request cap).
        self._last_call = False
        self._stop_reading = False  # ignore further bytes from the client
        self._closed = False
        self._tunnel: TunnelEnd | None = None
        self._tunnel_prefix = b""  # bytes the client sent right after an upgrade request
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pending: bytes | None = None  # response head, coalesced with the first body write
        self._chunked_out = False
        self._close_delimited = False
        self._reading_paused_by: set[str] = set()

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        if self._switch_to_h2 is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                self._closed = True  # this object is done: the connection is HTTP/2
                self._switch_to_h2(self.transport, b"")
                return
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_ip, self.client_port = str(peer[0]), int(peer[1])
        self.tls = tls_peer(transport)
        self._sweeper.add(self)
        self._set_deadline(self.settings.keepalive_idle_timeout)
        if self._on_open is not None:
            self._on_open(self)

    def reject(self) -> None:
        """Close a connection the edge will not serve (over the connection limit)."""
        self._stop_reading = True
        self._sweeper.discard(self)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._sweeper.discard(self)
        if self._body is not None and not self._body.at_eof:
            self._body.feed_error(ClientDisconnected("client closed the connection"))
        if self._tunnel is not None:
            self._tunnel.tunnel_close()
            self._tunnel = None
        self._wake_writer()
        task = self._task
        if task is not None and self._active is not None and not self._active.finished:
            # The client is gone mid-exchange: cancel the pipeline so the forwarder
            # aborts the upstream request at once (it must not run on for nobody).
            task.cancel()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._tunnel is not None:
            self._tunnel.tunnel_pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._tunnel is not None:
            self._tunnel.tunnel_resume()
        self._wake_writer()

    def _wake_writer(self) -> None:
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.tunnel_write(data)
            return
        if self._stop_reading:
            return
        if self._switch_to_h2 is not None and self._requests == 0 and not self._in_head:
            data = self._sniff + data
            if data[:24] == _H2_PREFACE[: len(data)] and len(data) < 24:
                self._sniff = data  # maybe the h2c preface (RFC 9113 §3.3): wait for all
                return
            self._sniff = b""
            if data.startswith(_H2_PREFACE):
                self._closed = True
                self._sweeper.discard(self)
                if self._on_close is not None:
                    self._on_close(self)
                assert self.transport is not None
                self._switch_to_h2(self.transport, data)
                return
            self._switch_to_h2 = None  # HTTP/1.1 it is
        starting = not self._in_head and self._body is None
        if starting and not self._head_clock:
            # First byte of a new request: the header timeout runs from here, in total
            # (not per read, or one byte every few seconds would hold it open forever).
            # Empty lines before a request line (RFC 9112 §2.2) do not restart it.
            self._head_clock = True
            self._set_deadline(self.settings.request_header_timeout)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[int(exc.args[0]) if exc.args else len(data) :])
            return
        except (httptools.HttpParserCallbackError, _StopParsing) as exc:
            if self._parse_error is None and isinstance(exc.__context__ or exc, _StopParsing):
                return  # the pipelining cap (on_headers_complete): no error, answer and close
            self._fail(self._parse_error or BadRequest("invalid request"))
            return
        except httptools.HttpParserInvalidMethodError:
            self._fail(BadRequest("invalid request method"))
            return
        except httptools.HttpParserError as exc:
            self._fail(self._parse_error or BadRequest(f"malformed request: {_llhttp_reason(exc)}"))
            return
        if self._in_head:
            # An HTTP/0.9 request line (`GET /` CRLF) has no version, and llhttp then waits
            # for header fields a 0.9 client never sends: a line end while the version is
            # still unset is refused now, not after the header timeout. (Leading empty
            # lines, RFC 9112 §2.2, are not a request line; a kept-alive parser keeps the
            # previous request's version, so later requests cannot be mistaken.)
            if self._parser.get_http_version() in ("0.0", "0.9") and b"\n" in (
                data.lstrip(b"\r\n") if starting else data
            ):
                self._fail(BadRequest("HTTP/0.9 requests are not accepted"))
                return
            # Bound the head while it arrives: llhttp would buffer a 10 MB header value.
            self._head_bytes += len(data)
            if self._head_bytes > self.settings.max_uri_bytes + self.settings.max_header_bytes:
                self._fail(HeaderTooLarge("request head too large"))

    def eof_received(self) -> bool | None:
        tunnel = self._tunnel
        t = self.transport
        if isinstance(tunnel, HalfClosable) and t is not None and t.can_write_eof():
            # A CONNECT tunnel carries a half-close through (RFC 9110 §9.3.6): the far end
            # may still answer what the client sent. (TLS cannot keep the socket open.)
            tunnel.tunnel_write_eof()
            return True
        # A FIN from the client ends the exchange: the edge cannot tell a half-close
        # (`nc -N`) from a full close, and a client that went away (a cancelled
        # `kubectl logs -f`) must not keep its backend stream alive. Like nginx with
        # proxy_ignore_client_abort off, in-flight work is cancelled (logged as 499).
        if self._body is not None and not self._body.at_eof:
            self._body.feed_error(ClientDisconnected("client closed mid-request"))
        return None  # let the transport close

    # -- llhttp callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        self._header_count = 0
        self._header_bytes = 0
        self._head_bytes = 0
        self._in_trailers = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.settings.max_uri_bytes:
            self._parse_error = UriTooLong(
                f"request target longer than {self.settings.max_uri_bytes} bytes"
            )
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_trailers:
            self._trailers.append((name.lower(), value))
            if len(self._trailers) > self.settings.max_header_count:
                self._parse_error = HeaderTooLarge("too many trailer fields")
                raise _StopParsing
            return
        self._header_count += 1
        if self._header_count > self.settings.max_header_count:
            self._parse_error = HeaderTooLarge(
                f"more than {self.settings.max_header_count} header fields"
            )
            raise _StopParsing
        # Exact size of the field block as sent ("name: value" CRLF): a head that arrives in
        # one segment completes before the streaming bound in data_received can look at it.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.settings.max_header_bytes:
            self._parse_error = HeaderTooLarge(
                f"request header block larger than {self.settings.max_header_bytes} bytes"
            )
            raise _StopParsing
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_clock = False
        self._in_trailers = True
        self._trailers = []
        try:
            ex = self._make_exchange()
        except KedgeError as exc:
            self._parse_error = exc
            raise _StopParsing from None
        if len(self._queue) + (self._active is not None) > self.settings.max_pipelined:
            # More requests would wait behind the one in flight than allowed. Refuse cleanly:
            # this one is dropped unanswered (RFC 9112 §9.3.2: clients retry unanswered
            # pipelined requests), everything queued is answered in order, then close. Its
            # body is never read, so it cannot hold the connection open either.
            self._last_call = True
            self._stop_reading = True
            self._body = None
            raise _StopParsing
        self._requests += 1
        if self._requests >= self.settings.max_keepalive_requests:
            self._last_call = True
            self._stop_reading = True
        self._queue.append(ex)
        if self._body is None:
            self.deadline = 0.0
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    def on_body(self, data: bytes) -> None:
        body = self._body
        if body is None:
            return
        self._body_seen += len(data)
        if self._body_limit and self._body_seen > self._body_limit:
            self._parse_error = BodyTooLarge(f"request body larger than {self._body_limit} bytes")
            raise _StopParsing
        body.feed(data)
        self._set_deadline(self.settings.request_body_idle_timeout)

    def on_message_complete(self) -> None:
        self._in_trailers = False
        body = self._body
        if body is not None:
            body.feed_eof(self._trailers or None)
            self._body = None
            self.deadline = 0.0

    # -- request validation -------------------------------------------------------
    def _make_exchange(self) -> Exchange:
        p = self._parser
        valid = validate_request(
            version=p.get_http_version(),
            method=p.get_method().decode("ascii"),
            target=self._url,
            headers=self._headers,
            scheme=self.settings.scheme,
            max_body=self.settings.max_request_body_bytes,
        )
        body: BodyStream | None = None
        if valid.has_body:
            body = BodyStream(self._pause_for_body, self._resume_for_body)
            self._body = body
            self._body_limit = self.settings.max_request_body_bytes
            self._body_seen = 0
            if valid.expect_continue:
                # Like nginx, the edge answers 100 Continue itself when the forwarder first
                # wants the body (it has an upstream connection by then) and does not
                # forward Expect, so a backend never waits for a 100 of its own.
                body.on_first_read = self._send_continue
        request_id = valid.request_id
        return Exchange(
            valid.head,
            body,
            self,
            listener=self.settings.listener,
            client_ip=self.client_ip,
            client_port=self.client_port,
            request_id=request_id if request_id is not None else self._request_ids.next(),
            upgrade=valid.upgrade,
            keep_alive=valid.keep_alive,
            client_scheme=self.settings.scheme,
            tls=self.tls,
        )

    def _send_continue(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(_CONTINUE)

    def _pause_for_body(self) -> None:
        self._pause_reading("body")

    def _resume_for_body(self) -> None:
        self._resume_reading("body")

    def _pause_reading(self, why: str) -> None:
        if not self._reading_paused_by and self.transport is not None:
            self.transport.pause_reading()
        self._reading_paused_by.add(why)

    def _resume_reading(self, why: str) -> None:
        self._reading_paused_by.discard(why)
        if not self._reading_paused_by and self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def _after_upgrade(self, rest: bytes) -> None:
        """llhttp stops after an upgrade request's head; decide what the next bytes are."""
        ex = self._queue[-1] if self._queue else None
        if ex is not None and (ex.upgrade is not None or ex.head.method == "CONNECT"):
            # A WebSocket handshake or a CONNECT: nothing more is read until the edge
            # answers. On a 101 (or a CONNECT's 2xx) these bytes open the tunnel, never
            # parsed as HTTP; otherwise the connection closes.
            self._tunnel_prefix = rest
            self._stop_reading = True
            self._last_call = True
            self._pause_reading("upgrade")
            return
        # An ignored upgrade (e.g. h2c) without a body: carry on parsing HTTP/1.1.
        self._parser = httptools.HttpRequestParser(self)
        if rest:
            self.data_received(rest)

    # -- errors and deadlines -------------------------------------------------------------
    def _set_deadline(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds if seconds > 0 else 0.0

    def on_deadline(self) -> None:
        if self._closed:
            return
        if self._active is None and not self._queue and not self._in_head and self._body is None:
            self._close()  # idle keep-alive connection (RFC 9112 §9.8)
            return
        if self._body is not None:
            self._fail(RequestTimeout("request body not received in time"))
            return
        if self._in_head:
            self._fail(RequestTimeout("request headers not received in time"))

    def _fail(self, error: KedgeError) -> None:
        """A parse-level error: answered in order after queued exchanges, then close."""
        self._stop_reading = True
        self._last_call = True
        self._in_head = False
        failed: Exchange | None = None
        owned = False  # the error belongs to the exchange being handled, which answers it
        if self._body is not None:
            self._body.feed_error(error)
            # A body that broke before its exchange even started (e.g. a bad chunk in the
            # same segment as the head): drop the exchange, so not even its head is sent
            # to a backend; it is answered in its turn with this error instead.
            if self._queue and self._queue[-1].body is self._body:
                failed = self._queue.pop()
            else:
                owned = True
            self._body = None
        if self._active is None and not self._queue:
            self._write_error(error, failed)
            self._close()
        elif self._deferred_error is None and not owned:
            self._deferred_error = error

    def _write_error(self, error: KedgeError, ex: Exchange | None) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        request_id = ex.request_id if ex else self._request_ids.next()
        head, body = error_response(
            error, request_id, close=True, origin=self.settings.error_origin
        )
        t.write(self._serialize_head(head) + body)
        if self._on_error is not None:
            self._on_error(error, self, request_id)

    def _close(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    # -- exchange loop --------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while self._queue and not self._closed:
                ex = self._queue.popleft()
                self._active = ex
                self._pending = None
                self._chunked_out = False
                self._close_delimited = False
                await self._handler(ex)
                self._active = None
                if self._tunnel is not None:
                    return  # the connection is a raw tunnel now (after a 101)
                if (
                    not ex.finished
                    or self._close_delimited
                    or not ex.keep_alive
                    or (ex.body is not None and not ex.body.at_eof)
                ):
                    # Framing of whatever follows is unknown (unfinished response, or a
                    # request body the backend did not read): the connection cannot be reused.
                    self._close()
                    return
            if self._closed:
                return
            if self._deferred_error is not None:
                self._write_error(self._deferred_error, None)
                self._close()
            elif self._last_call:
                self._close()
            else:
                self._set_deadline(self.settings.keepalive_idle_timeout)
        except asyncio.CancelledError:
            if not self._closed:
                raise
        finally:
            self._task = None
            self._active = None

    def begin_drain(self) -> None:
        """Stop reusing this connection: idle ones close now, busy ones after their response."""
        self._last_call = True
        self._stop_reading = True
        if self._active is None and not self._queue and self._body is None:
            self._close()

    @property
    def is_idle(self) -> bool:
        return self._active is None and not self._queue

    # -- ResponseChannel ------------------------------------------------------------
    def _serialize_head(self, head: ResponseHead) -> bytes:
        return _status_line(head.status, head.reason) + field_lines(head.headers) + b"\r\n"

    def _is_last_response(self, ex: Exchange) -> bool:
        # A deferred error is answered after the queue, so it, not `ex`, is the last one.
        return not ex.keep_alive or (
            self._last_call and not self._queue and self._deferred_error is None
        )

    def send_head(
        self, ex: Exchange, head: ResponseHead, content_length: int | None, has_body: bool
    ) -> None:
        headers = head.headers
        close = self._is_last_response(ex)
        # A 2xx to CONNECT starts the tunnel: no framing fields (RFC 9110 §9.3.6), and no
        # `Connection: close`, which a client could read as the tunnel's refusal.
        tunnel = head.status == 101 or (ex.head.method == "CONNECT" and 200 <= head.status < 300)
        if not tunnel:
            if has_body and content_length is None:
                if ex.head.version == "1.1":
                    headers.append((b"transfer-encoding", b"chunked"))
                    self._chunked_out = True
                else:
                    # An HTTP/1.0 client cannot read chunked: the body ends with the
                    # connection (RFC 9112 §6.3 rule 8).
                    self._close_delimited = True
                    close = True
            if close:
                ex.keep_alive = False
                headers.append((b"connection", b"close"))
            elif ex.head.version == "1.0":
                headers.append((b"connection", b"keep-alive"))
        self._pending = self._serialize_head(head)

    def send_interim(self, ex: Exchange, head: ResponseHead) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(self._serialize_head(head))

    async def send_body(self, ex: Exchange, data: bytes) -> None:
        t = self.transport
        if t is None or self._closed:
            raise ClientDisconnected("client closed the connection")
        if self._chunked_out and data:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self._pending is not None:
            data = self._pending + data
            self._pending = None
        if data:
            t.write(data)
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            await waiter
            if self._closed:
                raise ClientDisconnected("client closed the connection")

    async def send_last(self, ex: Exchange, data: bytes, trailers: Headers | None) -> None:
        if data:
            await self.send_body(ex, data)
        self.end(ex, trailers)

    def end(self, ex: Exchange, trailers: Headers | None) -> None:
        t = self.transport
        if t is None or self._closed:
            return
        out = self._pending or b""
        self._pending = None
        if self._chunked_out:
            out += last_chunk(trailers)
        if out:
            t.write(out)

    def abort(self, ex: Exchange, error: KedgeError | None) -> None:
        # HTTP/1.1 can only signal truncation by closing without the final chunk or before
        # Content-Length bytes (RFC 9112 §6.3, §8).
        self._pending = None
        ex.keep_alive = False
        t = self.transport
        if t is not None:
            t.abort()

    def send_error_response(self, ex: Exchange, error: KedgeError) -> None:
        """Answer `ex` with an edge error; the error boundary calls this, once."""
        close = error.close_connection or self._is_last_response(ex)
        if close:
            ex.keep_alive = False
        head, body = error_response(
            error, ex.request_id, close=close, origin=self.settings.error_origin
        )
        ex.status = head.status
        ex.head_sent = True
        ex.finished = True
        ex.bytes_out += len(body)
        self._pending = None
        self._chunked_out = False
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(self._serialize_head(head) + body)

    def start_tunnel(self, ex: Exchange, peer: TunnelEnd) -> TunnelEnd:
        t = self.transport
        assert t is not None
        if self._pending:
            t.write(self._pending)
            self._pending = None
        self._tunnel = peer
        self.deadline = 0.0
        if self._tunnel_prefix:
            peer.tunnel_write(self._tunnel_prefix)
            self._tunnel_prefix = b""
        self._reading_paused_by.clear()
        t.resume_reading()
        return _Tunnel(self, peer)


def _llhttp_reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:120]
