"""ClientListeners: the client-facing side of the edge, one server per listener.

It owns the accept loop's callbacks: the connection limit (hardening Z7), the connection
metrics, the hand-over from HTTP/1.1 to HTTP/2 (ALPN `h2` or an h2c preface), the
per-listener codec settings (rebuilt on reload; addresses need a restart), requests
refused while parsing (logged and counted: they never become exchanges), and the drain.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from functools import partial

from kedge.core.codec.server_h1 import H1ServerConnection, H1ServerSettings
from kedge.core.codec.server_h2 import H2ServerConnection, H2ServerSettings
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import KedgeError
from kedge.core.http.headers import RequestIdGenerator
from kedge.core.net.tls_reload import ReloadableServerContext
from kedge.edge.config import EdgeConfig, ListenerConfig
from kedge.edge.layers import Handler
from kedge.edge.observability.access_log import AccessLog
from kedge.edge.observability.edge_metrics import EdgeMetrics
from kedge.edge.tls_contexts import listener_context, tls_files

__all__ = ["ClientListeners", "h1_settings_for"]

Connection = H1ServerConnection | H2ServerConnection


def h1_settings_for(listener: ListenerConfig, config: EdgeConfig) -> H1ServerSettings:
    lim, tmo = config.limits, config.timeouts
    return H1ServerSettings(
        listener=listener.name,
        scheme=listener.scheme,
        max_uri_bytes=lim.max_uri_bytes,
        max_header_bytes=lim.max_header_bytes,
        max_header_count=lim.max_header_count,
        # The listener enforces the largest limit any route allows; routes check their own.
        max_request_body_bytes=_listener_body_limit(config),
        max_pipelined=lim.max_pipelined_requests,
        max_keepalive_requests=lim.max_keepalive_requests,
        request_header_timeout=tmo.request_header,
        request_body_idle_timeout=tmo.request_body_idle,
        keepalive_idle_timeout=tmo.keepalive_idle,
    )


def _h2_settings_for(listener: ListenerConfig, config: EdgeConfig) -> H2ServerSettings:
    h = config.http2
    return H2ServerSettings(
        listener=listener.name,
        scheme=listener.scheme,
        max_concurrent_streams=h.max_concurrent_streams,
        initial_stream_window=h.initial_stream_window,
        initial_connection_window=h.initial_connection_window,
        max_header_list_size=h.max_header_list_size,
        max_frame_size=h.max_frame_size,
        max_request_body_bytes=_listener_body_limit(config),
        header_block_timeout=config.timeouts.request_header,
        idle_timeout=h.idle_timeout,
        settings_timeout=h.settings_timeout,
        floods=h.floods,
    )


def _listener_body_limit(config: EdgeConfig) -> int:
    limits = [config.limits.max_request_body_bytes]
    limits += [
        r.max_request_body_bytes for r in config.routes if r.max_request_body_bytes is not None
    ]
    return 0 if 0 in limits else max(limits)


class ClientListeners:
    def __init__(
        self,
        config: EdgeConfig,
        handler: Handler,
        request_ids: RequestIdGenerator,
        sweeper: DeadlineSweeper,
        metrics: EdgeMetrics,
        access_log: AccessLog,
        max_connections: Callable[[], int],
    ) -> None:
        self._handler = handler
        self._request_ids = request_ids
        self._sweeper = sweeper
        self._metrics = metrics
        self._access_log = access_log
        self._max_connections = max_connections
        self.settings: dict[str, H1ServerSettings] = {}
        self._h2_settings: dict[str, H2ServerSettings] = {}
        self.apply_config(config)
        self.connections: set[Connection] = set()
        self._servers: dict[str, asyncio.Server] = {}
        self.ports: dict[str, int] = {}
        self.draining = False
        # Per TLS listener: its reloadable context and the ALPN it offers.
        self.tls: dict[str, tuple[ReloadableServerContext, tuple[str, ...]]] = {}
        self._no_connections = asyncio.Event()
        self._no_connections.set()

    def apply_config(self, config: EdgeConfig) -> None:
        """New codec settings for new connections (limits, timeouts, HTTP/2 SETTINGS)."""
        for lst in config.listeners:
            self.settings[lst.name] = h1_settings_for(lst, config)
            self._h2_settings[lst.name] = _h2_settings_for(lst, config)

    async def listen(self, listener: ListenerConfig, http2: bool) -> None:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if listener.tls is not None:
            alpn = ("h2", "http/1.1") if http2 else ("http/1.1",)
            tls = ReloadableServerContext(
                partial(listener_context, listener.tls, alpn), tls_files(listener.tls)
            )
            self.tls[listener.name] = (tls, alpn)
            ctx = tls.listening
        name = listener.name
        m = self._metrics
        accepted = m.connections_accepted.labels(name)
        active = m.connections_active.labels(name)
        rejected = m.connections_rejected.labels(name)
        floods = m.h2_floods

        def on_open(conn: Connection, new: bool = True) -> None:
            limit = self._max_connections()
            if limit and len(self.connections) >= limit:
                # Hardening Z7: bound memory and file descriptors under a connection
                # flood; existing connections keep being served.
                rejected.inc()
                conn.reject()
                return
            self.connections.add(conn)
            self._no_connections.clear()
            if new:
                accepted.inc()
            active.inc()
            if self.draining:
                conn.begin_drain()

        def on_close(conn: Connection) -> None:
            if conn not in self.connections:
                return  # rejected at open: never counted
            self.connections.discard(conn)
            if not self.connections:
                self._no_connections.set()
            active.dec()

        def switch_to_h2(transport: asyncio.Transport, data: bytes) -> None:
            conn = H2ServerConnection(
                self._h2_settings[name],
                self._handler,
                self._request_ids,
                self._sweeper,
                # After an h2c preface the HTTP/1.1 object already counted the connection
                # as accepted (it hands over on_close first); after ALPN it never opened.
                on_open=partial(on_open, new=not data),
                on_close=on_close,
                on_flood=lambda kind: floods.labels(name, kind).inc(),
                on_error=self._on_connection_error,
            )
            transport.set_protocol(conn)
            conn.adopt(transport, data)

        def factory() -> H1ServerConnection:
            return H1ServerConnection(
                self.settings[name],
                self._handler,
                self._request_ids,
                self._sweeper,
                on_open=on_open,
                on_close=on_close,
                on_error=self._on_connection_error,
                switch_to_h2=switch_to_h2 if http2 else None,
            )

        server = await loop.create_server(
            factory,
            listener.address.host,
            listener.address.port,
            ssl=ctx,
            backlog=1024,
            reuse_address=True,
        )
        self._servers[name] = server
        self.ports[name] = int(server.sockets[0].getsockname()[1])

    def refresh_tls(self, config: EdgeConfig | None = None) -> list[tuple[str, str | None]]:
        """Rebuild listeners' TLS contexts for new handshakes: every TLS listener with a new
        `config` (a reload), else those whose files changed. Returns (listener, error or
        None) for each rebuild tried; a failed one keeps serving its current context."""
        tried: list[tuple[str, str | None]] = []
        tls_of = {lst.name: lst.tls for lst in config.listeners} if config is not None else {}
        for name, (tls, alpn) in self.tls.items():
            new = tls_of.get(name)
            if config is not None and new is None:
                continue  # the listener lost its TLS block: an address change, needs a restart
            if config is None and not tls.files.changed():
                continue
            try:
                if new is not None:
                    tls.rebuild(partial(listener_context, new, alpn), tls_files(new))
                else:
                    tls.rebuild()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                tried.append((name, str(exc)))
                continue
            tried.append((name, None))
        return tried

    def _on_connection_error(self, error: KedgeError, conn: Connection, rid: bytes) -> None:
        """A request refused while parsing (it never became an exchange): log and count it."""
        m = self._metrics
        m.errors.labels(error.kind).inc()
        m.requests.labels(conn.settings.listener, "", "", str(error.http_status)).inc()
        self._access_log.record(
            request_id=rid.decode("latin-1"),
            client=f"{conn.client_ip}:{conn.client_port}",
            listener=conn.settings.listener,
            method="",
            authority="",
            path="",
            status=error.http_status,
            bytes_in=0,
            bytes_out=0,
            duration_ms=0.0,
            error_kind=error.kind,
        )

    async def drain(self, grace: float) -> int:
        """Stop accepting and let connections finish (graceful close, GOAWAY) within
        `grace` seconds; then abort the rest. How many had to be aborted."""
        self.draining = True
        for server in self._servers.values():
            server.close()
        for conn in list(self.connections):
            conn.begin_drain()
        left = 0
        try:
            async with asyncio.timeout(grace):
                await self._no_connections.wait()
        except TimeoutError:
            left = len(self.connections)
        self.abort()
        return left

    def abort(self) -> None:
        for server in self._servers.values():
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
