"""Delay-injecting TCP proxy: holds the first bytes of every response for a fixed delay.

The balancing bench puts one in front of each backend so that endpoints differ only in
latency: `python bench/lib/delay_proxy.py 0:8080:20 0:8081:2` runs two proxies in one
process (LISTEN_PORT:TARGET_PORT:DELAY_MS each; port 0 = any free port, printed on a
"listening" line). It needs only the standard library (uvloop when present), so it runs by
path, without the package around it.

What counts as "a response": HTTP/1.1 without pipelining alternates requests and responses
on a connection, so the proxy arms a delay when the client sends bytes and spends it on
the next bytes the upstream sends. Later chunks pass at once until the client sends again,
so a response is delayed once, at its start (time to first byte), whatever its size.
Pipelined requests sent before the previous answer share one delay; kedge's pooled
HTTP/1.1 connections never pipeline. Timers run on the event loop's clock: uvloop's has
millisecond resolution, so a delay can come out up to about a millisecond long.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from dataclasses import dataclass
from typing import cast

__all__ = [
    "DelayProxy",
    "ProxySpec",
    "ResponseGate",
    "listening_line",
    "listening_ports",
    "main",
    "parse_args",
    "parse_spec",
]

# Upstream bytes held during a delay before we stop reading the upstream. Pausing costs
# two epoll_ctl calls, so small responses (the bench's) are simply buffered.
_MAX_HELD = 256 * 1024
_LISTENING = re.compile(r"^delay_proxy listening on 127\.0\.0\.1:(\d+) -> \S+:(\d+) ", re.M)


@dataclass(slots=True)
class ResponseGate:
    """Per-connection state: is a request waiting for its (delayed) response?

    Pure: no clock, no sockets; the proxy asks it how long to hold each upstream chunk.
    """

    delay_s: float
    armed: bool = False
    requests: int = 0  # requests seen: client bytes after upstream bytes (or first bytes)

    def on_client_data(self) -> None:
        if not self.armed:
            self.armed = True
            self.requests += 1

    def on_upstream_data(self) -> float:
        """Seconds to hold this upstream chunk: the delay for a response's first bytes, else 0."""
        if self.armed:
            self.armed = False
            return self.delay_s
        return 0.0


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; its `link` knows the other one.

    Protocol callbacks rather than stream pumps: the bench's proxies share a CPU with wrk,
    and a pump task costs several task switches per chunk (measured: about half the CPU).
    """

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.paused_by: set[str] = set()  # why we stopped reading this socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's does not subclass asyncio.Transport, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def set_paused(self, reason: str, paused: bool) -> None:
        was = bool(self.paused_by)
        if paused:
            self.paused_by.add(reason)
        else:
            self.paused_by.discard(reason)
        if self.transport is not None and not self.transport.is_closing():
            if self.paused_by and not was:
                self.transport.pause_reading()
            elif was and not self.paused_by:
                self.transport.resume_reading()

    # Our send buffer is full: stop reading from the other side until it drains.
    def pause_writing(self) -> None:
        self.link.other(self).set_paused("backpressure", True)

    def resume_writing(self) -> None:
        self.link.other(self).set_paused("backpressure", False)


class _ClientSide(_Side):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.link.start()

    def data_received(self, data: bytes) -> None:
        self.link.from_client(data)

    def eof_received(self) -> bool:
        self.link.client_eof()
        return True  # half-closed: the response may still come


class _UpstreamSide(_Side):
    def data_received(self, data: bytes) -> None:
        self.link.from_upstream(data)

    def eof_received(self) -> bool:
        self.link.upstream_eof()
        return True  # the link closes both once any held bytes are out


class _Link:
    """Both sides of one proxied connection, the gate, and the bytes held for the delay."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.gate = ResponseGate(proxy.delay_s)
        self.client = _ClientSide(self)
        self.upstream = _UpstreamSide(self)
        self.held: list[bytes] = []  # upstream bytes waiting out their delay
        self.held_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.upstream_done = False  # EOF from upstream, passed on after the held bytes
        self.pending: list[bytes] = []  # client bytes sent before the upstream connected
        self.client_done = False  # EOF from the client
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def start(self) -> None:
        """The client connected: connect to the upstream (client bytes wait in `pending`)."""
        self.proxy.links.add(self)
        self.proxy.connections += 1
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(
                lambda: self.upstream, self.proxy.target_host, self.proxy.target_port
            )
        except OSError:
            self.close()  # closing the client connection is the only error we can report
            return
        if self.closed:  # the client left while we were connecting
            assert self.upstream.transport is not None
            self.upstream.transport.close()
            return
        assert self.upstream.transport is not None
        self.upstream.transport.write(b"".join(self.pending))
        self.pending.clear()
        if self.client_done:
            self.client_eof()

    def from_client(self, data: bytes) -> None:
        before = self.gate.requests
        self.gate.on_client_data()
        self.proxy.requests += self.gate.requests - before
        if self.upstream.transport is None:
            self.pending.append(data)  # still connecting
        else:
            self.upstream.transport.write(data)

    def from_upstream(self, data: bytes) -> None:
        hold = self.gate.on_upstream_data()
        if self.timer is not None:
            self.held.append(data)  # behind a response start still being held: keep the order
            self.held_bytes += len(data)
            if self.held_bytes > _MAX_HELD:
                self.upstream.set_paused("delay", True)
        elif hold > 0:
            self.held.append(data)
            self.held_bytes = len(data)
            self.timer = asyncio.get_running_loop().call_later(hold, self._release)
        elif self.client.transport is not None:
            self.client.transport.write(data)

    def _release(self) -> None:
        self.timer = None
        if self.closed or self.client.transport is None:
            return
        self.client.transport.write(b"".join(self.held))
        self.held.clear()
        self.held_bytes = 0
        if self.upstream_done:
            self.close()
        else:
            self.upstream.set_paused("delay", False)

    def client_eof(self) -> None:
        self.client_done = True
        t = self.upstream.transport
        if t is not None and t.can_write_eof():
            t.write_eof()

    def upstream_eof(self) -> None:
        self.upstream_done = True
        if self.timer is None:
            self.close()

    def close(self) -> None:
        """Close both sockets (each flushes what it has buffered first)."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()
        self.proxy.links.discard(self)


class DelayProxy:
    """An asyncio TCP proxy from 127.0.0.1:`listen_port` to a target with a response delay."""

    def __init__(
        self, target_host: str, target_port: int, delay_s: float, listen_port: int = 0
    ) -> None:
        if delay_s < 0:
            raise ValueError("delay must be >= 0")
        self.target_host = target_host
        self.target_port = target_port
        self.delay_s = delay_s
        self.listen_port = listen_port
        self.connections = 0
        self.requests = 0  # requests seen so far, over every connection
        self.links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with listen_port=0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Link(self).client, "127.0.0.1", self.listen_port, backlog=4096
        )
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self.listen_port

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Open connections first: from Python 3.12 on, wait_closed() waits for them.
        for link in list(self.links):
            link.close()
        if server is not None:
            await server.wait_closed()


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One proxy of the command line: `LISTEN_PORT:TARGET_PORT:DELAY_MS`."""

    listen_port: int  # 0: any free port
    target_port: int
    delay_ms: float


def parse_spec(text: str) -> ProxySpec:
    """`"18001:8080:2.5"` -> ProxySpec(18001, 8080, 2.5); ValueError when malformed."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"{text!r}: expected LISTEN_PORT:TARGET_PORT:DELAY_MS")
    listen, target, delay = int(parts[0]), int(parts[1]), float(parts[2])
    if not 0 <= listen <= 65535 or not 1 <= target <= 65535:
        raise ValueError(f"{text!r}: ports must be 0-65535 (target 1-65535)")
    if not delay >= 0:  # also rejects NaN
        raise ValueError(f"{text!r}: the delay must be >= 0 ms")
    return ProxySpec(listen, target, delay)


def listening_line(port: int, target_host: str, spec: ProxySpec) -> str:
    """What the CLI prints once a proxy listens; `listening_ports` reads it back."""
    return (
        f"delay_proxy listening on 127.0.0.1:{port} -> {target_host}:{spec.target_port} "
        f"delay {spec.delay_ms:g} ms"
    )


def listening_ports(text: str) -> dict[int, int]:
    """The CLI's listening lines -> {target port: the port its proxy listens on}."""
    return {int(m[2]): int(m[1]) for m in _LISTENING.finditer(text)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "proxies",
        nargs="+",
        metavar="LISTEN_PORT:TARGET_PORT:DELAY_MS",
        help="one proxy on 127.0.0.1:LISTEN_PORT (0 = any) to TARGET_HOST:TARGET_PORT",
    )
    p.add_argument("--target-host", default="127.0.0.1", help="where every proxy forwards")
    args = p.parse_args(argv)
    try:
        args.proxies = [parse_spec(text) for text in args.proxies]
    except ValueError as exc:
        p.error(str(exc))
    return args


async def _serve(args: argparse.Namespace) -> None:
    proxies = [
        DelayProxy(args.target_host, spec.target_port, spec.delay_ms / 1000.0, spec.listen_port)
        for spec in args.proxies
    ]
    try:
        for proxy, spec in zip(proxies, args.proxies, strict=True):
            port = await proxy.start()
            # One line per proxy the parent can read; it says the port when LISTEN_PORT was 0.
            print(listening_line(port, args.target_host, spec), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for proxy in proxies:
            await proxy.aclose()
            print(
                f"delay_proxy 127.0.0.1:{proxy.listen_port} done: "
                f"{proxy.connections} connections, {proxy.requests} requests",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop  # the bench's proxies share a CPU with wrk: spend as little as we can

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
