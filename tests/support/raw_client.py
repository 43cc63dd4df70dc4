"""A raw-socket HTTP/1.1 client for hostile-input tests: send exact bytes, read strictly.

Real clients (curl, aiohttp) refuse to send malformed requests, so these tests write bytes
themselves. Responses are parsed here, strictly and independently of the edge's code: a
status line must be `HTTP/1.1 NNN reason` and every line must end in CRLF, so a response
that would smuggle a header (a CR or LF inside a value) shows up as a parse failure.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

__all__ = [
    "MalformedResponse",
    "RawConnection",
    "RawResponse",
    "raw_connection",
    "raw_exchange",
]

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([\t !-~\x80-\xff]*)")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t !-~\x80-\xff]*?)[ \t]*")


class MalformedResponse(AssertionError):
    """The edge sent bytes that are not a valid HTTP/1.1 response."""


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


def parse_head(raw: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """Parse a response head (without the final CRLF CRLF); raise MalformedResponse."""
    lines = raw.split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise MalformedResponse(f"bare CR/LF or NUL in response head: {raw!r}")
    m = _STATUS_LINE.fullmatch(lines[0])
    if m is None:
        raise MalformedResponse(f"invalid status line: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        f = _FIELD.fullmatch(line)
        if f is None:
            raise MalformedResponse(f"invalid header line: {line!r}")
        headers.append((f.group(1).decode().lower(), f.group(2).decode("latin-1")))
    return int(m.group(1)), m.group(2).decode("latin-1"), headers


class RawConnection:
    """One TCP connection to the edge; reads are buffered so responses can be parsed exactly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.eof = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False at EOF (or reset)."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no response from the edge in time")
        try:
            async with asyncio.timeout(remaining):
                data = await self.reader.read(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def read_response(self, timeout: float = 5.0) -> RawResponse:
        """The next response (1xx included); raises MalformedResponse or TimeoutError."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill(deadline):
                raise MalformedResponse(
                    f"connection closed inside a response head: {self.buffer!r}"
                )
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, reason, headers = parse_head(raw)
        resp = RawResponse(status, reason, headers, b"", raw)
        if status < 200 or status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header_all("content-length")
        if te is not None:
            if te.lower() != "chunked" or cl:
                raise MalformedResponse(f"bad response framing: TE={te!r} CL={cl!r}")
            resp.body = await self._read_chunked(deadline)
        elif cl:
            if len(cl) != 1 or not cl[0].isdigit():
                raise MalformedResponse(f"bad Content-Length: {cl!r}")
            n = int(cl[0])
            while len(self.buffer) < n:
                if not await self._fill(deadline):
                    raise MalformedResponse("connection closed inside a response body")
            resp.body, self.buffer = self.buffer[:n], self.buffer[n:]
        else:
            while await self._fill(deadline):
                pass
            resp.body, self.buffer = self.buffer, b""
        return resp

    async def _read_chunked(self, deadline: float) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                if not await self._fill(deadline):
                    raise MalformedResponse("connection closed inside a chunk size")
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while b"\r\n\r\n" not in b"\r\n" + self.buffer:
                    if not await self._fill(deadline):
                        raise MalformedResponse("connection closed inside trailers")
                _, self.buffer = (b"\r\n" + self.buffer).split(b"\r\n\r\n", 1)
                return body
            while len(self.buffer) < size + 2:
                if not await self._fill(deadline):
                    raise MalformedResponse("connection closed inside a chunk")
            if self.buffer[size : size + 2] != b"\r\n":
                raise MalformedResponse("chunk data not followed by CRLF")
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]

    async def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Wait for the edge to close; return any bytes that arrived first. TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while await self._fill(deadline):
            pass
        extra, self.buffer = self.buffer, b""
        return extra

    async def is_open_after(self, seconds: float) -> bool:
        """True if the edge neither closed nor sent anything for `seconds`."""
        if self.eof or self.buffer:
            return False
        try:
            async with asyncio.timeout(seconds):
                data = await self.reader.read(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        self.buffer += data
        self.eof = not data
        return False

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def raw_connection(port: int, host: str = "127.0.0.1") -> AsyncIterator[RawConnection]:
    reader, writer = await asyncio.open_connection(host, port)
    conn = RawConnection(reader, writer)
    try:
        yield conn
    finally:
        await conn.close()


async def raw_exchange(
    port: int, data: bytes, timeout: float = 5.0
) -> tuple[RawResponse, bool, bytes]:
    """Send `data` on a new connection, read one response, then see whether the edge closes.

    Returns (response, closed, bytes after the response). `closed` is True when the edge
    closed the connection within a short grace period after its response.
    """
    async with raw_connection(port) as conn:
        await conn.send(data)
        resp = await conn.read_response(timeout)
        try:
            extra = await conn.wait_closed(1.0)
            closed = True
        except TimeoutError:
            extra, closed = conn.buffer, False
        return resp, closed, extra
