"""Graceful shutdown of a subprocess edge (`python -m kedge serve`) on SIGTERM, under load.

While keep-alive clients loop and slow requests (1 s at the backend) are in flight, SIGTERM
must: turn /readyz to 503 at once, close the listener (new connections refused), let every
request in flight finish, and exit 0 within `timeouts.drain`. A request still running when
the drain timeout ends is cut, and the process exits anyway.

A fast request may meet a keep-alive connection the edge closed as idle before the request
arrived (no response byte at all). RFC 9112 §9.3.1 lets a client retry that; the test
accepts it only if the backend never saw that request (each request has a unique path).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.support.backend import (
    RecordedRequest,
    RecordingBackend,
    recording_backend,
    simple_response,
)
from tests.support.ops_client import (
    ClosedBeforeResponse,
    KeepAliveClient,
    RawResponse,
    admin_get,
    metric_value,
)
from tests.support.ops_process import EdgeProcess, edge_process

SLOW_SECONDS = 1.0


def config(backend: str, drain: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
timeouts:
  drain: {drain}
backends:
  - name: app
    resolver:
      static:
        endpoints: ["{backend}"]
routes:
  - name: app
    backend: app
    match:
      host: app.test
"""


@dataclass
class Slowness:
    release_hang: asyncio.Event = field(default_factory=asyncio.Event)
    # Slow requests take SLOW_SECONDS and are also held until the test has checked what
    # must happen while they are in flight, so a slow machine cannot finish them early.
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    slow_seen: int = 0


@pytest.fixture
async def backend() -> AsyncIterator[tuple[RecordingBackend, Slowness]]:
    slow = Slowness()

    async def respond(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
        if req.target.startswith("/slow"):
            slow.slow_seen += 1
            slow.arrived.set()
            await asyncio.sleep(SLOW_SECONDS)  # the backend's work, not a test wait
            await slow.release_slow.wait()
        elif req.target.startswith("/hang"):
            slow.arrived.set()
            await slow.release_hang.wait()
        w.write(simple_response(200, req.target.encode()))

    async with recording_backend(respond) as be:
        try:
            yield be, slow
        finally:
            slow.release_hang.set()
            slow.release_slow.set()


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


async def wait_until_refused(port: int, limit: float = 2.0) -> float:
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while not refused(port):
            await asyncio.sleep(0.01)
    return time.monotonic() - started


async def wait_not_ready(edge: EdgeProcess, limit: float = 2.0) -> tuple[float, bytes]:
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while True:
            status, body = await admin_get(edge.admin_port, "/readyz")
            if status == 503:
                return time.monotonic() - started, body
            await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_sigterm_under_load_drains_without_failures(
    backend: tuple[RecordingBackend, Slowness],
) -> None:
    be, slow = backend
    failures: list[str] = []
    retryable: list[str] = []  # paths closed before any response byte
    done: list[RawResponse] = []
    stop = asyncio.Event()

    with tempfile.TemporaryDirectory() as d:
        async with edge_process(config(be.address, "5s"), d) as edge:
            port = edge.port()
            status, _ = await admin_get(edge.admin_port, "/readyz")
            assert status == 200

            async def fast_worker(n: int) -> None:
                client = KeepAliveClient("127.0.0.1", port)
                i = 0
                try:
                    while not stop.is_set():
                        i += 1
                        path = f"/fast/{n}/{i}"
                        try:
                            res = await client.request("GET", path, {"Host": "app.test"})
                        except ClosedBeforeResponse:
                            retryable.append(path)
                            return
                        except ConnectionRefusedError:
                            return  # the listener is closed: the edge is going away
                        except Exception as exc:
                            failures.append(f"{path}: {exc!r}")
                            return
                        if res.status != 200 or res.body != path.encode():
                            failures.append(f"{path}: {res.status} {res.body!r}")
                        done.append(res)
                finally:
                    await client.close()

            async def slow_request(n: int) -> RawResponse:
                client = KeepAliveClient("127.0.0.1", port)
                try:
                    return await client.request("GET", f"/slow/{n}", {"Host": "app.test"})
                finally:
                    await client.close()

            fast = [asyncio.create_task(fast_worker(n)) for n in range(6)]
            slow_tasks = [asyncio.create_task(slow_request(n)) for n in range(3)]
            async with asyncio.timeout(5):
                while slow.slow_seen < 3 or len(done) < 30:
                    await asyncio.sleep(0.005)

            edge.send(signal.SIGTERM)
            term_at = time.monotonic()
            ready_delay, reason = await wait_not_ready(edge)
            assert ready_delay < 0.5, ready_delay
            assert b"draining" in reason
            status, text = await admin_get(edge.admin_port, "/metrics")
            assert metric_value(text.decode(), "kedge_draining") == 1
            await wait_until_refused(port)
            # All of that happened while the slow requests were still at the backend.
            assert not any(t.done() for t in slow_tasks)
            slow.release_slow.set()

            slow_results = await asyncio.wait_for(asyncio.gather(*slow_tasks), 5)
            for n, res in enumerate(slow_results):
                assert res.status == 200 and res.body == f"/slow/{n}".encode()
                assert res.header("connection") == "close"

            rc = await edge.wait_exit(5)
            exited_after = time.monotonic() - term_at
            stop.set()
            await asyncio.wait_for(asyncio.gather(*fast), 5)

    assert rc == 0, edge.stderr
    assert exited_after < 5.0  # the drain timeout; in fact right after the slow requests
    assert failures == [], failures
    seen = {r.target for r in be.requests}
    assert not [p for p in retryable if p in seen], "a request reached the backend unanswered"
    assert len(done) >= 30
    assert [e["message"] for e in edge.events if "status" not in e][-2:] == [
        "draining",
        "edge stopped",
    ]


async def test_request_past_the_drain_timeout_is_cut(
    backend: tuple[RecordingBackend, Slowness],
) -> None:
    be, slow = backend
    with tempfile.TemporaryDirectory() as d:
        async with edge_process(config(be.address, "1s"), d) as edge:
            client = KeepAliveClient("127.0.0.1", edge.port())
            hanging = asyncio.create_task(client.request("GET", "/hang", {"Host": "app.test"}))
            await asyncio.wait_for(slow.arrived.wait(), 5)

            edge.send(signal.SIGTERM)
            term_at = time.monotonic()
            rc = await edge.wait_exit(10)
            exited_after = time.monotonic() - term_at
            with pytest.raises(ClosedBeforeResponse):
                await asyncio.wait_for(hanging, 5)
            await client.close()

    assert rc == 0, edge.stderr
    assert 0.9 <= exited_after < 5.0, exited_after
    messages = [str(e["message"]) for e in edge.events if "message" in e]
    assert any(m.startswith("drain timeout") for m in messages), messages
    assert messages[-1] == "edge stopped"
    cut = [e for e in edge.events if e.get("path") == "/hang"]
    assert len(cut) == 1 and cut[0]["error_kind"] == "client-disconnected", cut


async def test_sigterm_when_idle_exits_at_once(
    backend: tuple[RecordingBackend, Slowness],
) -> None:
    be, _ = backend
    with tempfile.TemporaryDirectory() as d:
        async with edge_process(config(be.address, "25s"), d) as edge:
            # An idle keep-alive connection must not hold the drain open.
            client = KeepAliveClient("127.0.0.1", edge.port())
            res = await client.request("GET", "/x", {"Host": "app.test"})
            assert res.status == 200
            edge.send(signal.SIGTERM)
            term_at = time.monotonic()
            rc = await edge.wait_exit(10)
            assert rc == 0, edge.stderr
            assert time.monotonic() - term_at < 2.0
            with pytest.raises(ClosedBeforeResponse):
                await client.request("GET", "/y", {"Host": "app.test"})
            await client.close()
