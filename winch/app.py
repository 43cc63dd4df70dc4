"""WinchApp: the composition root. It builds the mapper, auth sources, edge connections and
the listener, and routes each request: winch's own pages, a CONNECT tunnel, or a mapped
request forwarded to its edge.

One listener on 127.0.0.1 speaks HTTP/1.1 (proxy requests in absolute form, CONNECT) and
h2c with prior knowledge (gRPC clients that dial winch with `:authority` set to the
service), using the same protocol drivers as the edge.

What a config builds (mapper, auth sources, forwarder, secret, PAC) is one `Live` object;
a reload (SIGHUP, or the file changed) builds a new one and swaps the reference, as the
edge does, so a request sees one config from start to end. A config that does not load
keeps the old one. Read at start only (a restart applies them): `winch.listen`,
`connect_timeout` and `request_header_timeout`. Edge connections and CONNECT tunnels carry
on across reloads.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from kedge.core.codec.server_h1 import H1ServerConnection, H1ServerSettings
from kedge.core.codec.server_h2 import H2ServerConnection, H2ServerSettings
from kedge.core.config_watch import ConfigFileWatcher
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import ConfigError, KedgeError, MisdirectedRequest
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import RequestIdGenerator
from kedge.core.http.pipeline import ErrorBoundary, Handler, compose
from kedge.core.metrics import MetricsRegistry
from kedge.dialer.auth_sources import AuthSources
from kedge.dialer.config import Unmapped
from kedge.dialer.errors import NotMapped
from kedge.dialer.mapping import Mapper
from kedge.dialer.pac import render_pac
from winch.config import WinchConfig, is_loopback_host, load_winch_config, read_secret
from winch.connect import ConnectTunnels
from winch.direct import DirectForwarder
from winch.edges import EdgeConnections
from winch.errors import OtherUser
from winch.forward import EdgeForwarder
from winch.guard import Verdict, admit
from winch.local import LocalPages
from winch.metrics import WinchMetrics
from winch.peer_uid import Unknown, peer_uid, proc_uid
from winch.tunnel import VirtualTransport

__all__ = ["WinchApp"]

log = logging.getLogger("winch")
access = logging.getLogger("winch.access")

_RETIRE_AFTER = 60.0  # seconds an old config's auth sources stay open after a reload

Connection = H1ServerConnection | H2ServerConnection


class AccessLine:
    """One log line and the request metrics per request, however it ended (a layer outside
    the error boundary)."""

    def __init__(self, metrics: WinchMetrics) -> None:
        self._metrics = metrics

    async def __call__(self, ex: Exchange, next: Handler) -> None:
        try:
            await next(ex)
        finally:
            m = self._metrics
            route = ex.route or "-"
            m.requests.labels(route, str(ex.status)).inc()
            m.request_duration.labels(route).observe(time.monotonic() - ex.started)
            if ex.error_kind is not None:
                m.errors.labels(ex.error_kind).inc()
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


@dataclass(frozen=True)
class Live:
    """Everything one config builds; a reload swaps the whole object."""

    config: WinchConfig
    mapper: Mapper
    sources: AuthSources
    forwarder: EdgeForwarder
    secret: str | None
    pages: LocalPages


class WinchApp:
    def __init__(
        self,
        config: WinchConfig,
        *,
        listen: tuple[str, int] | None = None,
        debug: bool = False,
        config_path: str | None = None,
        watch_interval: float = 0.0,
        open_browser: Callable[[str], None] | None = None,
    ) -> None:
        """`config` is the file's; `listen` and `debug` are the command line's overrides,
        which every reloaded config keeps."""
        self.config_path = config_path
        # The file's own `winch.listen`: a reload warns when it changes, since the listener
        # is bound once.
        self._file_listen = (config.listen_host, config.listen_port)
        self._listen = listen or self._file_listen
        self._debug = debug
        self._open_browser = open_browser
        self.sweeper = DeadlineSweeper()
        self.metrics = WinchMetrics(MetricsRegistry())
        self.edges = EdgeConnections(self.sweeper, connect_timeout=config.connect_timeout)
        self.port = 0
        self.live = self._build(self._effective(config))
        self.request_ids = RequestIdGenerator(prefix=f"winch-{os.urandom(4).hex()}")
        self.handler: Handler = compose([AccessLine(self.metrics), ErrorBoundary()], self._dispatch)
        self.tunnels = ConnectTunnels(
            lambda: self.live.forwarder,
            self.edges,
            self.sweeper,
            self._serve_tunnel,
            connect_timeout=config.connect_timeout,
            on_tunnel=lambda path: self.metrics.tunnels.labels(path).inc(),
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
        self._retired: list[Live] = []
        # Per loopback connection: whether its peer runs as winch's user (a future while
        # /proc/net/tcp is being read).
        self._owners: dict[tuple[str, int], bool | asyncio.Future[bool]] = {}
        self._uid_warned = False
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher = (
            ConfigFileWatcher(config_path, watch_interval, self._file_changed)
            if config_path is not None and watch_interval > 0
            else None
        )

    @property
    def config(self) -> WinchConfig:
        return self.live.config

    @property
    def proxy_address(self) -> str:
        return f"{self.config.listen_host}:{self.port}"

    def _effective(self, config: WinchConfig) -> WinchConfig:
        """A file's config with the command line's overrides."""
        host, port = self._listen
        return replace(
            config, listen_host=host, listen_port=port, debug=config.debug or self._debug
        )

    def _build(self, config: WinchConfig) -> Live:
        """What `config` builds; reads the secret file (ConfigError if it is unsafe)."""
        sources = AuthSources(
            config.dialer.auth_sources,
            refresh_margin=config.dialer.refresh_margin,
            open_browser=self._open_browser,
        )
        forwarder = EdgeForwarder(
            sources,
            self.edges,
            debug_tag=f"winch-{_user()}" if config.debug else None,
            response_header_timeout=config.response_header_timeout,
        )
        secret = read_secret(config.secret_file) if config.secret_file else None
        pac = render_pac(config.dialer, f"{config.listen_host}:{self.port}")
        pages = LocalPages(pac, self.metrics.registry.render)
        return Live(config, Mapper(config.dialer), sources, forwarder, secret, pages)

    def reload(self, why: str = "SIGHUP") -> bool:
        """Load the config file again and swap it in; a bad file keeps the old config."""
        if self.config_path is None:
            log.warning("reload ignored (%s): winch was not started from a file", why)
            return False
        if self._watcher is not None:
            self._watcher.mark_read()
        old = self.live
        try:
            config = load_winch_config(self.config_path)
            listen = (config.listen_host, config.listen_port)
            if listen != self._file_listen:
                log.warning("winch.listen changes take effect after a restart")
                self._file_listen = listen
            live = self._build(self._effective(config))
        except (ConfigError, OSError) as exc:
            log.error("config reload failed (%s); keeping the old config: %s", why, exc)
            self.metrics.config_reloads.labels("failure").inc()
            return False
        self.metrics.config_reloads.labels("success").inc()
        self.live = live
        self._retire(old)
        log.info("config reloaded (%s): %d routes", why, len(config.dialer.routes))
        return True

    def _retire(self, old: Live) -> None:
        """Close the old config's auth sources once in-flight requests are done with them
        (a request holds its Live for its whole life; a minute is plenty for the fetch of a
        credential, which is all they are used for)."""
        self._retired.append(old)

        async def close_later() -> None:
            await asyncio.sleep(_RETIRE_AFTER)
            self._retired.remove(old)
            await old.sources.aclose()

        self._tasks.append(asyncio.get_running_loop().create_task(close_later()))

    async def _file_changed(self) -> None:
        self.reload("file changed")

    async def start(self) -> None:
        c = self.config
        h1, h2 = self._h1, self._h2

        def on_open(conn: Connection) -> None:
            if len(self.connections) >= self.config.max_connections:
                conn.reject()  # hardening X10: a page opening connections in a loop
                return
            self.connections.add(conn)
            if self.config.same_user_only:
                self._check_user(conn)

        def on_close(conn: Connection) -> None:
            self.connections.discard(conn)
            self._owners.pop((conn.client_ip, conn.client_port), None)

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
        # The PAC names the port actually bound (port 0 in tests).
        live = self.live
        pages = LocalPages(render_pac(c.dialer, self.proxy_address), self.metrics.registry.render)
        self.live = Live(live.config, live.mapper, live.sources, live.forwarder, live.secret, pages)
        if self._watcher is not None:
            self._tasks.append(loop.create_task(self._watcher.run(), name="winch-config-watch"))
        log.info("winch listening on %s (%d routes)", self.proxy_address, len(c.dialer.routes))

    def _check_user(self, conn: Connection) -> None:
        """Start telling whether a loopback peer runs as winch's user (remote peers: see
        secret_file); the answer waits in `_owners` for the connection's requests."""
        transport = conn.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        if local is None or not is_loopback_host(conn.client_ip):
            return
        key = (conn.client_ip, conn.client_port)
        server = (str(local[0]), int(local[1]))
        try:
            self._owners[key] = self._is_own(key, peer_uid(key, server))
        except Unknown:
            # No sock_diag: /proc/net/tcp, whose read can take milliseconds, off the loop.
            loop = asyncio.get_running_loop()
            self._owners[key] = loop.run_in_executor(None, self._proc_check, key, server)

    def _proc_check(self, key: tuple[str, int], server: tuple[str, int]) -> bool:
        try:
            return self._is_own(key, proc_uid(key, server))
        except Unknown as exc:
            if not self._uid_warned:
                log.warning("cannot tell which user opens connections (%s): not checked", exc)
                self._uid_warned = True
            return True

    def _is_own(self, key: tuple[str, int], uid: int | None) -> bool:
        if uid == os.getuid():
            return True
        log.warning(
            "refusing a connection from %s:%d opened by uid %s (winch runs as uid %d)",
            key[0], key[1], uid, os.getuid(),
        )  # fmt: skip
        return False

    async def _dispatch(self, ex: Exchange) -> None:
        live = self.live  # one config for the whole request, even across a reload
        head = ex.head
        owner = self._owners.get((ex.client_ip, ex.client_port), True)
        if not (owner if isinstance(owner, bool) else await owner):
            raise OtherUser(
                "refused: this winch attaches its user's credentials, and this connection "
                "comes from another local user (run your own winch)"
            )
        admission = admit(
            head, own_port=self.port, is_mapped=live.mapper.is_mapped, secret=live.secret
        )
        if admission.verdict is Verdict.LOCAL:
            await live.pages.serve(ex)
            return
        unmapped = live.config.dialer.unmapped
        if head.method == "CONNECT":
            # A tunnel may carry plain HTTP or gRPC: a route for either protocol maps it.
            mapped = live.mapper.map(head.host, head.port) or live.mapper.map(
                head.host, head.port, grpc=True
            )
            if mapped is not None:
                await self.tunnels.mapped(ex, mapped)
            elif unmapped is Unmapped.DIRECT:
                await self.tunnels.direct(ex)
            else:
                raise _unmapped(head.authority)
            return
        mapped = live.mapper.map(head.host, head.port, grpc=ex.grpc)
        if mapped is None:
            if unmapped is not Unmapped.DIRECT:
                raise _unmapped(head.authority)
            await self.direct.forward(ex)
            return
        await live.forwarder.forward(ex, mapped)

    async def _dispatch_tunnelled(self, ex: Exchange, host: str, port: int) -> None:
        """A request inside a plaintext CONNECT tunnel (the CONNECT passed admission)."""
        head = ex.head
        if (head.host, head.port) != (host, port):
            raise MisdirectedRequest(
                f"this tunnel was opened for {host}:{port}, not {head.authority}"
            )
        live = self.live
        mapped = live.mapper.map(host, port, grpc=ex.grpc)
        if mapped is None:
            raise _unmapped(head.authority)
        await live.forwarder.forward(ex, mapped)

    def _serve_tunnel(self, transport: VirtualTransport, host: str, port: int) -> None:
        """Serve a plaintext tunnel's bytes as one more client connection of winch's."""
        handler = compose(
            [AccessLine(self.metrics), ErrorBoundary()],
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
        for task in self._tasks:
            task.cancel()
        await self.tunnels.aclose()
        await self.direct.aclose()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.edges.close()
        for live in (*self._retired, self.live):
            await live.sources.aclose()
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
