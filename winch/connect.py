"""Answering a CONNECT: through the mapped edge (TLS inside), served by winch (plain HTTP or
h2c inside), or, for an unmapped name with `unmapped: direct`, straight to it.

See winch.tunnel for how the two kinds of tunnel are told apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kedge.core.codec.client_h2 import UpstreamStream
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import KedgeError, UpstreamConnectError, UpstreamTimeout
from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import Headers, ResponseHead, header_value
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.raw_tunnel import RawTunnel
from kedge.core.net.stream_splice import StreamSplice
from kedge.dialer.credentials import BearerToken, ClientCertificate
from kedge.dialer.mapping import Mapped
from winch.edges import EdgeConnections
from winch.forward import EdgeForwarder
from winch.tunnel import ServedTunnel, TunnelSniffer, VirtualTransport

__all__ = ["ConnectTunnels"]

log = logging.getLogger("winch")

# Serves a plaintext tunnel: given its transport and the CONNECT's (host, port), it
# attaches a server protocol to the transport (winch.app builds the HTTP/1.1 one).
ServeTunnel = Callable[[VirtualTransport, str, int], None]

_ESTABLISHED = b"Connection Established"


class ConnectTunnels:
    def __init__(
        self,
        forwarder: Callable[[], EdgeForwarder],
        edges: EdgeConnections,
        sweeper: DeadlineSweeper,
        serve: ServeTunnel,
        *,
        connect_timeout: float,
        on_tunnel: Callable[[str], None] | None = None,
    ) -> None:
        self._forwarder = forwarder
        self._edges = edges
        self._sweeper = sweeper
        self._serve = serve
        self._connect_timeout = connect_timeout
        self._on_tunnel = on_tunnel or (lambda _path: None)  # "edge", "served" or "direct"
        self._tasks: set[asyncio.Task[None]] = set()

    def _established(self, ex: Exchange) -> None:
        ex.respond(ResponseHead(200, [], _ESTABLISHED), None, has_body=False)

    async def mapped(self, ex: Exchange, mapped: Mapped) -> None:
        ex.route = mapped.route.name
        ex.backend = mapped.edge.key
        host, port = ex.head.host, ex.head.port
        self._established(ex)

        def on_tls(sniffer: TunnelSniffer) -> None:
            self._on_tunnel("edge")
            task = asyncio.get_running_loop().create_task(
                self._through_edge(sniffer, mapped, ex.request_id)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def on_plain(sniffer: TunnelSniffer) -> None:
            assert sniffer.client is not None
            self._on_tunnel("served")
            transport = VirtualTransport(
                sniffer.client, {"peername": (ex.client_ip, ex.client_port)}
            )
            self._serve(transport, host, port)
            sniffer.connect(ServedTunnel(transport))

        sniffer = TunnelSniffer(on_tls, on_plain)
        sniffer.attach_client(ex.start_tunnel(sniffer))
        ex.finished = True

    async def _through_edge(self, sniffer: TunnelSniffer, mapped: Mapped, rid: bytes) -> None:
        """A CONNECT stream (RFC 9113 §8.5) on the pooled HTTP/2 connection to the edge,
        spliced with the client: no new TLS connection per tunnel."""
        client = sniffer.client
        assert client is not None
        try:
            stream = await self._open_stream(mapped, rid)
        except KedgeError as exc:
            log.warning("%s CONNECT %s: %s", rid.decode("latin-1"), mapped.authority, exc.reason)
            client.tunnel_close()
            return
        splice = StreamSplice(stream.body.read, stream.send_data, stream.end, stream.cancel)
        splice.attach(client)
        sniffer.connect(splice)
        await splice.run()

    async def _open_stream(self, mapped: Mapped, rid: bytes) -> UpstreamStream:
        proxy = await self._forwarder().credential(mapped.route.proxy_auth)
        pool = self._edges.pool(
            mapped.edge, proxy if isinstance(proxy, ClientCertificate) else None
        )
        conn = await pool.acquire()
        fields: Headers = [
            (b":method", b"CONNECT"),
            (b":authority", mapped.authority.encode("ascii")),
            (b"x-request-id", rid),
        ]
        if isinstance(proxy, BearerToken):
            fields.append((b"proxy-authorization", proxy.header_value().encode("latin-1")))
        stream = conn.open_stream(fields, end_stream=False)
        try:
            async with asyncio.timeout(self._connect_timeout):
                head = await stream.head
        except TimeoutError:
            stream.cancel()
            raise UpstreamTimeout(f"the edge {pool.key} did not answer CONNECT") from None
        if head.status != 200:
            stream.cancel()
            reason = header_value(head.headers, b"x-kedge-error") or b""
            raise UpstreamConnectError(
                f"the edge {pool.key} refused CONNECT {mapped.authority}: "
                f"{head.status} {reason.decode('latin-1')}"
            )
        return stream

    async def direct(self, ex: Exchange) -> None:
        """`unmapped: direct`: a plain TCP tunnel to the name, no credentials anywhere."""
        h = ex.head
        dialer = EndpointDialer(h.host, h.port, h.authority, self._connect_timeout)
        _, raw = await dialer.open(lambda: RawTunnel(sweeper=self._sweeper))
        self._on_tunnel("direct")
        ex.route = "direct"
        ex.backend = h.authority
        self._established(ex)
        raw.attach(ex.start_tunnel(raw))
        ex.finished = True

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
