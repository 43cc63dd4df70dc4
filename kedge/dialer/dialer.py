"""The Dialer: the library's entry point; plans how a client reaches `host:port` via its edge.

A plan is what every client helper (aiohttp, httpx, grpc.aio) needs for one request: the
edge to connect to, the authority the edge routes on (`Host` / `:authority` = the
service's `host:port`), the headers carrying the route's credentials, and the TLS
context for the edge. The rules are winch's (winch/forward.py):

- the route's `proxy_auth` source goes to the edge, as `Proxy-Authorization: Bearer` or,
  when the source yields a certificate, as the client certificate of the TLS connection;
- its `backend_auth` source goes to the service as `Authorization: Bearer`, replacing the
  caller's; a certificate cannot pass through the edge (the edge terminates TLS);
- credentials only ever go to `https://` edges (the config refuses anything else; the
  plan checks again, so a hand-built config cannot send a token in the clear);
- a name no route maps raises NotMapped with `unmapped: refuse`, or plans to nothing
  (None) with `unmapped: direct`: the caller connects straight to it, with no credentials.

TLS contexts are cached per (edge TLS settings, client certificate identity, ALPN): a new
context per request would reload the CA bundle every time and defeat connection pooling
(aiohttp and httpcore key their pools on the context object).
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kedge.core.errors import CredentialUnavailable
from kedge.dialer.auth_sources import AuthSources
from kedge.dialer.config import DialerConfig, MapRoute, Unmapped
from kedge.dialer.config_parser import load_dialer_config
from kedge.dialer.credentials import BearerToken, ClientCertificate, Clock, Credential
from kedge.dialer.edge_relay import EdgeRelay
from kedge.dialer.edge_tls import EdgeSslContexts
from kedge.dialer.errors import NotMapped
from kedge.dialer.mapping import EdgeTarget, Mapped, Mapper

__all__ = [
    "H2_ALPN",
    "HTTP1_ALPN",
    "DialPlan",
    "Dialer",
    "Headers",
    "credential_headers",
]

Headers = tuple[tuple[str, str], ...]

# What a client offers the edge in ALPN (RFC 7301): aiohttp speaks only HTTP/1.1, httpx with
# http2=True either. The edge's TLS listener offers both.
HTTP1_ALPN: tuple[str, ...] = ("http/1.1",)
H2_ALPN: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True)
class DialPlan:
    """How to send one request to a mapped name: connect to `edge`, route on `authority`."""

    route: MapRoute
    edge: EdgeTarget
    authority: str  # "svc.ns.cluster-a.internal:8080": the edge's Host / :authority
    headers: Headers = field(default=(), repr=False)  # lower-case names, credentials only
    client_cert: ClientCertificate | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def tls_server_name(self) -> str | None:
        """The name the edge's certificate is verified against (and sent in SNI)."""
        if self.edge.scheme != "https":
            return None
        return self.edge.tls.server_name or self.edge.host

    @property
    def edge_origin(self) -> str:
        """`https://edge.cluster-a.test:8443`: where the request really goes."""
        return self.edge.key


def credential_headers(
    route: MapRoute,
    edge_scheme: str,
    proxy: Credential | None,
    backend: Credential | None,
) -> tuple[Headers, ClientCertificate | None]:
    """The headers and the client certificate a route's credentials become (pure).

    Raises CredentialUnavailable for a combination that cannot be sent safely.
    """
    if edge_scheme != "https" and (proxy is not None or backend is not None):
        # Hardening X5: a bearer token over plain HTTP is readable by anyone on the path.
        raise CredentialUnavailable(
            f"route {route.name!r} sends credentials to an {edge_scheme}:// edge; "
            "credentials are only sent over TLS: use an https:// edge URL"
        )
    if isinstance(backend, ClientCertificate):
        raise CredentialUnavailable(
            f"auth source {route.backend_auth!r} gives a client certificate, which cannot be "
            "passed through the edge; use it as proxy_auth, or a token as backend_auth"
        )
    headers: list[tuple[str, str]] = []
    if isinstance(proxy, BearerToken):
        headers.append(("proxy-authorization", proxy.header_value()))
    if isinstance(backend, BearerToken):
        headers.append(("authorization", backend.header_value()))
    client_cert = proxy if isinstance(proxy, ClientCertificate) else None
    return tuple(headers), client_cert


class Dialer:
    """Mapping, auth sources and edge TLS contexts of one config; `aclose()` when done."""

    __slots__ = ("_config", "_contexts", "_mapper", "_relay_dir", "_relays", "_sources")

    def __init__(
        self,
        config: DialerConfig,
        *,
        open_browser: Callable[[str], None] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._config = config
        self._mapper = Mapper(config)
        # Lazy: no source does I/O before a route first needs it (kEdge issue #100).
        self._sources = AuthSources(
            config.auth_sources,
            refresh_margin=config.refresh_margin,
            open_browser=open_browser,
            clock=clock,
        )
        self._contexts = EdgeSslContexts()
        self._relays: dict[tuple[EdgeTarget, str | None], EdgeRelay] = {}
        self._relay_dir: str | None = None

    @classmethod
    def from_file(cls, path: str, *, open_browser: Callable[[str], None] | None = None) -> Dialer:
        """A Dialer for a winch/dialer YAML file (ConfigError if it does not load)."""
        return cls(load_dialer_config(path), open_browser=open_browser)

    @property
    def config(self) -> DialerConfig:
        return self._config

    def map(self, host: str, port: int, *, grpc: bool = False) -> Mapped | None:
        """The route for `host:port`; None to go direct; NotMapped with `unmapped: refuse`."""
        mapped = self._mapper.map(host, port, grpc=grpc)
        if mapped is None and self._config.unmapped is Unmapped.REFUSE:
            raise NotMapped(
                f"{_authority(host, port)} is not mapped by any route of {self._config.source} "
                "and `unmapped: refuse` is set; add a route for it or set `unmapped: direct`"
            )
        return mapped

    async def plan(
        self, host: str, port: int, *, grpc: bool = False, alpn: tuple[str, ...] = H2_ALPN
    ) -> DialPlan | None:
        """The plan for `host:port`, credentials fetched; None for an unmapped name to reach
        directly. Raises NotMapped, or CredentialUnavailable when a source fails."""
        mapped = self.map(host, port, grpc=grpc)
        if mapped is None:
            return None
        return await self.plan_mapped(mapped, alpn=alpn)

    async def plan_mapped(self, mapped: Mapped, *, alpn: tuple[str, ...] = H2_ALPN) -> DialPlan:
        headers, client_cert = await self.credentials(mapped.route, mapped.edge)
        return DialPlan(
            route=mapped.route,
            edge=mapped.edge,
            authority=mapped.authority,
            headers=headers,
            client_cert=client_cert,
            ssl_context=self.ssl_context(mapped.edge, client_cert, alpn),
        )

    async def credentials(
        self, route: MapRoute, edge: EdgeTarget
    ) -> tuple[Headers, ClientCertificate | None]:
        """The route's current credentials as headers and a client certificate."""
        proxy = await self._credential(route.proxy_auth)
        backend = await self._credential(route.backend_auth)
        return credential_headers(route, edge.scheme, proxy, backend)

    def ssl_context(
        self,
        edge: EdgeTarget,
        client_cert: ClientCertificate | None,
        alpn: tuple[str, ...] = H2_ALPN,
    ) -> ssl.SSLContext | None:
        """The cached TLS context for an edge (None for an `http://` edge)."""
        if edge.scheme != "https":
            return None
        return self._contexts.get(edge.tls, client_cert, alpn)

    def relay(self, mapped: Mapped) -> EdgeRelay:
        """The private Unix-socket relay to this route's edge, started on first use (gRPC
        channels dial it; see kedge.dialer.edge_relay). Call it on the running loop."""
        edge, route = mapped.edge, mapped.route
        key = (edge, route.proxy_auth)
        relay = self._relays.get(key)
        if relay is not None:
            return relay
        if self._relay_dir is None:
            self._relay_dir = tempfile.mkdtemp(prefix="kedge-dialer-")  # mode 0700

        async def context_for() -> ssl.SSLContext:
            # The proxy source's certificate, if it gives one, as of this connection.
            proxy = await self._credential(route.proxy_auth)
            cert = proxy if isinstance(proxy, ClientCertificate) else None
            ctx = self.ssl_context(edge, cert, H2_ALPN)
            assert ctx is not None  # https edges only
            return ctx

        path = os.path.join(self._relay_dir, f"edge-{len(self._relays)}.sock")
        relay = EdgeRelay(path, edge, edge.tls.server_name or edge.host, context_for)
        relay.start()
        self._relays[key] = relay
        return relay

    def invalidate(self, plan: DialPlan | MapRoute) -> None:
        """The edge or the service refused the plan's credentials (401/407): the route's
        sources fetch new ones next time."""
        route = plan.route if isinstance(plan, DialPlan) else plan
        for name in (route.proxy_auth, route.backend_auth):
            if name is not None:
                self._sources.get(name).invalidate()

    async def aclose(self) -> None:
        for relay in self._relays.values():
            await relay.aclose()
        self._relays.clear()
        if self._relay_dir is not None:
            shutil.rmtree(self._relay_dir, ignore_errors=True)
            self._relay_dir = None
        self._contexts.clear()
        await self._sources.aclose()

    async def _credential(self, name: str | None) -> Credential | None:
        if name is None:
            return None
        return await self._sources.get(name).credential()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
