"""Forwarding a mapped request to its edge, with the route's credentials attached.

The mapper picks the edge; the route's `proxy_auth` source becomes the edge's credential
(`Proxy-Authorization: Bearer`, or the client certificate of the TLS connection when the
source yields one), and `backend_auth` the service's (`Authorization: Bearer`). The
request then travels as a stream on a pooled HTTP/2 connection to the edge, whatever the
client spoke, and the answer streams back (gRPC trailers included). An edge that answers
401 or 407 (or gRPC UNAUTHENTICATED) makes winch drop the cached credentials, so the next
request fetches new ones.

Names no route maps are refused (`unmapped: refuse`), or, with `unmapped: direct`, sent
straight to the name with no credentials at all (kedge.dialer never attaches a credential
to a name it did not map: hardening X5).
"""

from __future__ import annotations

from kedge.core.errors import CredentialUnavailable, UpstreamReset
from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import Headers, ResponseHead, header_value
from kedge.core.net.h2_forward import exchange_h2
from kedge.dialer.auth_sources import AuthSources
from kedge.dialer.config import MapRoute
from kedge.dialer.credentials import BearerToken, ClientCertificate, Credential
from kedge.dialer.mapping import Mapped
from winch.edges import EdgeConnections
from winch.request_fields import Injected, edge_request_fields
from winch.upgrade import forward_upgrade, upgrade_request_head

__all__ = ["EdgeForwarder"]


class EdgeForwarder:
    def __init__(
        self,
        sources: AuthSources,
        edges: EdgeConnections,
        *,
        debug_tag: str | None,
        response_header_timeout: float,
    ) -> None:
        self._sources = sources
        self._edges = edges
        self._debug_tag = debug_tag
        self._timeout = response_header_timeout

    async def credential(self, name: str | None) -> Credential | None:
        """The named source's current credential (None: the route names no source)."""
        if name is None:
            return None
        return await self._sources.get(name).credential()

    async def forward(self, ex: Exchange, mapped: Mapped) -> None:
        route = mapped.route
        ex.route = route.name
        ex.backend = mapped.edge.key
        proxy = await self.credential(route.proxy_auth)
        backend = await self.credential(route.backend_auth)
        if isinstance(backend, ClientCertificate):
            # The edge terminates TLS: a certificate cannot reach the service through it.
            raise CredentialUnavailable(
                f"auth source {route.backend_auth!r} gives a client certificate, which cannot "
                "be passed through the edge; use it as proxy_auth, or a token as backend_auth"
            )
        injected = Injected(
            proxy_authorization=proxy.header_value() if isinstance(proxy, BearerToken) else None,
            authorization=backend.header_value() if isinstance(backend, BearerToken) else None,
            debug_tag=self._debug_tag,
        )
        client_cert = proxy if isinstance(proxy, ClientCertificate) else None
        if ex.upgrade is not None:
            await self._upgrade(ex, mapped, injected, client_cert)
            return
        pool = self._edges.pool(mapped.edge, client_cert)
        fields = edge_request_fields(
            ex.head, grpc=ex.grpc, request_id=ex.request_id, injected=injected
        )
        opened = pool.opened_total
        try:
            head, trailers = await exchange_h2(ex, pool, fields, self._timeout, 0)
        except UpstreamReset as exc:
            new_connection = pool.opened_total != opened
            if new_connection and client_cert is None and mapped.edge.tls.cert_file is None:
                # TLS 1.3: an edge that requires a client certificate refuses it only after
                # our side of the handshake, so all winch sees is the new connection reset.
                raise UpstreamReset(
                    f"{exc.reason}: the edge reset a new connection at once; if it requires "
                    "client certificates, set edge_tls cert_file/key_file, or use a "
                    "certificate auth source as proxy_auth"
                ) from None
            raise
        if ex.status in (401, 407) or (ex.grpc and _grpc_unauthenticated(head, trailers)):
            self._refused(route)

    async def _upgrade(
        self,
        ex: Exchange,
        mapped: Mapped,
        injected: Injected,
        client_cert: ClientCertificate | None,
    ) -> None:
        """A WebSocket upgrade: its own HTTP/1.1 connection to the edge (winch.upgrade)."""
        upgrade = ex.upgrade
        assert upgrade is not None
        fields = edge_request_fields(
            ex.head, grpc=False, request_id=ex.request_id, injected=injected
        )
        dialer = self._edges.dialer(mapped.edge, client_cert, alpn=("http/1.1",))
        request = upgrade_request_head(fields, upgrade)
        await forward_upgrade(ex, dialer, request, self._edges.sweeper, self._timeout)
        if ex.status in (401, 407):
            self._refused(mapped.route)

    def _refused(self, route: MapRoute) -> None:
        """The edge or the service refused the credentials: fetch new ones next time."""
        for name in (route.proxy_auth, route.backend_auth):
            if name is not None:
                self._sources.get(name).invalidate()


def _grpc_unauthenticated(head: ResponseHead, trailers: Headers | None) -> bool:
    """gRPC status 16 in the trailers, or in a trailers-only response's head."""
    fields = trailers if trailers is not None else head.headers
    return header_value(fields, b"grpc-status") == b"16"
