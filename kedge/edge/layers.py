"""The request pipeline's layers; `app.py` composes them once.

Each layer is `async def __call__(exchange, next)` and either awaits `next` or raises a
typed error. Order, outermost first: Observe (access log and metrics, so it sees the final
status, including errors rendered below it) -> ErrorBoundary (the one place an error turns
into a response) -> Dispatch (route, then the route's auth policy, then forward; a CONNECT
goes to the tunnels instead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kedge.core.errors import ClientDisconnected, MethodNotAllowed, NoRoute
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import DEBUG_HEADER
from kedge.core.http.messages import header_value
from kedge.core.http.pipeline import ErrorBoundary, Handler, Layer, compose
from kedge.edge.config import BackendTimeouts, ProxyMode
from kedge.edge.discovery.adhoc import match_adhoc, resolve_adhoc
from kedge.edge.forwarding.connect_tunnel import ConnectTunnels
from kedge.edge.forwarding.forwarder import Forwarder
from kedge.edge.forwarding.pool import AdhocPools
from kedge.edge.observability.access_log import AccessLog
from kedge.edge.observability.edge_metrics import EdgeMetrics
from kedge.edge.routing.table import RouteRequest
from kedge.edge.state import EdgeState

__all__ = ["Dispatch", "ErrorBoundary", "Handler", "Layer", "Observe", "compose"]

log = logging.getLogger("kedge.edge")
debug_log = logging.getLogger("kedge.debug")


# Adhoc destinations have no backend config: they get the documented backend defaults.
_ADHOC_TIMEOUTS = BackendTimeouts()


class Observe:
    """One access-log line and the request metrics for every exchange, however it ended."""

    def __init__(self, access_log: AccessLog, metrics: EdgeMetrics) -> None:
        self._log = access_log
        self._metrics = metrics

    async def __call__(self, ex: Exchange, next: Handler) -> None:
        try:
            await next(ex)
        except asyncio.CancelledError:
            if not ex.finished:
                ex.error_kind = ClientDisconnected.kind
                if not ex.head_sent:
                    ex.status = ClientDisconnected.http_status
            raise
        finally:
            self._record(ex)

    def _record(self, ex: Exchange) -> None:
        duration = time.monotonic() - ex.started
        m = self._metrics
        status = ex.status
        m.requests.labels(ex.listener, ex.route, ex.backend, str(status)).inc()
        m.request_duration.labels(ex.route, ex.backend).observe(duration)
        bytes_in = ex.body.total if ex.body is not None else ex.bytes_in
        if bytes_in:
            m.bytes_in.inc(bytes_in)
        m.bytes_out.inc(ex.bytes_out)
        if ex.error_kind is not None:
            m.errors.labels(ex.error_kind).inc()
        h = ex.head
        self._log.record(
            request_id=ex.request_id.decode("latin-1"),
            client=f"{ex.client_ip}:{ex.client_port}",
            listener=ex.listener,
            method=h.method,
            authority=h.authority,
            path=h.path,
            status=status,
            bytes_in=bytes_in,
            bytes_out=ex.bytes_out,
            duration_ms=duration * 1000.0,
            route=ex.route or None,
            backend=ex.backend or None,
            endpoint=ex.endpoint or None,
            error_kind=ex.error_kind,
            principal=ex.principal or None,
        )
        tag = header_value(h.headers, DEBUG_HEADER)
        if tag is not None:
            # A client in debug mode (winch --debug): its requests are logged in full at
            # info level, whatever the edge's log level, so one user's trouble can be
            # followed without turning on debug logging for everyone.
            debug_log.info(
                "debug request %s from %s (%s): %s %s%s -> %d route=%s backend=%s "
                "endpoint=%s principal=%s error=%s %.1fms",
                ex.request_id.decode("latin-1"),
                f"{ex.client_ip}:{ex.client_port}",
                tag[:64].decode("latin-1"),
                h.method,
                h.authority,
                h.path,
                status,
                ex.route or "-",
                ex.backend or "-",
                ex.endpoint or "-",
                ex.principal or "-",
                ex.error_kind or "-",
                duration * 1000.0,
            )


class Dispatch:
    """The terminal handler: first-match routing (then adhoc rules), the route's auth
    policy (when the config has an auth layer), then forwarding."""

    def __init__(
        self,
        state: Callable[[], EdgeState],
        forwarder: Forwarder,
        adhoc_pools: AdhocPools,
        tunnels: ConnectTunnels | None = None,
    ) -> None:
        self._state = state
        self._forwarder = forwarder
        self._adhoc = adhoc_pools
        self._tunnels = tunnels

    async def __call__(self, ex: Exchange) -> None:
        state = self._state()  # one snapshot for the whole exchange, even across a reload
        h = ex.head
        if h.method == "CONNECT":  # only HTTP/1.1 lets one through (RFC 9110 §9.3.6)
            if self._tunnels is None:
                raise MethodNotAllowed("CONNECT is not supported by this edge")
            await self._tunnels.open(ex, state)
            return
        mode = ProxyMode.FORWARD if h.absolute_form else ProxyMode.REVERSE
        # ex.grpc: the HTTP/2 driver saw content-type application/grpc (not grpc-web); gRPC
        # is HTTP/2 only, so an HTTP/1.1 request never matches a gRPC-only route.
        route = state.table.match(RouteRequest(h.host, h.port, h.path, mode, h.headers, ex.grpc))
        if route is None:
            await self._adhoc_or_fail(ex, state)
            return
        ex.route = route.name
        if state.auth is not None:
            await state.auth.admit(ex, route.auth)
        backend = state.backends[route.backend]
        ex.backend = backend.name
        limit = (
            route.max_request_body_bytes
            if route.max_request_body_bytes is not None
            else state.config.limits.max_request_body_bytes
        )
        await self._forwarder.forward(ex, backend, limit)

    async def _adhoc_or_fail(self, ex: Exchange, state: EdgeState) -> None:
        h = ex.head
        decision = match_adhoc(state.config.adhoc, h.host, h.port if h.explicit_port else None)
        if decision is None:
            raise NoRoute(f"no route for {h.authority}{h.path}")
        ex.route = "adhoc"
        if state.auth is not None:
            await state.auth.admit(ex, None, adhoc=True)
        address = await resolve_adhoc(decision)
        ex.backend = "adhoc"
        ex.endpoint = str(address)
        pool = self._adhoc.pool(address, decision.rule)
        head_bytes, chunked = self._forwarder.request_head(ex)
        await self._forwarder.forward_to(
            ex,
            pool,
            head_bytes,
            chunked,
            _ADHOC_TIMEOUTS,
            state.config.limits.max_request_body_bytes,
        )
