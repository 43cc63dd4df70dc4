"""EdgeRelay: a private Unix socket whose connections the dialer carries over TLS to an edge.

Why: grpcio checks every call's `:authority` against the TLS peer's certificate (or, with
`ssl_target_name_override`, against the channel's authority without its port), so a gRPC
channel over its own TLS cannot send `:authority: svc.ns.cluster-a.internal:50051` to an
edge whose certificate names only the edge. grpc-go (kEdge) has no such check. So the
dialer's gRPC channels speak plaintext HTTP/2 to this relay, and the relay does the TLS:
verified against the edge CA and the edge's name with our own `ssl` context, ALPN `h2`,
and the route's client certificate (a config file or an auth source's, read for every new
connection, so a rotated certificate is used from the next connection on).

The socket lives in a directory only this user can enter (0700) and is itself 0600: other
local users cannot ride the relay (nor, with a client certificate, the identity). The
credentials the interceptors add travel only inside this process and the TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable

from kedge.core.errors import KedgeError
from kedge.core.net.dial import dial
from kedge.core.net.raw_tunnel import RawTunnel
from kedge.dialer.mapping import EdgeTarget

__all__ = ["EdgeRelay"]

log = logging.getLogger("kedge.dialer")

# The TLS context (and SNI name) for one new connection to the edge.
ContextFor = Callable[[], Awaitable[ssl.SSLContext]]


class _Accepted(RawTunnel):
    """The channel's end of one relayed connection; on accept it asks the relay for the
    edge's end (nothing is read from the channel until the two are spliced)."""

    def __init__(self, relay: EdgeRelay) -> None:
        super().__init__()
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._relay.accepted(self)


class EdgeRelay:
    def __init__(
        self,
        path: str,
        edge: EdgeTarget,
        server_name: str,
        context_for: ContextFor,
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self.path = path
        self._edge = edge
        self._server_name = server_name
        self._context_for = context_for
        self._connect_timeout = connect_timeout
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels: set[_Accepted] = set()
        self.last_error: str | None = None  # why the last connection to the edge failed

    def start(self) -> None:
        """Listen now (synchronously, so a channel may connect at once); accept on the
        running event loop."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file is created 0600
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(128)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._serve(sock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Accepted(self), sock=sock)

    def accepted(self, channel: _Accepted) -> None:
        self._channels.add(channel)
        task = asyncio.get_running_loop().create_task(self._connect(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, channel: _Accepted) -> None:
        """Dial the edge over TLS and splice it with the channel's connection (two raw
        tunnel ends, as the edge splices a CONNECT)."""
        edge = self._edge
        try:
            ctx = await self._context_for()
            _, upstream = await dial(
                RawTunnel,
                edge.host,
                edge.port,
                key=edge.key,
                connect_timeout=self._connect_timeout,
                ssl_context=ctx,
                server_hostname=self._server_name,
            )
        except (KedgeError, OSError) as exc:
            reason = exc.reason if isinstance(exc, KedgeError) else (str(exc) or type(exc).__name__)
            # grpcio sees the socket close and fails the call UNAVAILABLE at once (an HTTP/2
            # GOAWAY with the reason was tried: grpcio logs it but retries the connection,
            # so callers saw DEADLINE_EXCEEDED instead); the reason is in this log line.
            log.warning("dialer: cannot reach the edge %s: %s", edge.key, reason)
            self.last_error = reason
            self._channels.discard(channel)
            channel.close()
            return
        channel.attach(upstream)
        upstream.attach(channel)
        await channel.wait_closed()
        self._channels.discard(channel)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for channel in list(self._channels):
            channel.abort()  # its edge connection closes with it
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
