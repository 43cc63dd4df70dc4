"""The admin listener on a real socket: probes, /metrics, /status, via aiohttp and curl."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest

from kedge.core.metrics import MetricsRegistry
from kedge.edge.config import Address
from kedge.edge.observability.admin import AdminServer, make_admin_app, start_admin
from kedge.edge.observability.edge_metrics import EdgeMetrics

TIMEOUT = aiohttp.ClientTimeout(total=5)
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class EdgeState:
    """What the composition root would hand to the admin app, made controllable."""

    live: bool = True
    ready: bool = True
    reason: str = ""
    registry: MetricsRegistry = field(default_factory=MetricsRegistry)
    status: dict[str, object] = field(default_factory=dict)
    fail: bool = False

    def __post_init__(self) -> None:
        self.metrics = EdgeMetrics(self.registry)

    def render(self) -> bytes:
        if self.fail:
            raise RuntimeError("secret detail that must not leak")
        return self.registry.render()


@pytest.fixture
async def edge() -> AsyncIterator[tuple[EdgeState, AdminServer]]:
    state = EdgeState(status={"generation": 3, "listeners": ["web"]})
    app = make_admin_app(
        is_live=lambda: state.live,
        readiness=lambda: (state.ready, state.reason),
        render_metrics=state.render,
        status=lambda: state.status,
    )
    server = await start_admin(app, Address("127.0.0.1", 0))
    try:
        yield state, server
    finally:
        await server.aclose()


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.request(method, f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def _curl(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, Content-Type and body as curl sees them."""
    # -i puts the head on stdout before the body (curl 7.88 segfaulted writing the head
    # with -D /dev/stderr under pytest).
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", "--max-time", "5", f"http://127.0.0.1:{port}{path}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    ctype = next(
        line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("content-type:")
    )
    return status, ctype, body


async def test_bound_port_is_real(edge: tuple[EdgeState, AdminServer]) -> None:
    _, server = edge
    assert server.bound_port > 0
    assert (await _get(server.bound_port, "/livez"))[0] == 200


async def test_livez(edge: tuple[EdgeState, AdminServer]) -> None:
    state, server = edge
    assert await _get(server.bound_port, "/livez") == (200, "text/plain; charset=utf-8", b"ok")
    state.live = False
    assert (await _get(server.bound_port, "/livez"))[0] == 503


async def test_readyz_reports_the_reason(edge: tuple[EdgeState, AdminServer]) -> None:
    state, server = edge
    assert await _get(server.bound_port, "/readyz") == (200, "text/plain; charset=utf-8", b"ready")
    state.ready, state.reason = False, "backend api-pool has no endpoints"
    assert await _get(server.bound_port, "/readyz") == (
        503,
        "text/plain; charset=utf-8",
        b"backend api-pool has no endpoints",
    )


async def test_metrics_are_rendered_at_each_scrape(edge: tuple[EdgeState, AdminServer]) -> None:
    state, server = edge
    status, ctype, body = await _get(server.bound_port, "/metrics")
    assert (status, ctype) == (200, METRICS_TYPE)
    assert body == state.registry.render()
    assert b'kedge_requests_total{listener="web"' not in body
    state.metrics.requests.labels("web", "api", "api-pool", "200").inc()
    state.metrics.draining.set(1)
    body = (await _get(server.bound_port, "/metrics"))[2]
    assert (
        b'kedge_requests_total{listener="web",route="api",backend="api-pool",code="200"} 1\n'
        in body
    )
    assert b"\nkedge_draining 1\n" in body


async def test_status_is_json(edge: tuple[EdgeState, AdminServer]) -> None:
    _, server = edge
    status, ctype, body = await _get(server.bound_port, "/status")
    assert (status, ctype) == (200, "application/json")
    assert orjson.loads(body) == {"generation": 3, "listeners": ["web"]}


async def test_failing_callback_answers_500_without_details(
    edge: tuple[EdgeState, AdminServer],
) -> None:
    state, server = edge
    state.fail = True
    status, _, body = await _get(server.bound_port, "/metrics")
    assert status == 500
    assert b"secret" not in body


async def test_failing_readiness_check_is_not_ready() -> None:
    def readiness() -> tuple[bool, str]:
        raise RuntimeError("boom")

    app = make_admin_app(
        is_live=lambda: True, readiness=readiness, render_metrics=lambda: b"", status=dict
    )
    server = await start_admin(app, Address("127.0.0.1", 0))
    try:
        status, _, body = await _get(server.bound_port, "/readyz")
        assert status == 503
        assert body == b"readiness check failed: RuntimeError"
    finally:
        await server.aclose()


async def test_unknown_paths_and_methods(edge: tuple[EdgeState, AdminServer]) -> None:
    _, server = edge
    assert (await _get(server.bound_port, "/nope"))[0] == 404
    assert (await _get(server.bound_port, "/metrics", "POST"))[0] == 405
    assert (await _get(server.bound_port, "/livez", "HEAD"))[0] == 200


async def test_aiohttp_access_log_is_off(
    edge: tuple[EdgeState, AdminServer], caplog: pytest.LogCaptureFixture
) -> None:
    _, server = edge
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        await _get(server.bound_port, "/livez")
        await asyncio.sleep(0.05)  # aiohttp would log just after sending the response
    assert [r for r in caplog.records if r.name == "aiohttp.access"] == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_sees_the_same(edge: tuple[EdgeState, AdminServer]) -> None:
    state, server = edge
    state.metrics.config_generation.set(9)
    status, ctype, body = await _curl(server.bound_port, "/metrics")
    assert (status, ctype) == (200, METRICS_TYPE)
    assert b"\nkedge_config_generation 9\n" in body
    state.ready, state.reason = False, "draining"
    assert await _curl(server.bound_port, "/readyz") == (
        503,
        "text/plain; charset=utf-8",
        b"draining",
    )


async def test_aclose_stops_listening() -> None:
    app = make_admin_app(
        is_live=lambda: True,
        readiness=lambda: (True, ""),
        render_metrics=lambda: b"",
        status=dict,
    )
    server = await start_admin(app, Address("127.0.0.1", 0))
    port = server.bound_port
    assert (await _get(port, "/livez"))[0] == 200
    await server.aclose()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(port, "/livez")
