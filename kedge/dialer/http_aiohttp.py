"""aiohttp through kedge: a ClientSession whose requests to mapped names go to their edge.

`aiohttp_session(dialer)` returns a plain `aiohttp.ClientSession` with one client middleware
(the innermost, so the caller's own middlewares see the service URL). For each request it
maps the URL's `host:port`; a mapped request is sent to the edge over TLS (verified with
the route's CA against the edge's TLS name), with `Host` set to the service's authority
(the edge routes on it) and the route's credentials added, replacing the caller's
`Authorization` (hardening X5). The response keeps the service URL (aiohttp builds it from
the request's original URL), so cookies and relative redirects belong to the service.
An unmapped name raises NotMapped (`unmapped: refuse`) or goes straight to the name,
untouched (`unmapped: direct`). Both URL schemes map the same way: `http://svc:8080` and
`https://svc:8443` name the service; TLS is to the edge, which terminates it.

Connection pooling is aiohttp's own: its pool key holds the edge's host and port, the TLS
context (one per edge and identity, cached by the Dialer) and the TLS server name, so
every request to an edge shares warm connections and two identities never share one.
aiohttp speaks HTTP/1.1 only, so the edge context offers ALPN `http/1.1`.

Redirects: the middleware runs again for every hop, so each hop is mapped anew and carries
only its own route's credentials. One more rule closes the confused-deputy case (an
outside page redirecting a caller, 307 and body included, to an internal service with
credentials attached): a redirect to a mapped name with another authority than the hop
that answered is refused with RedirectRefused; the caller can follow it itself with
`allow_redirects=False`. A 401 or 407 answer makes the route's sources fetch new
credentials next time.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import aiohttp
from yarl import URL

from kedge.dialer.dialer import HTTP1_ALPN, Dialer
from kedge.dialer.errors import RedirectRefused

__all__ = ["KedgeMiddleware", "aiohttp_session", "redirect_guard"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class KedgeMiddleware:
    """The aiohttp client middleware that sends mapped requests to their edge."""

    __slots__ = ("_dialer",)

    def __init__(self, dialer: Dialer) -> None:
        self._dialer = dialer

    async def __call__(
        self, req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        # The original URL, not req.url: an outer middleware may send the same request
        # object again (a retry), after this one rewrote req.url to the edge.
        url = req.original_url.with_fragment(None)
        host, port = url.raw_host, url.port
        if host is None or port is None:
            return await handler(req)
        plan = await self._dialer.plan(host, port, alpn=HTTP1_ALPN)
        if plan is None:  # unmapped, `unmapped: direct`: the name itself, no credentials
            return await handler(req)
        edge = plan.edge
        req.url = URL.build(
            scheme=edge.scheme,
            host=edge.host,
            port=edge.port,
            path=url.raw_path,
            query_string=url.raw_query_string,
            encoded=True,
        )
        req.headers["Host"] = plan.authority
        for name, value in plan.headers:
            req.headers[name] = value  # replaces every value the caller set
        if plan.ssl_context is not None:
            # ClientRequest has no public setter for its TLS context: the connector reads
            # it (and keys its pool on it) from this attribute.
            req._ssl = plan.ssl_context
            req.server_hostname = plan.tls_server_name
        response = await handler(req)
        if response.status in (401, 407):
            self._dialer.invalidate(plan)
        return response


def redirect_guard(dialer: Dialer) -> aiohttp.TraceConfig:
    """A trace config that refuses redirects into a mapped name with another authority
    (see the module docstring); aiohttp awaits it before following the redirect."""

    async def on_redirect(
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        location = params.response.headers.get("Location") or params.response.headers.get("URI")
        if location is None:
            return
        source = params.url
        try:
            target = source.join(URL(location))
        except ValueError:
            return  # aiohttp refuses it itself, with InvalidUrlRedirectClientError
        if target.raw_host is None or target.port is None:
            return
        if (target.raw_host.lower(), target.port) == (
            (source.raw_host or "").lower(),
            source.port,
        ):
            return
        if dialer.map(target.raw_host, target.port) is None:
            return  # unmapped, `direct`: the hop goes out with no credentials
        params.response.close()
        raise RedirectRefused(
            f"{source.raw_host}:{source.port} redirects to {target.raw_host}:{target.port}, "
            "a mapped name: the dialer attaches credentials only to names the caller asks "
            "for; pass allow_redirects=False and follow the redirect yourself"
        )

    config = aiohttp.TraceConfig()
    config.on_request_redirect.append(on_redirect)
    config.freeze()
    return config


def aiohttp_session(dialer: Dialer, **session_kwargs: Any) -> aiohttp.ClientSession:
    """An `aiohttp.ClientSession` (same keyword arguments) that dials through kedge.

    Call it inside a running event loop and close the session as usual; the Dialer
    outlives it and is closed by its owner.
    """
    middlewares: Sequence[aiohttp.ClientMiddlewareType] = session_kwargs.pop("middlewares", ())
    traces: Sequence[aiohttp.TraceConfig] = session_kwargs.pop("trace_configs", None) or ()
    return aiohttp.ClientSession(
        middlewares=(*middlewares, KedgeMiddleware(dialer)),
        trace_configs=[*traces, redirect_guard(dialer)],
        **session_kwargs,
    )
