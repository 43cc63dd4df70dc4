"""Dialing an endpoint: one TCP (and TLS) connection with a deadline and typed errors.

The place where connect failures enter the edge: a timeout, a TLS failure or any OSError
becomes an UpstreamConnectError naming the endpoint, which the forwarder may retry on
another endpoint (nothing was sent).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kedge.core.errors import UpstreamConnectError

__all__ = ["EndpointDialer", "dial"]

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def dial(
    factory: Callable[[], P],
    host: str,
    port: int,
    *,
    key: str,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.BaseTransport, P]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            return await loop.create_connection(
                factory,
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context else None,
            )
    except TimeoutError:
        raise UpstreamConnectError(
            f"connect to {key} timed out after {connect_timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise UpstreamConnectError(f"TLS to {key} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise UpstreamConnectError(f"connect to {key} failed: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class EndpointDialer:
    """How to reach one endpoint: its address, the connect deadline, TLS and the name
    to ask for and verify (SNI). Pools and health probes of an endpoint share one."""

    host: str
    port: int
    key: str  # "host:port", for messages
    connect_timeout: float
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None

    async def open(self, factory: Callable[[], P]) -> tuple[asyncio.BaseTransport, P]:
        return await dial(
            factory,
            self.host,
            self.port,
            key=self.key,
            connect_timeout=self.connect_timeout,
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
        )
