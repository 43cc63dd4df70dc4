"""WebSocket upgrades through winch (RFC 6455; kubectl exec, attach and port-forward, web UIs).

HTTP/2 has no upgrades (RFC 9113 §8.6), so an upgrade request cannot ride winch's pooled
HTTP/2 connection: it gets an HTTP/1.1 connection of its own to the edge (TLS, ALPN
`http/1.1`, the same CA, name and client certificate), with the same headers and
credentials as any request. The edge passes the upgrade to the service; on its `101`
winch answers the client `101` and splices the two connections.
Any other answer is relayed as an ordinary response and the edge connection is closed.
The HTTP/1.1 side is kedge's own client codec (kedge.core.codec.client_h1), the one the
edge's forwarder uses for the same job.

Clients usually reach winch for this through a CONNECT (Go's and Python's WebSocket
clients tunnel through proxies), which winch serves itself when the tunnel carries plain
HTTP: the upgrade request inside then comes here like any other.
"""

from __future__ import annotations

from kedge.core.codec.client_h1 import H1ClientConnection
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import UpstreamProtocolError
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import forward_response_headers
from kedge.core.http.messages import Headers, ResponseHead, header_value
from kedge.core.net.dial import EndpointDialer

__all__ = ["forward_upgrade", "upgrade_request_head"]


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


async def forward_upgrade(
    ex: Exchange,
    dialer: EndpointDialer,
    request: bytes,
    sweeper: DeadlineSweeper,
    response_header_timeout: float,
) -> None:
    """Send the upgrade on a fresh HTTP/1.1 connection (kedge's own client codec, as the
    edge's forwarder does) and either splice after a 101 or pass the answer on."""
    upgrade = ex.upgrade
    assert upgrade is not None
    _, conn = await dialer.open(lambda: H1ClientConnection(dialer.key, sweeper))
    try:
        conn.start(request, is_head_request=False, response_timeout=response_header_timeout)
        conn.expect_head_within(response_header_timeout)
        start = await conn.response()
        head = start.head
        if head.status == 101:
            answered = header_value(head.headers, b"upgrade")
            if answered is None or answered.strip().lower() != upgrade:
                raise UpstreamProtocolError("the edge switched to a protocol not asked for")
            headers = forward_response_headers(
                head.headers, request_id=ex.request_id, upgrade=upgrade
            )
            ex.respond(ResponseHead(101, headers, head.reason), None, has_body=False)
            conn.start_tunnel(ex.start_tunnel(conn.tunnel_end()))
            ex.finished = True
            return
        # An ordinary answer (the edge's 401 or 404, the service's 400): passed on as it is.
        headers = forward_response_headers(head.headers, request_id=ex.request_id)
        ex.respond(
            ResponseHead(head.status, headers, head.reason), start.content_length, start.has_body
        )
        body = start.body
        if start.has_body and body is not None:
            while data := await body.read():
                await ex.send_body(data)
        ex.end(body.trailers if body is not None else None)
    except BaseException:
        conn.abort()
        raise
    conn.close()
