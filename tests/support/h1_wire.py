"""HTTP/1.1 on the wire for tests: read messages from raw sockets, a raw client, and curl.

The reader is written from RFC 9112 directly (not with httptools, not with the edge's
code), so tests can check framing the edge produced byte for byte: chunked or not,
trailers, truncation (EOF before the framing said the message ends), interim responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = [
    "CurlResult",
    "Message",
    "RawClient",
    "closed_port",
    "curl",
    "parse_responses",
    "raw_client",
    "read_body",
    "read_message",
    "read_request",
    "read_response",
]

STREAM_LIMIT = 1 << 20  # longest line a test reader accepts (huge-header tests)


@dataclass
class Message:
    """One request or response as it was framed on the wire."""

    start_line: str
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    chunked: bool = False
    complete: bool = True  # False: the connection ended before the framing said it would
    close_delimited: bool = False  # a response body delimited by the end of the connection
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this response
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def has_header(self, name: str) -> bool:
        return any(n == name for n, _ in self.headers)

    def trailer(self, name: str) -> str | None:
        for n, v in self.trailers:
            if n == name:
                return v
        return None

    @property
    def status(self) -> int:
        return int(self.start_line.split(" ", 2)[1])

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        return self.start_line.split(" ", 2)[1]


def _parse_fields(block: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        assert sep, f"not a header field: {line!r}"
        out.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
    return out


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The head up to and including CRLFCRLF; None on EOF before any byte."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise


async def _read_chunked(reader: asyncio.StreamReader, msg: Message) -> None:
    body = bytearray()
    msg.chunked = True
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                block = b""
                while True:
                    tline = await reader.readuntil(b"\r\n")
                    if tline == b"\r\n":
                        break
                    block += tline
                msg.trailers = _parse_fields(block)
                break
            body += await reader.readexactly(size)
            crlf = await reader.readexactly(2)
            assert crlf == b"\r\n", f"chunk not followed by CRLF: {crlf!r}"
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        if isinstance(exc, asyncio.IncompleteReadError):
            body += exc.partial if not exc.partial.endswith(b"\r\n") else b""
        msg.complete = False
    msg.body = bytes(body)


async def read_body(reader: asyncio.StreamReader, msg: Message, *, is_response: bool) -> None:
    te = msg.header("transfer-encoding")
    cl = msg.header("content-length")
    if te is not None:
        assert te.lower() == "chunked", f"unexpected transfer-encoding {te!r}"
        await _read_chunked(reader, msg)
    elif cl is not None:
        try:
            msg.body = await reader.readexactly(int(cl))
        except asyncio.IncompleteReadError as exc:
            msg.body = exc.partial
            msg.complete = False
        except ConnectionError:
            msg.complete = False
    elif is_response:
        msg.close_delimited = True
        chunks = []
        try:
            while data := await reader.read(65536):
                chunks.append(data)
        except ConnectionError:
            msg.complete = False
        msg.body = b"".join(chunks)


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The head of a message, no body; None on a clean EOF."""
    head = await _read_head(reader)
    if head is None:
        return None
    start, _, rest = head[:-4].partition(b"\r\n")
    return Message(start.decode("latin-1"), _parse_fields(rest), raw_head=head)


async def read_request(reader: asyncio.StreamReader) -> Message | None:
    """One request with its body (Content-Length or chunked); None on a clean EOF."""
    msg = await read_message(reader)
    if msg is None:
        return None
    await read_body(reader, msg, is_response=False)
    return msg


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> Message:
    """The final response to a `method` request, skipping (and recording) 1xx responses."""
    interim: list[int] = []
    while True:
        msg = await read_message(reader)
        if msg is None:
            raise ConnectionError("connection closed before a response")
        status = msg.status
        if 100 <= status < 200 and status != 101:
            interim.append(status)
            continue
        msg.interim = interim
        if method != "HEAD" and status not in (101, 204, 304):
            await read_body(reader, msg, is_response=True)
        return msg


async def parse_responses(data: bytes, methods: list[str] | None = None) -> list[Message]:
    """Every complete or truncated response in `data` (bytes read up to EOF), in order."""
    reader = asyncio.StreamReader(limit=STREAM_LIMIT)
    reader.feed_data(data)
    reader.feed_eof()
    out: list[Message] = []
    while not reader.at_eof():
        method = methods[len(out)] if methods and len(out) < len(methods) else "GET"
        out.append(await read_response(reader, method))
    return out


class RawClient:
    """A plain TCP client that writes exact bytes and reads responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, method: str = "GET", timeout: float = 5.0) -> Message:
        async with asyncio.timeout(timeout):
            return await read_response(self.reader, method)

    async def request(self, data: bytes, method: str = "GET", timeout: float = 5.0) -> Message:
        await self.send(data)
        return await self.response(method, timeout)

    async def read_to_eof(self, timeout: float = 5.0) -> bytes:
        """Everything until the peer closes; a reset or a timeout fails the test."""
        chunks = []
        async with asyncio.timeout(timeout):
            while data := await self.reader.read(65536):
                chunks.append(data)
        return b"".join(chunks)

    async def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the peer closes within `timeout` without sending anything more."""
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"unexpected bytes before close: {data[:200]!r}"
        return True

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def raw_client(port: int, host: str = "127.0.0.1") -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
    client = RawClient(reader, writer)
    try:
        yield client
    finally:
        writer.close()


@dataclass
class CurlResult:
    rc: int
    out: bytes
    err: bytes


async def curl(*args: str, timeout: float = 15.0, stdin: bytes | None = None) -> CurlResult:
    """Run curl (never through a proxy from the environment) and collect its output."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-s",
        "--noproxy",
        "*",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CurlResult(proc.returncode, out, err)


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (connects are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
