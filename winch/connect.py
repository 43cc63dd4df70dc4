"""Answering a CONNECT: through the mapped edge (TLS inside), served by winch (plain HTTP or
h2c inside), or, for an unmapped name with `unmapped: direct`, straight to it.

See winch.tunnel for how the two kinds of tunnel are told apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import KedgeError
from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import ResponseHead
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.raw_tunnel import RawTunnel
from kedge.dialer.credentials import BearerToken, ClientCertificate
from kedge.dialer.mapping import Mapped
from winch.edges import EdgeConnections
from winch.forward import EdgeForwarder
from winch.tunnel import ServedTunnel, TunnelSniffer, VirtualTransport, open_edge_tunnel

__all__ = ["ConnectTunnels"]

log = logging.getLogger("winch")

# Serves a plaintext tunnel: given its transport and the CONNECT's (host, port), it
# attaches a server protocol to the transport (winch.app builds the HTTP/1.1 one).
ServeTunnel = Callable[[VirtualTransport, str, int], None]

_ESTABLISHED = b"Connection Established"


class ConnectTunnels:
    def __init__(
        self,
        forwarder: EdgeForwarder,
        edges: EdgeConnections,
        sweeper: DeadlineSweeper,
        serve: ServeTunnel,
        *,
        connect_timeout: float,
    ) -> None:
        self._forwarder = forwarder
        self._edges = edges
        self._sweeper = sweeper
        self._serve = serve
        self._connect_timeout = connect_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def _established(self, ex: Exchange) -> None:
        ex.respond(ResponseHead(200, [], _ESTABLISHED), None, has_body=False)

    async def mapped(self, ex: Exchange, mapped: Mapped) -> None:
        ex.route = mapped.route.name
        ex.backend = mapped.edge.key
        host, port = ex.head.host, ex.head.port
        self._established(ex)

        def on_tls(sniffer: TunnelSniffer) -> None:
            task = asyncio.get_running_loop().create_task(
                self._through_edge(sniffer, mapped, ex.request_id)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def on_plain(sniffer: TunnelSniffer) -> None:
            assert sniffer.client is not None
            transport = VirtualTransport(
                sniffer.client, {"peername": (ex.client_ip, ex.client_port)}
            )
            self._serve(transport, host, port)
            sniffer.connect(ServedTunnel(transport))

        sniffer = TunnelSniffer(on_tls, on_plain)
        sniffer.attach_client(ex.start_tunnel(sniffer))
        ex.finished = True

    async def _through_edge(self, sniffer: TunnelSniffer, mapped: Mapped, rid: bytes) -> None:
        client = sniffer.client
        assert client is not None
        route = mapped.route
        try:
            proxy = await self._forwarder.credential(route.proxy_auth)
            dialer = self._edges.dialer(
                mapped.edge,
                proxy if isinstance(proxy, ClientCertificate) else None,
                alpn=("http/1.1",),
            )
            raw, early = await open_edge_tunnel(
                dialer,
                mapped.authority,
                proxy.header_value() if isinstance(proxy, BearerToken) else None,
                request_id=rid,
                sweeper=self._sweeper,
            )
        except KedgeError as exc:
            log.warning("%s CONNECT %s: %s", rid.decode("latin-1"), mapped.authority, exc.reason)
            client.tunnel_close()
            return
        raw.attach(client)
        if early:
            client.tunnel_write(early)
        sniffer.connect(raw)

    async def direct(self, ex: Exchange) -> None:
        """`unmapped: direct`: a plain TCP tunnel to the name, no credentials anywhere."""
        h = ex.head
        dialer = EndpointDialer(h.host, h.port, h.authority, self._connect_timeout)
        _, raw = await dialer.open(lambda: RawTunnel(sweeper=self._sweeper))
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
