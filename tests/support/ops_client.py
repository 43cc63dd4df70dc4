"""Clients for the operations tests: curl via subprocess, a raw keep-alive HTTP/1.1 client,
and a Prometheus text parser for the admin listener's /metrics.

The raw client parses responses with httptools' response parser, independently of the
edge's code, and reports exactly how an exchange ended (complete, closed before any
response byte, or cut part-way), which the reload and shutdown tests count.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import suppress
from dataclasses import dataclass, field

import aiohttp
import httptools

__all__ = [
    "ClosedBeforeResponse",
    "CurlResult",
    "CutResponse",
    "KeepAliveClient",
    "RawResponse",
    "admin_get",
    "curl",
    "metric_value",
    "parse_metrics",
]


@dataclass
class CurlResult:
    returncode: int
    status: int  # 0 when curl got no response
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes
    stderr: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


async def curl(*args: str, timeout: float = 10.0) -> CurlResult:
    """Run `curl -sS -i <args>`; the last response head (after any 1xx) and its body."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", "--max-time", str(timeout), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout + 5)
    assert proc.returncode is not None
    status, headers, body = 0, [], out
    while body.startswith(b"HTTP/"):
        head, _, body = body.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [
            (n.strip().lower(), v.strip())
            for n, _, v in (line.partition(":") for line in lines[1:])
        ]
        if not 100 <= status < 200:
            break
    return CurlResult(proc.returncode, status, headers, body, err)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class _Collector:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class ClosedBeforeResponse(Exception):
    """The server closed a reused connection before sending any byte of the response.

    RFC 9112 §9.3.1 lets a client retry such a request (the server may close an idle
    keep-alive connection at any time); the tests count it separately from a failure.
    """


class CutResponse(Exception):
    """The connection ended part-way through a response."""


@dataclass
class KeepAliveClient:
    """One HTTP/1.1 connection, requests sent one at a time and reused while allowed."""

    host: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    requests_sent: int = 0
    closed_by_server: bool = False
    _pending: bytes = field(default=b"", repr=False)

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.requests_sent = 0
        self.closed_by_server = False

    async def request(
        self, method: str, target: str, headers: dict[str, str] | None = None
    ) -> RawResponse:
        if self.writer is None or self.closed_by_server:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{n}: {v}" for n, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.requests_sent += 1
        c = _Collector()
        parser = httptools.HttpResponseParser(c)
        got_any = False
        while not c.done:
            try:
                data = await self.reader.read(65536)
            except ConnectionError:
                data = b""
            if not data:
                self.closed_by_server = True
                if not got_any:
                    raise ClosedBeforeResponse(f"{method} {target}")
                raise CutResponse(f"{method} {target}: {len(c.body)} body bytes")
            got_any = True
            parser.feed_data(data)
        resp = RawResponse(parser.get_status_code(), c.headers, bytes(c.body))
        if (resp.header("connection") or "").lower() == "close":
            self.closed_by_server = True
            await self.close()
        return resp

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with suppress(ConnectionError):
                await self.writer.wait_closed()
            self.writer = None
            self.reader = None


async def admin_get(port: int, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.read()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples keyed by (name, labels) and the declared TYPE of each metric family."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, f"unparsable metrics line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sample of `name` with exactly these labels, or None when absent."""
    samples, _ = parse_metrics(text)
    return samples.get((name, frozenset(labels.items())))
