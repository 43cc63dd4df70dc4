"""Exchange: one request and its response, independent of the protocol that carries them.

A server codec creates an Exchange per request and hands it to the pipeline. The pipeline
reads `head` and `body` and answers through `respond`/`send_body`/`end`, which delegate to
the codec's `ResponseChannel`. Log fields (route, backend, endpoint, error_kind) are filled
in by the layers as the request travels.
"""

from __future__ import annotations

import time
from typing import Protocol

from kedge.core.errors import KedgeError
from kedge.core.http.body import BodyStream
from kedge.core.http.messages import Headers, RequestHead, ResponseHead
from kedge.core.net.tls import TlsPeer

__all__ = ["Exchange", "ResponseChannel", "TunnelEnd"]


class TunnelEnd(Protocol):
    """One side of a raw byte tunnel (after a 101 Switching Protocols or a CONNECT's 200)."""

    def tunnel_write(self, data: bytes) -> None: ...
    def tunnel_close(self) -> None: ...
    def tunnel_pause(self) -> None: ...
    def tunnel_resume(self) -> None: ...


class ResponseChannel(Protocol):
    """What a server codec provides to answer one exchange."""

    def send_head(
        self, ex: Exchange, head: ResponseHead, content_length: int | None, has_body: bool
    ) -> None: ...
    def send_interim(self, ex: Exchange, head: ResponseHead) -> None: ...
    async def send_body(self, ex: Exchange, data: bytes) -> None: ...
    def end(self, ex: Exchange, trailers: Headers | None) -> None: ...
    async def send_last(self, ex: Exchange, data: bytes, trailers: Headers | None) -> None: ...
    def abort(self, ex: Exchange, error: KedgeError | None) -> None: ...
    def start_tunnel(self, ex: Exchange, peer: TunnelEnd) -> TunnelEnd: ...
    def send_error_response(self, ex: Exchange, error: KedgeError) -> None: ...


class Exchange:
    __slots__ = (
        "backend",
        "body",
        "bytes_in",
        "bytes_out",
        "channel",
        "client_ip",
        "client_port",
        "client_scheme",
        "edge_headers",
        "endpoint",
        "error_kind",
        "finished",
        "grpc",
        "head",
        "head_at",
        "head_sent",
        "keep_alive",
        "listener",
        "principal",
        "request_id",
        "route",
        "started",
        "status",
        "tls",
        "upgrade",
    )

    def __init__(
        self,
        head: RequestHead,
        body: BodyStream | None,
        channel: ResponseChannel,
        *,
        listener: str,
        client_ip: str,
        client_port: int,
        request_id: bytes,
        upgrade: bytes | None = None,
        keep_alive: bool = True,
        client_scheme: str = "http",
        tls: TlsPeer | None = None,
    ) -> None:
        self.head = head
        self.body = body  # None: the request has no body
        self.channel = channel
        self.listener = listener
        self.client_ip = client_ip
        self.client_port = client_port
        # How the client reached the edge ("http"/"https"): what X-Forwarded-Proto says,
        # whatever scheme an absolute-form target names.
        self.client_scheme = client_scheme
        self.tls = tls  # SNI and client certificate of a TLS connection; None: plaintext
        self.request_id = request_id
        self.upgrade = upgrade  # b"websocket" for an upgrade the edge may pass through
        self.grpc = False  # a gRPC call (HTTP/2 only): errors are rendered as gRPC statuses
        self.keep_alive = keep_alive  # what the client asked for (Connection, version)
        self.started = time.monotonic()
        self.status = 0
        self.bytes_out = 0
        self.bytes_in = 0  # bytes from the client that are not a body (a CONNECT tunnel's)
        self.head_sent = False
        self.head_at = 0.0  # time.monotonic() when the response head went out
        self.finished = False
        self.route = ""
        self.backend = ""
        self.endpoint = ""
        self.error_kind: str | None = None
        self.principal = ""  # who the auth layer found (for the access log); "" = nobody
        # Fields the edge adds to the upstream request after the client's headers were
        # rewritten (the auth layer's identity header), so no client copy can survive.
        self.edge_headers: Headers | None = None

    def respond(
        self, head: ResponseHead, content_length: int | None, has_body: bool = True
    ) -> None:
        """Send the response head. `content_length` None with a body means unknown length."""
        self.status = head.status
        self.head_sent = True
        self.head_at = time.monotonic()
        self.channel.send_head(self, head, content_length, has_body)

    def send_interim(self, head: ResponseHead) -> None:
        self.channel.send_interim(self, head)

    async def send_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        await self.channel.send_body(self, data)

    async def send_last(self, data: bytes, trailers: Headers | None = None) -> None:
        """The rest of the body and the end of the response at once (`end` included)."""
        self.bytes_out += len(data)
        self.finished = True
        await self.channel.send_last(self, data, trailers)

    def end(self, trailers: Headers | None = None) -> None:
        self.finished = True
        self.channel.end(self, trailers)

    def abort(self, error: KedgeError | None = None) -> None:
        """End a response whose head is out, after `error` (None: the client is gone).

        HTTP/1.1 closes the connection, HTTP/2 resets the stream; a gRPC call gets the
        error as trailers instead, which its client reads as the call's status."""
        self.finished = True
        self.channel.abort(self, error)

    def start_tunnel(self, peer: TunnelEnd) -> TunnelEnd:
        """Switch the client connection to a raw tunnel with `peer` (after a 101)."""
        return self.channel.start_tunnel(self, peer)

    def send_error(self, error: KedgeError) -> None:
        """Answer with an edge-made error (only the error boundary calls this)."""
        self.error_kind = error.kind
        self.channel.send_error_response(self, error)
