"""CONNECT through winch: what the client sends after winch's 200 decides the path.

Clients use CONNECT for two different things, and winch tells them apart by the first
byte the client sends into the tunnel:

- **TLS** (a ClientHello starts with 0x16, RFC 8446 §5.1): `curl https://...` with
  `https_proxy`, a browser, kubectl to an `https://` server. The TLS session is the
  client's own, with the service, end to end: winch cannot and does not look inside.
  Winch opens a CONNECT to the mapped edge (TLS to the edge, the route's proxy credential
  in `Proxy-Authorization`, or its client certificate) and splices the bytes; the edge
  checks its route, auth and adhoc rules and opens a raw TCP tunnel to the service. The
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

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import UpstreamConnectError
from kedge.core.http.exchange import TunnelEnd
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.raw_tunnel import HalfClosable, RawTunnel

__all__ = [
    "ConnectHandshake",
    "ServedTunnel",
    "TunnelSniffer",
    "VirtualTransport",
    "open_edge_tunnel",
]

log = logging.getLogger("winch")

_TLS_HANDSHAKE = 0x16
_MAX_RESPONSE_HEAD = 16384


class ConnectHandshake(asyncio.Protocol):
    """The HTTP/1.1 CONNECT exchange with an edge, before the bytes become a tunnel."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._buffer = b""
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[int, bytes, bytes]] = (
            asyncio.get_running_loop().create_future()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self._buffer += data  # the edge spoke first after its 200: keep it for the client
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_RESPONSE_HEAD:
                self.done.set_exception(
                    UpstreamConnectError("the edge's CONNECT answer is too big")
                )
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = rest
        status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        try:
            status = int(status_line[1])
        except (IndexError, ValueError):
            self.done.set_exception(UpstreamConnectError("the edge answered CONNECT with garbage"))
            return
        if 200 <= status < 300 and self.transport is not None:
            self.transport.pause_reading()  # the tunnel starts reading once it is spliced
        self.done.set_result((status, head, rest))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(UpstreamConnectError("the edge closed the CONNECT"))

    def leftover(self) -> bytes:
        data, self._buffer = self._buffer, b""
        return data


def _edge_reason(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-kedge-error":
            return value.strip().decode("latin-1")
    return head.split(b"\r\n", 1)[0].decode("latin-1")


async def open_edge_tunnel(
    dialer: EndpointDialer,
    authority: str,
    proxy_authorization: str | None,
    *,
    request_id: bytes,
    sweeper: DeadlineSweeper | None = None,
) -> tuple[RawTunnel, bytes]:
    """CONNECT `authority` through the edge; a spliceable tunnel end and any bytes the
    service already sent. Raises UpstreamConnectError with the edge's reason on refusal."""
    lines = [
        f"CONNECT {authority} HTTP/1.1",
        f"Host: {authority}",
        f"X-Request-Id: {request_id.decode('latin-1')}",
    ]
    if proxy_authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy_authorization}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    transport, handshake = await dialer.open(lambda: ConnectHandshake(request))
    try:
        async with asyncio.timeout(dialer.connect_timeout):
            status, head, _ = await handshake.done
    except TimeoutError:
        transport.close()
        raise UpstreamConnectError(f"the edge {dialer.key} did not answer CONNECT") from None
    except BaseException:
        transport.close()
        raise
    if not 200 <= status < 300:
        transport.close()
        raise UpstreamConnectError(
            f"the edge {dialer.key} refused CONNECT {authority}: {_edge_reason(head)}"
        )
    tunnel = RawTunnel(sweeper=sweeper)
    transport.set_protocol(tunnel)
    tunnel.connection_made(transport)
    return tunnel, handshake.leftover()


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
