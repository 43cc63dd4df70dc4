"""RemoteClusters: a backend's other-cluster edges as endpoints, with their own TLS and token.

Each remote cluster contributes its edge's addresses as endpoints labelled
`cluster: <name>` and weighted by the cluster's weight, so locality puts them after the
local tiers by priority. They differ from local endpoints in how they are reached: their
own TLS settings and protocol (the pool for such an endpoint is built from them), and the
remote edge's credential, added to each request sent there as `Proxy-Authorization`
(the original Host or :authority is kept, so the remote edge routes the request itself).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from kedge.core.http.messages import Headers
from kedge.core.net.tls import client_context
from kedge.core.net.token_file import TokenFile
from kedge.edge.config import BackendTlsConfig, RemoteClusterConfig, UpstreamProtocol
from kedge.edge.discovery.model import Endpoint

__all__ = ["RemoteCluster", "RemoteClusters"]


def _context(tls: BackendTlsConfig | None, protocol: UpstreamProtocol) -> ssl.SSLContext | None:
    if tls is None:
        return None
    return client_context(
        ca_file=tls.ca_file,
        insecure_skip_verify=tls.insecure_skip_verify,
        cert_file=tls.cert_file,
        key_file=tls.key_file,
        alpn=("h2",) if protocol is UpstreamProtocol.H2 else ("http/1.1",),
    )


@dataclass(frozen=True, slots=True)
class RemoteCluster:
    config: RemoteClusterConfig
    ssl_context: ssl.SSLContext | None
    token: TokenFile | None

    def server_name(self, endpoint: Endpoint) -> str:
        tls = self.config.tls
        return tls.server_name if tls and tls.server_name else endpoint.address.host

    def request_headers(self) -> Headers | None:
        """The remote edge's credential for one request (the file is re-read on change)."""
        if self.token is None:
            return None
        return [(b"proxy-authorization", b"Bearer " + self.token.value().encode("ascii"))]


class RemoteClusters:
    def __init__(self, configs: tuple[RemoteClusterConfig, ...]) -> None:
        self.endpoints: tuple[Endpoint, ...] = ()
        self._by_key: dict[str, RemoteCluster] = {}
        self._priority: dict[str, int] = {}
        endpoints = []
        for c in configs:
            cluster = RemoteCluster(
                c,
                _context(c.tls, c.protocol),
                TokenFile(c.token_file) if c.token_file is not None else None,
            )
            self._priority[c.name] = c.priority
            for address in c.endpoints:
                e = Endpoint(address, (("cluster", c.name),), weight=c.weight)
                endpoints.append(e)
                self._by_key[e.key] = cluster
        self.endpoints = tuple(endpoints)

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def get(self, key: str) -> RemoteCluster | None:
        return self._by_key.get(key)

    def priority(self, cluster: str) -> int | None:
        """Lower first; None for a cluster no remote entry names."""
        return self._priority.get(cluster)

    @property
    def by_name(self) -> Mapping[str, RemoteClusterConfig]:
        return {r.config.name: r.config for r in self._by_key.values()}
