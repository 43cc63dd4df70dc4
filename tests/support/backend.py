"""A scriptable, recording HTTP/1.1 backend on 127.0.0.1 for tests (raw asyncio, no framework).

It records every request exactly as it arrived on the wire (so tests can assert what the
edge forwarded, or that nothing arrived), and answers with a handler the test supplies.
It parses requests with httptools too, but independently of the edge's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httptools

__all__ = ["RecordedRequest", "RecordingBackend", "recording_backend", "simple_response"]


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes = b""
    raw: bytes = b""  # the head bytes as received

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


Responder = Callable[[RecordedRequest, asyncio.StreamWriter], Awaitable[None]]


def simple_response(
    status: int = 200, body: bytes = b"ok", headers: list[tuple[str, str]] | None = None
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    hs = headers if headers is not None else []
    if not any(n.lower() == "content-length" for n, _ in hs):
        hs = [*hs, ("Content-Length", str(len(body)))]
    lines += [f"{n}: {v}" for n, v in hs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _default(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    w.write(simple_response(200, b"hello from backend"))


@dataclass
class RecordingBackend:
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    connections: int = 0
    respond: Responder = _default

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class _Collector:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done = False
        self.head_done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


@asynccontextmanager
async def recording_backend(respond: Responder | None = None) -> AsyncIterator[RecordingBackend]:
    """Serve until the block ends. `respond(req, writer)` writes the raw response."""
    state = RecordingBackend()
    if respond is not None:
        state.respond = respond

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                c = _Collector()
                p = httptools.HttpRequestParser(c)
                raw = b""
                while not c.done:
                    data = await reader.read(65536)
                    if not data:
                        return
                    if not c.head_done:
                        raw += data
                    try:
                        p.feed_data(data)
                    except httptools.HttpParserUpgrade:
                        c.done = True
                req = RecordedRequest(
                    p.get_method().decode(),
                    c.url.decode("latin-1"),
                    c.headers,
                    bytes(c.body),
                    raw.split(b"\r\n\r\n", 1)[0],
                )
                state.requests.append(req)
                await state.respond(req, writer)
                await writer.drain()
                if req.header("connection") == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()
