"""CONNECT through winch: what the client sends after winch's 200 decides the path.

Clients use CONNECT for two different things, and winch tells them apart by the first
byte the client sends into the tunnel:

- **TLS** (a ClientHello starts with 0x16, RFC 8446 §5.1): `curl https://...` with
  `https_proxy`, a browser, kubectl to an `https://` server. The TLS session is the
  client's own, with the service, end to end: winch cannot and does not look inside.
  Winch opens a CONNECT stream (RFC 9113 §8.5) on its pooled HTTP/2 connection to the
  mapped edge (the route's proxy credential in `proxy-authorization`, or its client
  certificate on that connection) and splices the bytes; the edge checks its route, auth
  and adhoc rules and opens a raw TCP tunnel to the service. Tunnels share connections
  like requests do: no TLS handshake with the edge per tunnel. The
  route's `backend_auth` cannot be injected here (the request is encrypted for the
  service); it applies to plain HTTP and gRPC only.
- **Plain HTTP/1.1 or HTTP/2 (h2c)**: grpcio's `grpc.http_proxy`, or an HTTP client that
  tunnels everything. Winch serves the tunnel itself as a connection of its own: each
  request or call inside is mapped, gets both credentials, and goes to the edge over the
  shared HTTP/2 pool, like a request sent to winch directly. Requests inside must be for
  the authority the CONNECT named.

The 200 goes out before the client says which it is (it speaks only after it), so an
edge that refuses the tunnel shows as a closed connection; winch logs the edge's reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kedge.core.http.exchange import TunnelEnd
from kedge.core.net.raw_tunnel import HalfClosable

__all__ = ["ServedTunnel", "TunnelSniffer", "VirtualTransport"]

log = logging.getLogger("winch")

_TLS_HANDSHAKE = 0x16
_MAX_RESPONSE_HEAD = 16384


class VirtualTransport:
    """A transport over a tunnel: lets a server protocol (HTTP/1.1 or HTTP/2) serve the
    bytes of a CONNECT tunnel as if they came on a connection of their own."""

    def __init__(self, client: TunnelEnd, extra: dict[str, Any]) -> None:
        self._client = client
        self._extra = extra
        self._closing = False
        self.protocol: asyncio.Protocol | None = None

    # what the server codecs use of a transport
    def write(self, data: bytes) -> None:
        if not self._closing:
            self._client.tunnel_write(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._client.tunnel_close()
        protocol = self.protocol
        if protocol is not None:
            asyncio.get_running_loop().call_soon(protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def mark_closed(self) -> bool:
        """The client's side went away; True if this transport was still open."""
        was_open = not self._closing
        self._closing = True
        return was_open

    def pause_reading(self) -> None:
        self._client.tunnel_pause()

    def resume_reading(self) -> None:
        self._client.tunnel_resume()

    def can_write_eof(self) -> bool:
        return isinstance(self._client, HalfClosable)

    def write_eof(self) -> None:
        if isinstance(self._client, HalfClosable):
            self._client.tunnel_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self.protocol


class TunnelSniffer:
    """The client's tunnel bytes land here first; the first byte picks the path.

    Once the client's end is known (`attach_client`) and a byte arrived, `on_tls` or
    `on_plain` is called; either ends by calling `connect` with the TunnelEnd that takes
    the bytes from then on. Until then bytes (and a close or half-close) are kept."""

    def __init__(
        self,
        on_tls: Callable[[TunnelSniffer], None],
        on_plain: Callable[[TunnelSniffer], None],
    ) -> None:
        self._on_tls = on_tls
        self._on_plain = on_plain
        self._target: TunnelEnd | None = None
        self._decided = False
        self.client: TunnelEnd | None = None
        self.buffered = b""
        self.closed = False
        self.eof = False

    def attach_client(self, client: TunnelEnd) -> None:
        self.client = client
        self._decide()

    def connect(self, target: TunnelEnd) -> None:
        """The far end is ready: flush what the client sent meanwhile."""
        self._target = target
        if self.buffered:
            data, self.buffered = self.buffered, b""
            target.tunnel_write(data)
        if self.eof and isinstance(target, HalfClosable):
            target.tunnel_write_eof()
        if self.closed:
            target.tunnel_close()

    def _decide(self) -> None:
        if self._decided or self.client is None or not self.buffered:
            return
        self._decided = True
        if self.buffered[0] == _TLS_HANDSHAKE:
            self._on_tls(self)
        else:
            self._on_plain(self)

    def tunnel_write(self, data: bytes) -> None:
        if self._target is not None:
            self._target.tunnel_write(data)
            return
        self.buffered += data
        self._decide()

    def tunnel_close(self) -> None:
        self.closed = True
        if self._target is not None:
            self._target.tunnel_close()

    def tunnel_pause(self) -> None:
        if self._target is not None:
            self._target.tunnel_pause()

    def tunnel_resume(self) -> None:
        if self._target is not None:
            self._target.tunnel_resume()

    def tunnel_write_eof(self) -> None:
        self.eof = True
        if isinstance(self._target, HalfClosable):
            self._target.tunnel_write_eof()


class ServedTunnel:
    """The TunnelEnd of a tunnel winch serves itself: feeds a server protocol's events."""

    def __init__(self, transport: VirtualTransport) -> None:
        self._transport = transport

    def _protocol(self) -> asyncio.Protocol | None:
        return self._transport.protocol

    def tunnel_write(self, data: bytes) -> None:
        p = self._protocol()
        if p is not None and not self._transport.is_closing():
            p.data_received(data)

    def tunnel_close(self) -> None:
        if self._transport.mark_closed():
            p = self._protocol()
            if p is not None:
                p.connection_lost(None)

    def tunnel_pause(self) -> None:
        p = self._protocol()
        if p is not None:
            p.pause_writing()

    def tunnel_resume(self) -> None:
        p = self._protocol()
        if p is not None:
            p.resume_writing()

    def tunnel_write_eof(self) -> None:
        p = self._protocol()
        if p is not None:
            p.eof_received()
