"""HTTP/2 connections to one endpoint, shared by concurrent requests (multiplexed).

A request takes a stream on the first connection with room under the endpoint's
SETTINGS_MAX_CONCURRENT_STREAMS; a new connection is opened only when every one is full
(one connect at a time: concurrent requests wait for it rather than each dialling), up to
`max_connections_per_endpoint`. Connections without streams close after `idle_timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kedge.core.codec.client_h2 import H2ClientConnection
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import UpstreamConnectError
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.pool_config import PoolConfig

__all__ = ["H2EndpointPool"]


class H2EndpointPool:
    def __init__(
        self,
        dialer: EndpointDialer,
        config: PoolConfig,
        sweeper: DeadlineSweeper,
        *,
        max_response_header_bytes: int = 65536,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._dialer = dialer
        self.key = dialer.key
        self._config = config
        self._sweeper = sweeper
        self._max_header_bytes = max_response_header_bytes
        self._on_connect = on_connect
        self.connections: list[H2ClientConnection] = []
        self._connecting: asyncio.Future[H2ClientConnection] | None = None
        self.opened_total = 0
        self.closed = False

    @property
    def idle_count(self) -> int:
        """Connections carrying no stream right now."""
        return sum(1 for conn in self.connections if not conn.streams)

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    async def acquire(self) -> H2ClientConnection:
        """A connection with room for one more stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._dialer.connect_timeout
        while True:
            for conn in self.connections:
                if conn.is_available:
                    return conn
            limit = self._config.max_connections_per_endpoint
            if self._connecting is None and (not limit or len(self.connections) < limit):
                self._connecting = loop.create_future()
                try:
                    conn = await self._connect()
                except BaseException as exc:
                    self._connecting.set_exception(exc)
                    self._connecting.exception()  # retrieved
                    raise
                finally:
                    pending, self._connecting = self._connecting, None
                if not pending.done():
                    pending.set_result(conn)
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamConnectError(f"no stream available to endpoint {self.key}")
            if self._connecting is not None:
                try:
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(self._connecting)
                except TimeoutError:
                    raise UpstreamConnectError(
                        f"connect to {self.key} timed out after {self._dialer.connect_timeout:g}s"
                    ) from None
            else:
                # Every connection is full and no more may be opened: poll briefly for a
                # finished stream (rare: only with max_connections_per_endpoint set).
                await asyncio.sleep(min(0.01, remaining))

    async def _connect(self) -> H2ClientConnection:
        transport, conn = await self._dialer.open(
            lambda: H2ClientConnection(
                self.key,
                self._max_header_bytes,
                on_lost=self._lost,
                idle_timeout=self._config.idle_timeout,
            )
        )
        if self._dialer.ssl_context is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                conn.abort()
                raise UpstreamConnectError(f"endpoint {self.key} did not negotiate h2 (ALPN)")
        self.connections.append(conn)
        self._sweeper.add(conn)
        self.opened_total += 1
        if self._on_connect is not None:
            self._on_connect()
        if self.closed:
            conn.close()
        return conn

    def _lost(self, conn: H2ClientConnection) -> None:
        self._sweeper.discard(conn)
        if conn in self.connections:
            self.connections.remove(conn)

    def close(self) -> None:
        """GOAWAY every connection; streams in flight finish first."""
        self.closed = True
        for conn in list(self.connections):
            if conn.streams:
                conn.goaway = True  # closes when its last stream ends
            else:
                conn.close()
