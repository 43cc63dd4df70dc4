"""CONNECT tunnels (RFC 9110 §9.3.6): route, admit, dial an endpoint, answer 200, splice.

A CONNECT goes where a `proxy_mode: connect` route sends it (matched on host and port
only; `any` routes never match, so no existing route becomes a tunnel), else to an adhoc
rule with `allow_connect`, whose SSRF checks apply as to any adhoc request: the name is
resolved once, the address checked, and that address dialled. Auth is the route's (or
the adhoc) policy, with the credential in Proxy-Authorization (407 without one).

The tunnel is raw TCP to the endpoint: the client does its own TLS with the service
through it, end to end, so the edge never sees plaintext and the backend's `tls` and
`protocol` settings do not apply. The backend's balancer picks the endpoint; a connect
failure tries another one (up to the backend's `retries.attempts`), since nothing was sent.
Once the 200 is out, bytes flow both ways through the codec's tunnel machinery (the one a
WebSocket upgrade uses, see kedge.core.net.raw_tunnel) until both sides have closed or
`limits.tunnel_idle_timeout` passes without a byte. The exchange lasts as long as the
tunnel, so its access-log line, written when it ends, has the duration and byte counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import Forbidden, NoEndpoints, NoRoute, UpstreamConnectError
from kedge.core.http.body import BodyStream
from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import ResponseHead
from kedge.core.net.dial import dial
from kedge.core.net.raw_tunnel import RawTunnel
from kedge.core.net.stream_splice import StreamSplice
from kedge.edge.balancing.outlier import Outcome
from kedge.edge.config import ProxyMode, RouteConfig
from kedge.edge.discovery.adhoc import Resolve, match_adhoc, resolve_adhoc, system_resolve
from kedge.edge.forwarding.backend import Backend
from kedge.edge.routing.table import RouteRequest, RouteTable
from kedge.edge.state import EdgeState

__all__ = ["ConnectTunnels", "connect_routes"]


def connect_routes(routes: tuple[RouteConfig, ...]) -> tuple[RouteConfig, ...]:
    """The routes a CONNECT may match, in file order: those with `proxy_mode: connect`."""
    return tuple(r for r in routes if r.match.proxy_mode is ProxyMode.CONNECT)


class ConnectTunnels:
    """Opens CONNECT tunnels for Dispatch; one per edge, built in app.py."""

    def __init__(
        self,
        sweeper: DeadlineSweeper,
        *,
        on_connect_failure: Callable[[str], None] | None = None,
        resolve: Resolve = system_resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sweeper = sweeper
        self._on_connect_failure = on_connect_failure
        self._resolve = resolve
        self._clock = clock
        # The CONNECT routes compiled on their own (with the route table they came from):
        # only these may match, whatever `any` routes precede them.
        self._compiled_from: RouteTable | None = None
        self._table = RouteTable.compile(())

    def route(self, state: EdgeState, host: str, port: int) -> RouteConfig | None:
        """The first `proxy_mode: connect` route for `host:port`, or None."""
        if self._compiled_from is not state.table:
            routes = connect_routes(state.table.routes)
            self._table = RouteTable.compile(routes, source=state.config.source)
            self._compiled_from = state.table
        return self._table.match(RouteRequest(host, port, "/", ProxyMode.CONNECT))

    async def open(self, ex: Exchange, state: EdgeState) -> None:
        """Answer the CONNECT `ex`: a typed error before the 200, or a tunnel until it ends."""
        h = ex.head
        idle = state.config.limits.tunnel_idle_timeout
        route = self.route(state, h.host, h.port)
        if route is None:
            tunnel = await self._adhoc(ex, state, idle)
        else:
            ex.route = route.name
            if state.auth is not None:
                await state.auth.admit(ex, route.auth)
            backend = state.backends[route.backend]
            ex.backend = backend.name
            tunnel = await self._dial_backend(ex, backend, idle)
        await self._splice(ex, tunnel)

    def _tunnel_factory(self, idle: float) -> Callable[[], RawTunnel]:
        return lambda: RawTunnel(idle, self._sweeper, self._clock)

    async def _adhoc(self, ex: Exchange, state: EdgeState, idle: float) -> RawTunnel:
        h = ex.head
        decision = match_adhoc(state.config.adhoc, h.host, h.port)
        if decision is None:
            raise NoRoute(f"no route for CONNECT {h.target.decode('latin-1')}")
        ex.route = "adhoc"
        if not decision.rule.allow_connect:
            # The first matching rule decides (kEdge semantics), for CONNECT too.
            raise Forbidden(f"adhoc: {decision.rule.dns_name} does not allow CONNECT")
        if state.auth is not None:
            await state.auth.admit(ex, None, adhoc=True)
        # Resolved once and checked; the tunnel connects to exactly this address, so a
        # second DNS answer cannot swap in a denied one (hardening C3).
        address = await resolve_adhoc(decision, self._resolve)
        ex.backend = "adhoc"
        ex.endpoint = str(address)
        _, tunnel = await dial(
            self._tunnel_factory(idle),
            address.host,
            address.port,
            key=str(address),
            connect_timeout=decision.rule.connect_timeout,
            ssl_context=None,
            server_hostname=None,
        )
        return tunnel

    async def _dial_backend(self, ex: Exchange, backend: Backend, idle: float) -> RawTunnel:
        """A raw TCP connection to an endpoint the balancer picks; another on connect failure."""
        timeout = backend.config.timeouts.connect
        # Other clusters' edges speak HTTP to this edge, they are not the service: a
        # tunnel never goes there.
        tried = [e.key for e in backend.remotes.endpoints]
        last_error: UpstreamConnectError | None = None
        for _ in range(max(1, backend.config.retries.attempts)):
            try:
                endpoint = backend.pick(tried)
            except NoEndpoints:
                if last_error is not None:
                    raise last_error from None
                raise
            key = endpoint.key
            tried.append(key)
            ex.endpoint = key
            started = backend.loads.begin(key)
            t0 = time.monotonic()
            rtt: float | None = None
            try:
                _, tunnel = await dial(
                    self._tunnel_factory(idle),
                    endpoint.address.host,
                    endpoint.address.port,
                    key=key,
                    connect_timeout=timeout,
                    ssl_context=None,
                    server_hostname=None,
                )
                rtt = time.monotonic() - t0
            except UpstreamConnectError as exc:
                # A failure never looks fast to the balancer (as in the forwarder).
                rtt = max(time.monotonic() - t0, timeout)
                backend.health.record(key, Outcome.GATEWAY_FAILURE)
                if self._on_connect_failure is not None:
                    self._on_connect_failure(backend.name)
                last_error = exc
                continue
            finally:
                backend.loads.end(key, started, rtt)
            backend.health.record(key, Outcome.SUCCESS)
            return tunnel
        assert last_error is not None
        raise last_error

    async def _splice(self, ex: Exchange, tunnel: RawTunnel) -> None:
        """Answer 200 and carry bytes until the tunnel ends; the log line comes after."""
        if ex.head.version == "2":
            await self._splice_stream(ex, tunnel)
            return
        try:
            # No framing fields in a 2xx to CONNECT (RFC 9110 §9.3.6); the codec adds none.
            head = ResponseHead(200, [(b"x-request-id", ex.request_id)], b"Connection Established")
            ex.respond(head, None, has_body=False)
            client_end = ex.start_tunnel(tunnel)
            ex.finished = True  # the response is complete; the tunnel is not an exchange
            tunnel.attach(client_end)
            await tunnel.wait_closed()
        finally:
            if not tunnel.is_closed:
                tunnel.abort()  # cancelled (shutdown): nothing may outlive the exchange
            ex.bytes_in = tunnel.bytes_up
            ex.bytes_out += tunnel.bytes_down

    async def _splice_stream(self, ex: Exchange, tunnel: RawTunnel) -> None:
        """HTTP/2 CONNECT (RFC 9113 §8.5): the stream's DATA frames are the tunnel. A 200
        without END_STREAM opens it; END_STREAM half-closes; RST_STREAM ends it at once."""
        body = ex.body
        if body is None:  # END_STREAM on the HEADERS: the client closed its side already
            body = BodyStream()
            body.feed_eof(None)
        ex.respond(ResponseHead(200, [(b"x-request-id", ex.request_id)]), None, has_body=True)
        splice = StreamSplice(body.read, ex.send_body, ex.end, ex.abort)
        splice.attach(tunnel)
        tunnel.attach(splice)
        try:
            await splice.run()
        finally:
            if not tunnel.is_closed:
                tunnel.close()
            ex.finished = True
            ex.bytes_in = tunnel.bytes_up
