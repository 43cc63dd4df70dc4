"""Warm keep-alive connection pools, one per endpoint.

Idle connections are reused last-in-first-out (the warmest socket first; the coldest ones
expire). A pool bounds its idle connections (`max_idle_per_endpoint`), closes those idle for
longer than `idle_timeout` (through the deadline sweeper), and optionally bounds all its
connections (`max_connections_per_endpoint`), making callers wait up to the connect timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from kedge.core.codec.client_h1 import H1ClientConnection
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import UpstreamConnectError
from kedge.core.net.dial import EndpointDialer
from kedge.edge.config import Address, AdhocRule, PoolConfig

__all__ = ["AdhocPools", "EndpointPool"]


class EndpointPool:
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
        self._on_connect = on_connect
        self.key = dialer.key
        self._config = config
        self._sweeper = sweeper
        self._max_header_bytes = max_response_header_bytes
        self._idle: deque[H1ClientConnection] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.open_connections = 0
        self.opened_total = 0
        self.closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self) -> tuple[H1ClientConnection, bool]:
        """A connection and whether it was reused from the idle set."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.is_available:
                conn.deadline = 0.0
                return conn, True
            self._slot_freed()
        limit = self._config.max_connections_per_endpoint
        if limit and self.open_connections >= limit:
            await self._wait_for_slot()
            return await self.acquire()
        return await self.connect(), False

    async def _wait_for_slot(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self._dialer.connect_timeout):
                await fut
        except TimeoutError:
            raise UpstreamConnectError(
                f"connection limit reached for endpoint {self.key}"
            ) from None
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    async def connect(self) -> H1ClientConnection:
        """A new connection, bypassing the idle set."""
        self.open_connections += 1
        try:
            _, conn = await self._dialer.open(
                lambda: H1ClientConnection(self.key, self._sweeper, self._max_header_bytes)
            )
        except UpstreamConnectError:
            self._slot_freed()
            raise
        self.opened_total += 1
        if self._on_connect is not None:
            self._on_connect()
        return conn

    def release(self, conn: H1ClientConnection) -> None:
        """Return a connection after a complete exchange; keep it if it can be reused."""
        if (
            conn.is_available
            and not self.closed
            and len(self._idle) < self._config.max_idle_per_endpoint
        ):
            conn.idle_since = time.monotonic()
            conn.set_deadline(self._config.idle_timeout)
            self._idle.append(conn)
            self._wake_waiter()
            return
        conn.close()  # a complete exchange: a graceful close is enough
        self._slot_freed()

    def discard(self, conn: H1ClientConnection) -> None:
        """Drop a connection that is not coming back (error, not reusable): abort it."""
        conn.abort()
        self._slot_freed()

    def detach(self, conn: H1ClientConnection) -> None:
        """The connection leaves the pool alive (it became a tunnel)."""
        self._slot_freed()

    def _slot_freed(self) -> None:
        self.open_connections = max(0, self.open_connections - 1)
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def close(self) -> None:
        """Close idle connections; busy ones are discarded when released."""
        self.closed = True
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            self._slot_freed()


class AdhocPools:
    """Connection pools for adhoc destinations, keyed by the resolved address."""

    def __init__(self, sweeper: DeadlineSweeper, max_pools: int = 1024) -> None:
        self._sweeper = sweeper
        self._pools: dict[str, EndpointPool] = {}
        self._max = max_pools

    def pool(self, address: Address, rule: AdhocRule) -> EndpointPool:
        key = str(address)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= self._max:
                # Evict the oldest pool (dict order is insertion order).
                oldest = next(iter(self._pools))
                self._pools.pop(oldest).close()
            dialer = EndpointDialer(address.host, address.port, key, rule.connect_timeout)
            pool = EndpointPool(dialer, PoolConfig(), self._sweeper)
            self._pools[key] = pool
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
