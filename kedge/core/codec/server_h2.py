"""HTTP/2 server connection: python-hyper h2 driven from asyncio, one exchange per stream.

h2 is a state machine without I/O (DESIGN.md §4): this driver feeds it the bytes read, acts
on its events and writes what it queues. Around it, the edge adds what h2 lacks
(hardening.md F3-F5): flood accounting over the raw frames (`h2_frames`, `h2_guard`), a
header-block completion timeout, request validation (`h2_request`), graceful GOAWAY, and
flow control tied to how fast the backend takes a request body: received DATA is
acknowledged (WINDOW_UPDATE) only while the stream's BodyStream is under its high-water
mark, so a slow backend slows its client and nothing is buffered without bound.

The same connection serves plain HTTP/2 and gRPC (gRPC is HTTP/2 with trailers); only
error rendering differs (see `H2Stream.send_error_response`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from kedge.core.codec.h2_frames import FrameScanner, count_rst_stream
from kedge.core.codec.h2_guard import FloodGuard, FloodLimits
from kedge.core.codec.h2_io import H2Output, new_h2_connection
from kedge.core.codec.h2_request import validate_h2_request
from kedge.core.codec.h2_stream import H2Stream
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import ClientDisconnected, KedgeError
from kedge.core.http.body import BodyStream
from kedge.core.http.exchange import Exchange
from kedge.core.http.grpc_detect import is_grpc_request
from kedge.core.http.headers import RequestIdGenerator
from kedge.core.net.tls import TlsPeer, tls_peer

__all__ = ["PREFACE", "H2ServerConnection", "H2ServerSettings"]

Handler = Callable[[Exchange], Awaitable[None]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
_MAX_STREAM_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class H2ServerSettings:
    listener: str
    scheme: str  # "http" or "https": the listener's, for X-Forwarded-Proto and default ports
    max_concurrent_streams: int = 100
    initial_stream_window: int = 65536
    initial_connection_window: int = 1024 * 1024
    max_header_list_size: int = 65536
    max_frame_size: int = 16384
    max_request_body_bytes: int = 0  # 0 = no limit here (routes may set their own)
    header_block_timeout: float = 10.0  # a HEADERS without END_HEADERS must complete
    idle_timeout: float = 300.0  # no open stream for this long: GOAWAY and close
    settings_timeout: float = 10.0  # our SETTINGS must be acknowledged within this
    floods: FloodLimits = field(default_factory=FloodLimits)
    error_origin: bytes = b"kedge"  # X-<origin>-Error on the errors this connection renders


class H2ServerConnection(H2Output, asyncio.Protocol):
    """One client connection speaking HTTP/2 (after ALPN `h2` or the h2c preface)."""

    def __init__(
        self,
        settings: H2ServerSettings,
        handler: Handler,
        request_ids: RequestIdGenerator,
        sweeper: DeadlineSweeper,
        on_open: Callable[[H2ServerConnection], None] | None = None,
        on_close: Callable[[H2ServerConnection], None] | None = None,
        on_flood: Callable[[str], None] | None = None,
        on_error: Callable[[KedgeError, H2ServerConnection, bytes], None] | None = None,
    ) -> None:
        self.settings = settings
        self._handler = handler
        self._request_ids = request_ids
        self._sweeper = sweeper
        self._on_open = on_open
        self._on_close = on_close
        self._on_flood = on_flood
        self._on_error = on_error
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop
        self.client_ip = ""
        self.client_port = 0
        self.tls: TlsPeer | None = None
        self.h2 = new_h2_connection(client_side=False)
        self.streams: dict[int, H2Stream] = {}
        self._scanner = FrameScanner(skip_preface=True)
        self._guard = FloodGuard(settings.floods)
        self.deadline = 0.0
        self._header_deadline = 0.0
        self._settings_deadline = 0.0
        self._idle_deadline = 0.0
        self._goaway_sent = False
        self._last_stream_id = _MAX_STREAM_ID  # streams above this are refused (after GOAWAY)
        self._init_output()

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.adopt(cast(asyncio.Transport, transport), b"")

    def adopt(self, transport: asyncio.Transport, data: bytes) -> None:
        """Start on `transport`, with `data` already read from it (an h2c preface, from the
        HTTP/1.1 connection that sniffed it)."""
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_ip, self.client_port = str(peer[0]), int(peer[1])
        self.tls = tls_peer(transport)
        s = self.settings
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: s.initial_stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: s.max_frame_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        if s.initial_connection_window > 65535:
            # The connection window starts at 65535 whatever SETTINGS say (RFC 9113 §6.9.2).
            self.h2.increment_flow_control_window(s.initial_connection_window - 65535)
        now = time.monotonic()
        self._settings_deadline = now + s.settings_timeout
        self._idle_deadline = now + s.idle_timeout
        self._update_deadline()
        self._sweeper.add(self)
        self.flush()
        if self._on_open is not None:
            self._on_open(self)
        if data:
            self.data_received(data)

    def reject(self) -> None:
        self.closed = True
        self._sweeper.discard(self)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._sweeper.discard(self)
        for stream in list(self.streams.values()):
            stream.on_reset(ClientDisconnected("client closed the connection"))
        self.streams.clear()
        self._wake_writers()
        if self._on_close is not None:
            self._on_close(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        counts = self._scanner.feed(data)
        if self._flush_pending:
            # Write our own queued frames first, so `out` below holds only what this
            # read provoked (an early-response RST must not count as a client's doing).
            self.flush()
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 has queued a GOAWAY with the right code (PROTOCOL_ERROR, FRAME_SIZE_ERROR,
            # ENHANCE_YOUR_CALM for an HPACK bomb...): send it and close.
            self._guard_tripped("protocol-error", None)
            return
        # What h2 queued in reply to this read alone: RST_STREAMs in it are resets the
        # client provoked (MadeYouReset, CVE-2025-8671), counted with its own.
        out = self.h2.data_to_send()
        verdict = self._guard.observe(
            counts,
            time.monotonic(),
            server_resets=count_rst_stream(out) if out else 0,
            data_sent=self.data_sent,
        )
        self.data_sent = 0
        if out and self.transport is not None:
            self.transport.write(out)
        if verdict is not None:
            self._guard_tripped(verdict.kind, verdict.error_code, verdict.reason)
            return
        refused = self._guard.refused_in_read(counts)
        new_streams = 0
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.on_data(event.data, event.flow_controlled_length)
                else:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_ended and stream is not None:
                    stream.on_end(None)
            elif isinstance(event, h2.events.RequestReceived):
                new_streams += 1
                self._on_request(
                    event, refuse=refused > 0 and new_streams > counts.new_streams - refused
                )
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.on_end(None)
            elif isinstance(event, h2.events.TrailersReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.on_end(event.headers)
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.on_reset(ClientDisconnected("client reset the stream"))
            elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                for stream in self.streams.values():
                    stream.wake_sender()
            elif isinstance(event, h2.events.SettingsAcknowledged):
                self._settings_deadline = 0.0
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close()
                return
        self._header_deadline = (
            (self._header_deadline or time.monotonic() + self.settings.header_block_timeout)
            if self._scanner.header_block_open
            else 0.0
        )
        self._update_deadline()
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close: a half-closed HTTP/2 connection cannot carry frames either way

    # -- streams --------------------------------------------------------------------
    def _on_request(self, event: h2.events.RequestReceived, *, refuse: bool) -> None:
        sid = event.stream_id
        if refuse or sid > self._last_stream_id:
            # Over the per-read budget (nginx refuses streams the same way), or after our
            # GOAWAY: REFUSED_STREAM tells the client it is safe to retry (RFC 9113 §8.7).
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        s = self.settings
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        self._idle_deadline = 0.0
        fields = event.headers
        body: BodyStream | None = None
        try:
            valid = validate_h2_request(
                fields,
                scheme=s.scheme,
                end_stream=event.stream_ended is not None,
                max_body=s.max_request_body_bytes,
            )
        except KedgeError as error:
            # Never becomes an exchange (nothing to route): answered and logged here, as
            # the HTTP/1.1 driver does for a head it cannot parse.
            request_id = self._request_ids.next()
            stream.refuse(error, request_id, grpc=is_grpc_request(fields))
            if self._on_error is not None:
                self._on_error(error, self, request_id)
            return
        if event.stream_ended is None:
            body = BodyStream(stream.pause_body, stream.resume_body)
        ex = Exchange(
            valid.head,
            body,
            stream,
            listener=s.listener,
            client_ip=self.client_ip,
            client_port=self.client_port,
            request_id=valid.request_id or self._request_ids.next(),
            client_scheme=s.scheme,
            tls=self.tls,
        )
        ex.grpc = valid.grpc
        stream.start(ex, body, self._handler(ex))

    def stream_done(self, stream: H2Stream) -> None:
        self.streams.pop(stream.sid, None)
        if not self.streams:
            if self._goaway_sent:
                self._close()
                return
            self._idle_deadline = time.monotonic() + self.settings.idle_timeout
            self._update_deadline()

    # -- shutdown and abuse ------------------------------------------------------------
    def begin_drain(self) -> None:
        """Graceful GOAWAY: streams already opened finish; later ones are refused.

        h2 moves to a closed state on `close_connection()` and would then refuse to send on
        open streams, so the GOAWAY frame is written directly (RFC 9113 §6.8)."""
        if self._goaway_sent or self.closed:
            return
        self._goaway_sent = True
        self._last_stream_id = self.h2.highest_inbound_stream_id
        self.flush()
        frame = GoAwayFrame(stream_id=0, last_stream_id=self._last_stream_id, error_code=0)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame.serialize())
        if not self.streams:
            self._close()

    @property
    def is_idle(self) -> bool:
        return not self.streams

    def _guard_tripped(self, kind: str, error_code: int | None, reason: str = "") -> None:
        """End the connection for abuse (or a protocol error h2 already answered)."""
        if self._on_flood is not None:
            self._on_flood(kind)
        if error_code is not None:
            self.flush()
            frame = GoAwayFrame(
                stream_id=0,
                last_stream_id=self.h2.highest_inbound_stream_id,
                error_code=error_code,
                additional_data=reason.encode("ascii", "replace")[:128],
            )
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame.serialize())
        else:
            self.flush()
        self._close()

    def _update_deadline(self) -> None:
        pending = [
            d for d in (self._header_deadline, self._settings_deadline, self._idle_deadline) if d
        ]
        self.deadline = min(pending) if pending else 0.0

    def on_deadline(self) -> None:
        now = time.monotonic()
        if self._header_deadline and self._header_deadline <= now:
            self._guard_tripped(
                "header-timeout", h2.errors.ErrorCodes.PROTOCOL_ERROR, "header block incomplete"
            )
        elif self._settings_deadline and self._settings_deadline <= now:
            self._guard_tripped(
                "settings-timeout", h2.errors.ErrorCodes.SETTINGS_TIMEOUT, "SETTINGS not acked"
            )
        elif self._idle_deadline and self._idle_deadline <= now and not self.streams:
            self.begin_drain()
        else:
            self._update_deadline()

    def _close(self) -> None:
        if not self.closed:
            self.flush()  # frames queued for the next iteration go first
        self.closed = True
        self._sweeper.discard(self)
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()
