"""httpx through kedge: `httpx.AsyncClient(transport=KedgeTransport(dialer))`.

httpx is an optional dependency (`kedge[httpx]`): only this module imports it.

Each request's `host:port` is mapped. A mapped request is rewritten to the edge's URL, path
and query kept, with `Host` set to the service's authority: httpcore sends the Host header
as HTTP/2's `:authority` (and drops Host), so over h2 and HTTP/1.1 alike the edge routes on
the service's name. The route's credentials are added, replacing the caller's
`Authorization` (hardening X5). Requests then go through one pooled, multiplexed
`httpx.AsyncHTTPTransport(http2=True)` per edge and identity, whose TLS context is the
Dialer's (the route's CA; the edge's TLS name via httpcore's `sni_hostname` extension,
which httpcore also verifies the certificate against). An unmapped name raises NotMapped
(`unmapped: refuse`) or goes to the name itself through a plain transport, with nothing
added (`unmapped: direct`). The client keeps the original request, so `response.url` and
cookies belong to the service.

httpx follows no redirects unless asked (`follow_redirects=True`); when it does, each hop
comes through here again and carries only its own route's credentials, and a hop to a
mapped name with another authority than the previous hop raises RedirectRefused
(hardening X5: a redirect never decides where credentials go). httpx copies a request's
extensions into the redirect's request, which is how a hop knows the one before it.
"""

from __future__ import annotations

from typing import Any

import httpx

from kedge.dialer.dialer import H2_ALPN, Dialer, DialPlan
from kedge.dialer.errors import RedirectRefused
from kedge.dialer.mapping import EdgeTarget

__all__ = ["KedgeTransport"]

# Request extension holding the authority of the hop that sent this request (see above).
_HOP = "kedge_hop_authority"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class KedgeTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends mapped requests through their edge.

    `transport_kwargs` (limits, retries, local_address, ...) go to every
    `httpx.AsyncHTTPTransport` it makes, the direct one included; `verify` and `http2`
    are its own for edges.
    """

    def __init__(self, dialer: Dialer, **transport_kwargs: Any) -> None:
        for key in ("verify", "cert", "http2", "proxy", "uds"):
            if key in transport_kwargs:
                raise TypeError(f"KedgeTransport sets {key!r} itself for edge connections")
        self._dialer = dialer
        self._kwargs = transport_kwargs
        self._edges: dict[tuple[EdgeTarget, bytes], httpx.AsyncHTTPTransport] = {}
        self._direct: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 443)
        previous = request.extensions.get(_HOP)
        authority = f"{host.lower()}:{port}"
        plan = await self._dialer.plan(host, port, alpn=H2_ALPN)
        if plan is not None and previous is not None and previous != authority:
            raise RedirectRefused(
                f"{previous} redirects to {authority}, a mapped name: the dialer attaches "
                "credentials only to names the caller asks for; follow it yourself"
            )
        request.extensions[_HOP] = authority
        if plan is None:
            return await self._direct_transport().handle_async_request(request)
        response = await self._edge_transport(plan).handle_async_request(
            _edge_request(request, plan)
        )
        if response.status_code in (401, 407):
            self._dialer.invalidate(plan)
        return response

    async def aclose(self) -> None:
        transports = list(self._edges.values())
        if self._direct is not None:
            transports.append(self._direct)
        self._edges.clear()
        self._direct = None
        for transport in transports:
            await transport.aclose()

    def _edge_transport(self, plan: DialPlan) -> httpx.AsyncHTTPTransport:
        identity = plan.client_cert.cert_pem if plan.client_cert is not None else b""
        key = (plan.edge, identity)
        transport = self._edges.get(key)
        if transport is None:
            verify: Any = plan.ssl_context if plan.ssl_context is not None else True
            transport = httpx.AsyncHTTPTransport(verify=verify, http2=True, **self._kwargs)
            self._edges[key] = transport
        return transport

    def _direct_transport(self) -> httpx.AsyncHTTPTransport:
        if self._direct is None:
            self._direct = httpx.AsyncHTTPTransport(**self._kwargs)
        return self._direct


def _edge_request(request: httpx.Request, plan: DialPlan) -> httpx.Request:
    """The request as the edge gets it: edge URL, the service's Host, the credentials."""
    edge = plan.edge
    headers = request.headers.copy()
    headers["Host"] = plan.authority
    for name, value in plan.headers:
        headers[name] = value  # replaces every value the caller set
    extensions = {k: v for k, v in request.extensions.items() if k != _HOP}
    if plan.tls_server_name is not None:
        extensions["sni_hostname"] = plan.tls_server_name
    return httpx.Request(
        request.method,
        request.url.copy_with(scheme=edge.scheme, host=edge.host, port=edge.port),
        headers=headers,
        stream=request.stream,
        extensions=extensions,
    )
