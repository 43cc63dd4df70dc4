"""WinchApp: the composition root. It builds the mapper, auth sources, edge connections and
the listener, and routes each request: winch's own pages, a CONNECT tunnel, or a mapped
request forwarded to its edge.

One listener on 127.0.0.1 speaks HTTP/1.1 (proxy requests in absolute form, CONNECT) and
h2c with prior knowledge (gRPC clients that dial winch with `:authority` set to the
service), using the same protocol drivers as the edge.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import time
from collections.abc import Callable
from functools import partial

from kedge.core.codec.server_h1 import H1ServerConnection, H1ServerSettings
from kedge.core.codec.server_h2 import H2ServerConnection, H2ServerSettings
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import KedgeError, MisdirectedRequest
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import RequestIdGenerator
from kedge.core.http.pipeline import ErrorBoundary, Handler, compose
from kedge.dialer.auth_sources import AuthSources
from kedge.dialer.config import Unmapped
from kedge.dialer.errors import NotMapped
from kedge.dialer.mapping import Mapper
from kedge.dialer.pac import render_pac
from winch.config import WinchConfig, read_secret
from winch.connect import ConnectTunnels
from winch.direct import DirectForwarder
from winch.edges import EdgeConnections
from winch.forward import EdgeForwarder
from winch.guard import Verdict, admit
from winch.local import LocalPages
from winch.tunnel import VirtualTransport

__all__ = ["WinchApp"]

log = logging.getLogger("winch")
access = logging.getLogger("winch.access")

Connection = H1ServerConnection | H2ServerConnection


class AccessLine:
    """One log line per request, however it ended (a layer outside the error boundary)."""

    async def __call__(self, ex: Exchange, next: Handler) -> None:
        try:
            await next(ex)
        finally:
            h = ex.head
            access.info(
                "%s %s %s%s -> %d route=%s edge=%s %.1fms%s",
                ex.request_id.decode("latin-1"),
                h.method,
                h.authority,
                h.path_and_query if h.method != "CONNECT" else "",
                ex.status,
                ex.route or "-",
                ex.backend or "-",
                (time.monotonic() - ex.started) * 1000.0,
                f" error={ex.error_kind}" if ex.error_kind else "",
            )


class WinchApp:
    def __init__(
        self,
        config: WinchConfig,
        *,
        open_browser: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.mapper = Mapper(config.dialer)
        self.sweeper = DeadlineSweeper()
        self.sources = AuthSources(
            config.dialer.auth_sources,
            refresh_margin=config.dialer.refresh_margin,
            open_browser=open_browser,
        )
        self.edges = EdgeConnections(self.sweeper, connect_timeout=config.connect_timeout)
        self.secret = read_secret(config.secret_file) if config.secret_file else None
        self.forwarder = EdgeForwarder(
            self.sources,
            self.edges,
            debug_tag=f"winch-{_user()}" if config.debug else None,
            response_header_timeout=config.response_header_timeout,
        )
        self.request_ids = RequestIdGenerator(prefix=f"winch-{os.urandom(4).hex()}")
        self.handler: Handler = compose([AccessLine(), ErrorBoundary()], self._dispatch)
        self.tunnels = ConnectTunnels(
            self.forwarder,
            self.edges,
            self.sweeper,
            self._serve_tunnel,
            connect_timeout=config.connect_timeout,
        )
        self.direct = DirectForwarder(
            connect_timeout=config.connect_timeout,
            response_header_timeout=config.response_header_timeout,
        )
        self._h1 = H1ServerSettings(
            listener="winch",
            scheme="http",
            request_header_timeout=config.request_header_timeout,
            error_origin=b"winch",
        )
        self._h2 = H2ServerSettings(listener="winch", scheme="http", error_origin=b"winch")
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self._pages = LocalPages("")

    @property
    def proxy_address(self) -> str:
        return f"{self.config.listen_host}:{self.port}"

    async def start(self) -> None:
        c = self.config
        h1, h2 = self._h1, self._h2

        def on_open(conn: Connection) -> None:
            if len(self.connections) >= c.max_connections:
                conn.reject()  # hardening X10: a page opening connections in a loop
                return
            self.connections.add(conn)

        def on_close(conn: Connection) -> None:
            self.connections.discard(conn)

        def switch_to_h2(transport: asyncio.Transport, data: bytes) -> None:
            conn = H2ServerConnection(
                h2,
                self.handler,
                self.request_ids,
                self.sweeper,
                on_open=partial(_reopen, self.connections),
                on_close=on_close,
                on_error=_parse_error,
            )
            transport.set_protocol(conn)
            conn.adopt(transport, data)

        def factory() -> H1ServerConnection:
            return H1ServerConnection(
                h1,
                self.handler,
                self.request_ids,
                self.sweeper,
                on_open=on_open,
                on_close=on_close,
                on_error=_parse_error,
                switch_to_h2=switch_to_h2,
            )

        self.sweeper.start()
        loop = asyncio.get_running_loop()
        # No SO_REUSEPORT: if another process holds the port, winch must fail, not share it
        # (hardening X8, port squatting).
        self._server = await loop.create_server(factory, c.listen_host, c.listen_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._pages = LocalPages(render_pac(c.dialer, self.proxy_address))
        log.info("winch listening on %s (%d routes)", self.proxy_address, len(c.dialer.routes))

    async def _dispatch(self, ex: Exchange) -> None:
        head = ex.head
        admission = admit(
            head, own_port=self.port, is_mapped=self.mapper.is_mapped, secret=self.secret
        )
        if admission.verdict is Verdict.LOCAL:
            await self._pages.serve(ex)
            return
        if head.method == "CONNECT":
            # A tunnel may carry plain HTTP or gRPC: a route for either protocol maps it.
            mapped = self.mapper.map(head.host, head.port) or self.mapper.map(
                head.host, head.port, grpc=True
            )
            if mapped is not None:
                await self.tunnels.mapped(ex, mapped)
            elif self.config.dialer.unmapped is Unmapped.DIRECT:
                await self.tunnels.direct(ex)
            else:
                raise _unmapped(head.authority)
            return
        mapped = self.mapper.map(head.host, head.port, grpc=ex.grpc)
        if mapped is None:
            if self.config.dialer.unmapped is not Unmapped.DIRECT:
                raise _unmapped(head.authority)
            await self.direct.forward(ex)
            return
        await self.forwarder.forward(ex, mapped)

    async def _dispatch_tunnelled(self, ex: Exchange, host: str, port: int) -> None:
        """A request inside a plaintext CONNECT tunnel (the CONNECT passed admission)."""
        head = ex.head
        if (head.host, head.port) != (host, port):
            raise MisdirectedRequest(
                f"this tunnel was opened for {host}:{port}, not {head.authority}"
            )
        mapped = self.mapper.map(host, port, grpc=ex.grpc)
        if mapped is None:
            raise _unmapped(head.authority)
        await self.forwarder.forward(ex, mapped)

    def _serve_tunnel(self, transport: VirtualTransport, host: str, port: int) -> None:
        """Serve a plaintext tunnel's bytes as one more client connection of winch's."""
        handler = compose(
            [AccessLine(), ErrorBoundary()],
            partial(self._dispatch_tunnelled, host=host, port=port),
        )

        def switch_to_h2(vt: asyncio.Transport, data: bytes) -> None:
            conn = H2ServerConnection(
                self._h2, handler, self.request_ids, self.sweeper, on_error=_parse_error
            )
            vt.set_protocol(conn)
            conn.adopt(vt, data)

        conn = H1ServerConnection(
            self._h1,
            handler,
            self.request_ids,
            self.sweeper,
            on_error=_parse_error,
            switch_to_h2=switch_to_h2,
        )
        transport.set_protocol(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.tunnels.aclose()
        await self.direct.aclose()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.edges.close()
        await self.sources.aclose()
        await self.sweeper.aclose()


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container with an unnamed uid)
        return str(os.getuid())


def _unmapped(authority: str) -> NotMapped:
    return NotMapped(
        f"{authority} is not mapped to an edge (add a route for it, or set unmapped: direct)"
    )


def _parse_error(error: KedgeError, conn: Connection, rid: bytes) -> None:
    access.info("%s refused while parsing: %s", rid.decode("latin-1"), error.reason)


def _reopen(connections: set[Connection], conn: Connection) -> None:
    # An h2c preface hands an HTTP/1.1 connection over to HTTP/2: the count stays the same.
    connections.add(conn)
