"""Winch's connections to edges: pooled, multiplexed HTTP/2, one pool per edge and identity.

kEdge's winch opened a new TLS connection for every gRPC call; here every request and
call to an edge shares warm connections (kedge.core.net.h2_pool), over TLS verified
against the configured CA with ALPN `h2`, or h2c for an `http://` edge (tests, a sidecar
on the same host). A route whose proxy credential is a client certificate gets a pool of
its own, so one identity's connection never carries another's requests.
"""

from __future__ import annotations

import ssl

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.h2_pool import H2EndpointPool
from kedge.core.net.pool_config import PoolConfig
from kedge.dialer.credentials import ClientCertificate
from kedge.dialer.edge_tls import EdgeSslContexts, cert_identity
from kedge.dialer.mapping import EdgeTarget

__all__ = ["EdgeConnections"]


class EdgeConnections:
    def __init__(
        self,
        sweeper: DeadlineSweeper,
        *,
        connect_timeout: float,
        pool: PoolConfig | None = None,
    ) -> None:
        self._sweeper = sweeper
        self._connect_timeout = connect_timeout
        self._pool_config = pool or PoolConfig(idle_timeout=120.0)
        self._pools: dict[tuple[EdgeTarget, bytes], H2EndpointPool] = {}
        # A WebSocket upgrade dials per request: its TLS context is built once, not each time.
        self._contexts = EdgeSslContexts()

    @property
    def sweeper(self) -> DeadlineSweeper:
        return self._sweeper

    def pool(self, edge: EdgeTarget, client_cert: ClientCertificate | None) -> H2EndpointPool:
        key = (edge, cert_identity(client_cert))
        pool = self._pools.get(key)
        if pool is None:
            pool = H2EndpointPool(self.dialer(edge, client_cert), self._pool_config, self._sweeper)
            self._pools[key] = pool
        return pool

    def dialer(
        self,
        edge: EdgeTarget,
        client_cert: ClientCertificate | None,
        alpn: tuple[str, ...] = ("h2",),
    ) -> EndpointDialer:
        ctx: ssl.SSLContext | None = None
        if edge.scheme == "https":
            ctx = self._contexts.get(edge.tls, client_cert, alpn)
        return EndpointDialer(
            edge.host,
            edge.port,
            edge.key,
            self._connect_timeout,
            ctx,
            (edge.tls.server_name or edge.host) if ctx is not None else None,
        )

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
