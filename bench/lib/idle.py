"""Idle keep-alive connection cost: hold N used connections open and read a proxy's RSS."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["IdleResult", "measure_idle_memory", "raise_nofile_limit"]

_CONNECT_CONCURRENCY = 50  # stay well under the smallest accept backlog (asyncio's 100)
_SETTLE_S = 1.0  # let the proxy finish its bookkeeping before RSS is read


@dataclass(frozen=True, slots=True)
class IdleResult:
    connections: int  # held open with one completed request each
    failed: int  # could not connect, or the one request did not get a 200
    rss_before_bytes: int
    rss_after_bytes: int

    @property
    def kib_per_connection(self) -> float:
        if self.connections == 0:
            return float("nan")
        return (self.rss_after_bytes - self.rss_before_bytes) / 1024.0 / self.connections


def raise_nofile_limit(wanted: int) -> int:
    """Lift this process's RLIMIT_NOFILE soft limit (children inherit it); return the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return wanted if soft == resource.RLIM_INFINITY else soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def _one_exchange(
    port: int, host: str, gate: asyncio.Semaphore, timeout_s: float
) -> asyncio.StreamWriter | None:
    """Connect, send one keep-alive GET, read the whole response; the open writer or None."""
    async with gate:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii"))
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
                    raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                return writer
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            if writer is not None:
                writer.close()
            return None


async def _measure(
    port: int, host: str, count: int, rss: Callable[[], int], timeout_s: float
) -> IdleResult:
    await asyncio.sleep(_SETTLE_S)
    before = rss()
    gate = asyncio.Semaphore(_CONNECT_CONCURRENCY)
    writers = await asyncio.gather(
        *(_one_exchange(port, host, gate, timeout_s) for _ in range(count))
    )
    held = [w for w in writers if w is not None]
    try:
        await asyncio.sleep(_SETTLE_S)
        after = rss()
    finally:
        for w in held:
            w.close()
        for w in held:
            with contextlib.suppress(OSError):
                await w.wait_closed()
    return IdleResult(
        connections=len(held),
        failed=count - len(held),
        rss_before_bytes=before,
        rss_after_bytes=after,
    )


def measure_idle_memory(
    port: int, *, host: str, count: int, rss: Callable[[], int], timeout_s: float = 10.0
) -> IdleResult:
    """Open `count` connections to 127.0.0.1:`port`, one request each, then RSS after - before."""
    return asyncio.run(_measure(port, host, count, rss, timeout_s))
