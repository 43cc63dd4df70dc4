"""1 GiB up and 1 GiB down through an edge process, with its memory measured while it streams.

The edge runs as `python -m kedge serve --config FILE` (its own process, so its RSS is its
own); the backend and the client run in the test's event loop. Data is generated on the fly
(1 MiB blocks, each stamped with its index so a lost, repeated or reordered block changes
the hash); both ends count bytes and keep a running SHA-256. A thread samples the edge's RSS
with psutil every 100 ms; the peak must stay under the baseline + 64 MiB, i.e. the edge
streams with backpressure instead of buffering. The numbers are printed for
bench/RESULTS.md (run with `-s` to see them).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.h1_wire import read_message
from tests.support.ops_process import edge_process

pytestmark = pytest.mark.slow

TOTAL = 1 << 30  # 1 GiB
BLOCK = 1 << 20
RSS_BUDGET = 64 << 20
TIME_LIMIT = 60.0
HOST = "big.test"


def blocks(total: int = TOTAL) -> Iterator[bytes]:
    base = hashlib.sha256(b"kedge").digest() * (BLOCK // 32)
    for i in range(total // BLOCK):
        yield i.to_bytes(8, "big") + base[8:]


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread (the loop may be busy)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(psutil.Error):
                self.samples.append(self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max(self.samples)


@dataclass
class Backend:
    port: int = 0
    received: int = 0
    received_digest: str = ""
    sent: int = 0
    sent_digest: str = ""
    done: list[str] = field(default_factory=list)


@asynccontextmanager
async def big_backend() -> AsyncIterator[Backend]:
    """POST /upload: count and hash the body. GET /download: send TOTAL bytes."""
    state = Backend()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (req := await read_message(reader)) is not None:
                if req.method == "POST":
                    remaining = int(req.header("content-length") or 0)
                    h = hashlib.sha256()
                    while remaining:
                        data = await reader.read(min(remaining, 1 << 20))
                        if not data:
                            return
                        h.update(data)
                        remaining -= len(data)
                        state.received += len(data)
                    state.received_digest = h.hexdigest()
                    body = f"{state.received} {state.received_digest}".encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
                    h = hashlib.sha256()
                    for block in blocks():
                        writer.write(block)
                        h.update(block)
                        state.sent += len(block)
                        await writer.drain()
                    state.sent_digest = h.hexdigest()
                await writer.drain()
                state.done.append(req.method)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()


def edge_yaml(backend_port: int) -> str:
    return yaml.safe_dump(
        {
            "listeners": [{"name": "http", "address": "127.0.0.1:0"}],
            "admin": {"address": "127.0.0.1:0"},
            "limits": {"max_request_body_bytes": 0},  # no limit: this is the 1 GiB test
            "backends": [
                {
                    "name": "big",
                    "resolver": {"static": {"endpoints": [f"127.0.0.1:{backend_port}"]}},
                }
            ],
            "routes": [{"name": "big", "backend": "big", "match": {"host": HOST}}],
        }
    )


async def _warm_up(port: int) -> None:
    """One small request, so the baseline includes a live client and upstream connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n"
        "Connection: close\r\n\r\nhello".encode()
    )
    head = await read_message(reader)
    assert head is not None and head.status == 200
    await reader.read()
    writer.close()


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def report(name: str, sampler: RssSampler, baseline: int, seconds: float, cpu: float) -> None:
    peak = sampler.peak
    rate = TOTAL / seconds / (1 << 20)
    print(
        f"\n[big-bodies] {name}: 1 GiB in {seconds:.2f} s ({rate:.0f} MiB/s), "
        f"edge CPU {cpu:.2f} s; "
        f"edge RSS baseline {baseline / (1 << 20):.1f} MiB, peak {peak / (1 << 20):.1f} MiB, "
        f"growth {(peak - baseline) / (1 << 20):.1f} MiB (budget {RSS_BUDGET >> 20} MiB), "
        f"{len(sampler.samples)} samples"
    )


async def test_upload_1gib_with_bounded_edge_memory(tmp_path: Path) -> None:
    async with big_backend() as be, edge_process(edge_yaml(be.port), str(tmp_path)) as edge:
        await _warm_up(edge.port())
        be.received = 0
        baseline = psutil.Process(edge.proc.pid).memory_info().rss
        cpu0 = cpu_seconds(edge.proc.pid)
        with RssSampler(edge.proc.pid) as sampler:
            t0 = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.port())
            writer.write(
                f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {TOTAL}\r\n\r\n".encode()
            )
            h = hashlib.sha256()
            async with asyncio.timeout(TIME_LIMIT):
                for block in blocks():
                    writer.write(block)
                    h.update(block)
                    await writer.drain()
                head = await read_message(reader)
                assert head is not None and head.status == 200
                body = await reader.readexactly(int(head.header("content-length") or 0))
            seconds = time.monotonic() - t0
            writer.close()
        report("upload", sampler, baseline, seconds, cpu_seconds(edge.proc.pid) - cpu0)
        assert body == f"{TOTAL} {h.hexdigest()}".encode()
        assert be.received == TOTAL and be.received_digest == h.hexdigest()
        assert sampler.peak < baseline + RSS_BUDGET


async def test_download_1gib_with_bounded_edge_memory(tmp_path: Path) -> None:
    async with big_backend() as be, edge_process(edge_yaml(be.port), str(tmp_path)) as edge:
        await _warm_up(edge.port())
        baseline = psutil.Process(edge.proc.pid).memory_info().rss
        cpu0 = cpu_seconds(edge.proc.pid)
        with RssSampler(edge.proc.pid) as sampler:
            t0 = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.port())
            writer.write(f"GET /download HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            h = hashlib.sha256()
            count = 0
            async with asyncio.timeout(TIME_LIMIT):
                head = await read_message(reader)
                assert head is not None and head.status == 200
                assert head.header("content-length") == str(TOTAL)
                while count < TOTAL:
                    data = await reader.read(1 << 20)
                    assert data, f"edge closed after {count} bytes"
                    h.update(data)
                    count += len(data)
            seconds = time.monotonic() - t0
            writer.close()
        report("download", sampler, baseline, seconds, cpu_seconds(edge.proc.pid) - cpu0)
        assert count == TOTAL == be.sent
        assert h.hexdigest() == be.sent_digest
        assert sampler.peak < baseline + RSS_BUDGET
