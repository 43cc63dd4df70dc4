"""A raw TCP backend on 127.0.0.1 whose every connection runs a script the test writes.

    async def script(conn: BackendConn) -> None:
        req = await conn.read_request()
        conn.writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")

    async with scripted_backend(script) as be:
        ... be.connections, be.requests ...

For backends that misbehave on purpose: close mid-body, reset, never answer, send invalid
responses. `serve(respond)` turns a per-request responder into a keep-alive script.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from tests.support.h1_wire import STREAM_LIMIT, Message, read_request

__all__ = [
    "BackendConn",
    "ScriptedBackend",
    "http_response",
    "scripted_backend",
    "serve",
]


@dataclass
class ScriptedBackend:
    port: int = 0
    connections: int = 0
    requests: list[Message] = field(default_factory=list)
    # Set when a connection's script ended and its socket was closed (one per connection).
    closed: list[asyncio.Event] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class BackendConn:
    index: int  # 0 for the backend's first connection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    backend: ScriptedBackend
    requests: int = 0  # requests read on this connection

    async def read_request(self) -> Message | None:
        try:
            req = await read_request(self.reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        if req is not None:
            self.requests += 1
            self.backend.requests.append(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed or firewalled backend would."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def wait_closed_by_peer(self) -> None:
        """Return when the edge closes (EOF or reset); discards what it sends."""
        with suppress(ConnectionError):
            while await self.reader.read(65536):
                pass


Script = Callable[[BackendConn], Awaitable[None]]
Responder = Callable[[Message, BackendConn], Awaitable[None]]


def http_response(
    status: int = 200,
    body: bytes = b"ok",
    headers: list[tuple[str, str]] | None = None,
    *,
    content_length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{n}: {v}" for n, v in headers or []]
    if content_length and not any(n.lower() == "content-length" for n, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def serve(respond: Responder) -> Script:
    """A keep-alive script: read a request, `respond`, repeat until the edge closes."""

    async def script(conn: BackendConn) -> None:
        while True:
            req = await conn.read_request()
            if req is None:
                return
            await respond(req, conn)
            await conn.writer.drain()

    return script


async def _echo_target(req: Message, conn: BackendConn) -> None:
    conn.writer.write(http_response(200, f"{req.method} {req.target}".encode()))


@asynccontextmanager
async def scripted_backend(script: Script | None = None) -> AsyncIterator[ScriptedBackend]:
    """Serve until the block ends; the default script answers `METHOD target` per request."""
    run = script if script is not None else serve(_echo_target)
    state = ScriptedBackend()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = state.connections
        state.connections += 1
        closed = asyncio.Event()
        state.closed.append(closed)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await run(BackendConn(index, reader, writer, state))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the backend is stopping; end quietly (start_server would log the cancel)
        finally:
            writer.close()
            closed.set()
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=STREAM_LIMIT)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        for t in list(tasks):
            with suppress(asyncio.CancelledError, Exception):
                await t
