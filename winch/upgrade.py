"""WebSocket upgrades through winch (RFC 6455; kubectl exec, attach and port-forward, web UIs).

HTTP/2 has no upgrades (RFC 9113 §8.6), so an upgrade request cannot ride winch's pooled
HTTP/2 connection: it gets an HTTP/1.1 connection of its own to the edge (TLS, ALPN
`http/1.1`, the same CA, name and client certificate), with the same headers and
credentials as any request. The edge passes the upgrade to the service; on its `101`
winch answers the client `101` and splices the two connections (kedge.core.net.raw_tunnel).
Any other answer is relayed as an ordinary response and the edge connection is closed.

Clients usually reach winch for this through a CONNECT (Go's and Python's WebSocket
clients tunnel through proxies), which winch serves itself when the tunnel carries plain
HTTP: the upgrade request inside then comes here like any other.
"""

from __future__ import annotations

import asyncio

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import forward_response_headers
from kedge.core.http.messages import Headers, ResponseHead, header_value
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.raw_tunnel import RawTunnel

__all__ = ["forward_upgrade", "upgrade_request_head"]

_MAX_HEAD = 65536
_MAX_REFUSAL_BODY = 65536


def upgrade_request_head(fields: Headers, upgrade: bytes) -> bytes:
    """The HTTP/1.1 request for the edge from winch's HTTP/2-style header block (the same
    filtering and credentials): pseudo-headers become the request line and Host."""
    pseudo = {name: value for name, value in fields if name[:1] == b":"}
    lines = [
        pseudo[b":method"] + b" " + pseudo[b":path"] + b" HTTP/1.1",
        b"host: " + pseudo[b":authority"],
        b"connection: upgrade",
        b"upgrade: " + upgrade,
    ]
    lines += [name + b": " + value for name, value in fields if name[:1] != b":" and name != b"te"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Handshake(asyncio.Protocol):
    """Sends the request and collects the edge's response head (and a refusal's body)."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.changed = asyncio.Event()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.changed.set()
        if len(self.buffer) > _MAX_HEAD + _MAX_REFUSAL_BODY and self.transport is not None:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.changed.set()

    async def wait_for(self, size: int) -> bool:
        """Until `size` bytes arrived; False if the connection ended first."""
        while len(self.buffer) < size and not self.lost:
            self.changed.clear()
            await self.changed.wait()
        return len(self.buffer) >= size

    async def head(self) -> tuple[int, bytes, Headers, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if self.lost or len(self.buffer) > _MAX_HEAD:
                raise UpstreamProtocolError("the edge did not answer the upgrade request")
            self.changed.clear()
            await self.changed.wait()
        head, rest = self.buffer[:end], self.buffer[end + 4 :]
        status_line, *lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            raise UpstreamProtocolError("the edge answered the upgrade with garbage") from None
        headers: Headers = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise UpstreamProtocolError("the edge answered the upgrade with garbage")
            headers.append((name.strip().lower(), value.strip()))
        return status, parts[2] if len(parts) > 2 else b"", headers, rest


async def forward_upgrade(
    ex: Exchange,
    dialer: EndpointDialer,
    request: bytes,
    sweeper: DeadlineSweeper,
    response_header_timeout: float,
) -> None:
    upgrade = ex.upgrade
    assert upgrade is not None
    transport, handshake = await dialer.open(lambda: _Handshake(request))
    try:
        async with asyncio.timeout(response_header_timeout or None):
            status, reason, headers, rest = await handshake.head()
    except TimeoutError:
        transport.close()
        raise UpstreamTimeout(f"the edge {dialer.key} did not answer the upgrade") from None
    except BaseException:
        transport.close()
        raise
    answered = header_value(headers, b"upgrade")
    if status == 101 and answered is not None and answered.strip().lower() == upgrade:
        ex.respond(
            ResponseHead(
                101,
                forward_response_headers(headers, request_id=ex.request_id, upgrade=upgrade),
                reason,
            ),
            None,
            has_body=False,
        )
        tunnel = RawTunnel(sweeper=sweeper)
        transport.set_protocol(tunnel)
        tunnel.connection_made(transport)
        client = ex.start_tunnel(tunnel)
        if rest:
            client.tunnel_write(rest)  # the service spoke first, right after its 101
        tunnel.attach(client)
        ex.finished = True
        return
    try:
        if status == 101:
            raise UpstreamProtocolError("the edge switched to a protocol that was not asked for")
        await _relay_refusal(ex, handshake, status, reason, headers)
    finally:
        transport.close()


async def _relay_refusal(
    ex: Exchange, handshake: _Handshake, status: int, reason: bytes, headers: Headers
) -> None:
    """An ordinary answer to the upgrade (the edge's 401 or 404, the service's 400): passed
    on as it is, its body read whole when it says how long it is (bounded)."""
    length = header_value(headers, b"content-length")
    size = int(length) if length is not None and length.isdigit() else 0
    if size > _MAX_REFUSAL_BODY:
        raise UpstreamConnectError(f"the edge refused the upgrade with status {status}")
    head_end = handshake.buffer.find(b"\r\n\r\n") + 4
    if not await handshake.wait_for(head_end + size):
        raise UpstreamProtocolError("the edge closed before its whole answer to the upgrade")
    body = handshake.buffer[head_end : head_end + size]
    response = ResponseHead(
        status, forward_response_headers(headers, request_id=ex.request_id), reason
    )
    ex.respond(response, len(body), has_body=bool(body))
    if body:
        await ex.send_last(body)
    else:
        ex.end()
