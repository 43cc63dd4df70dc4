"""Active health checks (HTTP, gRPC health protocol, TCP) and outlier ejection through a real
edge: real endpoints on 127.0.0.1, the edge's own checker task, and /status.

Health transitions are observed from inside: each health request records what the edge
thought of the endpoint when the request arrived (the result of the checks before it), so
the thresholds are asserted check by check, with no timing guesswork.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kedge.edge.config import Address
from kedge.edge.discovery.model import Add, Endpoint, Remove
from kedge.edge.forwarding.backend import Backend
from tests.support.backend import RecordedRequest, RecordingBackend, recording_backend
from tests.support.backend import simple_response as response
from tests.support.edge import RunningEdge, running_edge

HOST = {"host": "app.test"}


def edge_yaml(endpoints: list[str], backend_extra: str, protocol: str = "http1") -> str:
    listed = ", ".join(f'"{e}"' for e in endpoints)
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
backends:
  - name: app
    protocol: {protocol}
    resolver: {{static: {{endpoints: [{listed}]}}}}
    retries: {{attempts: 1}}
{backend_extra}
routes: [{{backend: app, match: {{host: app.test}}}}]
"""


def backend_of(edge: RunningEdge) -> Backend:
    return edge.app.state.backends["app"]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def status_of(edge: RunningEdge, session: aiohttp.ClientSession) -> dict[str, object]:
    async with session.get(edge.admin_url + "/status") as r:
        doc = await r.json()
    app: dict[str, object] = doc["backends"]["app"]
    return app


def by_address(app_status: dict[str, object]) -> dict[str, dict[str, object]]:
    endpoints = app_status["endpoints"]
    assert isinstance(endpoints, list)
    return {e["address"]: e for e in endpoints}


class Switchable:
    """An endpoint whose /healthz answers `health_status`, and 200 on any other path. Each
    health request records whether the edge held the endpoint available when it arrived."""

    def __init__(self) -> None:
        self.health_status = 200
        self.seen: list[tuple[int, bool]] = []  # (answer, available before this check)
        self.backend: Backend | None = None
        self.server: RecordingBackend | None = None

    async def respond(self, req: RecordedRequest, w: asyncio.StreamWriter) -> None:
        if req.target == "/healthz":
            assert self.backend is not None and self.server is not None
            self.seen.append((self.health_status, self.backend.health.available(self.key)))
            w.write(response(self.health_status, b"health"))
        else:
            w.write(response(200, b"served"))

    @property
    def key(self) -> str:
        assert self.server is not None
        return self.server.address

    def since(self, mark: int) -> list[bool]:
        """Whether the edge held the endpoint available at each check from `mark` on."""
        return [available for _, available in self.seen[mark:]]


@asynccontextmanager
async def switchable() -> AsyncIterator[Switchable]:
    s = Switchable()
    async with recording_backend(s.respond) as server:
        s.server = server
        yield s


HTTP_CHECK = """    health_check:
      http: {path: /healthz}
      interval: 30ms
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 3"""


async def test_http_endpoint_failing_its_health_path_is_marked_unhealthy_then_returns() -> None:
    async with (
        switchable() as a,
        recording_backend() as b,
        running_edge(edge_yaml([a.key, b.address], HTTP_CHECK)) as edge,
        aiohttp.ClientSession() as session,
    ):
        backend = a.backend = backend_of(edge)
        await eventually(lambda: len(a.seen) >= 2)
        assert backend.health.status(a.key)["health"] == "healthy"
        a.health_status = 503
        mark = len(a.seen)
        await eventually(lambda: len(a.seen) >= mark + 5)
        # unhealthy_threshold 3: the first three failures found it available, no later one.
        assert a.since(mark)[:5] == [True, True, True, False, False]
        assert [e.key for e in backend.usable_endpoints()] == [b.address]
        st = by_address(await status_of(edge, session))[a.key]
        assert st["health"] == "unhealthy" and st["last_check_error"] == "status 503"
        assert st["ejected"] is False
        a.health_status = 200
        mark = len(a.seen)
        await eventually(lambda: len(a.seen) >= mark + 4)
        # healthy_threshold 2: unavailable before the first two passes, available after.
        assert a.since(mark)[:4] == [False, False, True, True]
        assert len(backend.usable_endpoints()) == 2
        assert by_address(await status_of(edge, session))[a.key]["health"] == "healthy"
        async with session.get(edge.url + "/x", headers=HOST) as r:
            assert r.status == 200


@asynccontextmanager
async def grpc_health_server() -> AsyncIterator[tuple[str, health.aio.HealthServicer]]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(None)


GRPC_CHECK = """    health_check:
      grpc: {{service: {service}}}
      interval: 30ms
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 2"""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_grpc_health_protocol_follows_the_servicer() -> None:
    async with (
        grpc_health_server() as (address, servicer),
        running_edge(edge_yaml([address], GRPC_CHECK.format(service="kedge.Test"), "h2c")) as edge,
    ):
        backend = backend_of(edge)

        def health_is(status: str) -> Callable[[], bool]:
            return lambda: backend.health.status(address)["health"] == status

        # Not registered yet: the servicer answers NOT_FOUND, a failure at the first check.
        await eventually(health_is("unhealthy"))
        assert "grpc-status 5" in str(backend.health.status(address)["last_check_error"])
        await servicer.set("kedge.Test", SERVING)
        await eventually(health_is("healthy"))
        await servicer.set("kedge.Test", NOT_SERVING)
        await eventually(health_is("unhealthy"))
        assert "not SERVING" in str(backend.health.status(address)["last_check_error"])
        await servicer.set("kedge.Test", SERVING)
        await eventually(health_is("healthy"))


async def test_grpc_overall_health_and_a_server_that_is_gone() -> None:
    overall = GRPC_CHECK.format(service='""')
    async with (
        grpc_health_server() as (address, _),
        running_edge(edge_yaml([address], overall, "h2c")) as e,
    ):
        backend = backend_of(e)
        # The overall server status ("") is SERVING by default in grpcio's servicer.
        await eventually(lambda: backend.health.status(address)["health"] == "healthy")
    # (the server stopped above; a fresh edge finds it down at once)
    async with running_edge(edge_yaml([address], overall, "h2c")) as e:
        backend = backend_of(e)
        await eventually(lambda: backend.health.status(address)["health"] == "unhealthy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TCP_CHECK = """    health_check:
      tcp: {}
      interval: 30ms
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 2"""


async def test_tcp_check_follows_whether_the_port_accepts() -> None:
    port = free_port()
    down = f"127.0.0.1:{port}"
    async with (
        recording_backend() as up,
        running_edge(edge_yaml([up.address, down], TCP_CHECK)) as edge,
        aiohttp.ClientSession() as session,
    ):
        backend = backend_of(edge)
        await eventually(lambda: backend.health.status(down)["health"] == "unhealthy")
        await eventually(lambda: backend.health.status(up.address)["health"] == "healthy")
        assert [e.key for e in backend.usable_endpoints()] == [up.address]
        assert (await status_of(edge, session))["panic"] is False
        assert up.requests == []  # a TCP check sends nothing

        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        server = await asyncio.start_server(accept, "127.0.0.1", port)
        try:
            await eventually(lambda: backend.health.status(down)["health"] == "healthy")
            assert len(backend.usable_endpoints()) == 2
        finally:
            server.close()
            await server.wait_closed()


OUTLIER = """    outlier_detection: {consecutive_failures: 3, base_ejection: 10s}"""


async def failing(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    w.write(response(500, b"broken"))


async def test_endpoint_answering_5xx_is_ejected() -> None:
    async with (
        recording_backend(failing) as bad,
        recording_backend() as good,
        running_edge(edge_yaml([bad.address, good.address], OUTLIER)) as edge,
        aiohttp.ClientSession() as session,
    ):
        backend = backend_of(edge)
        statuses = []
        while len(bad.requests) < 3:  # round robin: bounded by 6 requests
            async with session.get(edge.url + "/", headers=HOST) as r:
                statuses.append(r.status)
            assert len(statuses) <= 6
        assert statuses.count(500) == 3  # 5xx answers pass through (no retry of a 5xx)
        assert [e.key for e in backend.usable_endpoints()] == [good.address]
        st = await status_of(edge, session)
        bad_status = by_address(st)[bad.address]
        assert bad_status["ejected"] is True and bad_status["ejections"] == 1
        assert 9.0 < float(bad_status["ejected_for_s"]) <= 10.0  # type: ignore[arg-type]
        assert by_address(st)[good.address]["ejected"] is False
        assert st["panic"] is False


async def test_traffic_avoids_an_ejected_endpoint() -> None:
    async with (
        recording_backend(failing) as bad,
        recording_backend() as good,
        running_edge(edge_yaml([bad.address, good.address], OUTLIER)) as edge,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(20):
            async with session.get(edge.url + "/", headers=HOST) as r:
                await r.read()
        assert len(bad.requests) == 3
        assert len(good.requests) == 17


async def test_connect_failures_eject_and_at_most_half_are_ejected() -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    async with (
        recording_backend() as alive,
        running_edge(edge_yaml([*dead, alive.address], OUTLIER)) as edge,
        aiohttp.ClientSession() as session,
    ):
        backend = backend_of(edge)
        for _ in range(40):  # 502s from the dead ones (retries off), 200s from the live one
            async with session.get(edge.url + "/", headers=HOST) as r:
                await r.read()
        st = by_address(await status_of(edge, session))
        ejected = sorted(a for a, e in st.items() if e["ejected"])
        assert len(ejected) == 2  # of 4: 50%, though three endpoints keep failing
        assert set(ejected) < set(dead)
        (left,) = set(dead) - set(ejected)
        assert st[left]["consecutive_failures"] >= 3  # would have been ejected but for the cap
        assert sorted(e.key for e in backend.usable_endpoints()) == sorted([left, alive.address])


PANIC_CHECK = """    health_check:
      http: {{path: /healthz}}
      interval: 30ms
    panic_threshold: {threshold}"""


async def unhealthy_but_serving(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    w.write(response(503 if req.target == "/healthz" else 200, b"served"))


@asynccontextmanager
async def all_unhealthy(threshold: int) -> AsyncIterator[tuple[RunningEdge, list[str]]]:
    async with (
        recording_backend(unhealthy_but_serving) as a,
        recording_backend(unhealthy_but_serving) as b,
        running_edge(
            edge_yaml([a.address, b.address], PANIC_CHECK.format(threshold=threshold))
        ) as edge,
    ):
        backend = backend_of(edge)
        await eventually(lambda: backend.health.available_count() == 0)
        yield edge, [a.address, b.address]


async def test_panic_when_every_endpoint_is_unhealthy_traffic_still_flows() -> None:
    async with all_unhealthy(50) as (edge, addresses), aiohttp.ClientSession() as session:
        backend = backend_of(edge)
        assert sorted(e.key for e in backend.usable_endpoints()) == sorted(addresses)
        st = await status_of(edge, session)
        assert st["panic"] is True
        assert {e["health"] for e in by_address(st).values()} == {"unhealthy"}
        for _ in range(4):
            async with session.get(edge.url + "/", headers=HOST) as r:
                assert r.status == 200 and await r.read() == b"served"


async def test_without_panic_mode_nothing_is_usable() -> None:
    async with all_unhealthy(0) as (edge, _), aiohttp.ClientSession() as session:
        assert backend_of(edge).usable_endpoints() == ()
        assert (await status_of(edge, session))["panic"] is False


async def test_without_panic_mode_requests_get_503() -> None:
    async with (
        all_unhealthy(0) as (edge, _),
        aiohttp.ClientSession() as session,
        session.get(edge.url + "/", headers=HOST) as r,
    ):
        assert r.status == 503
        assert r.headers["x-kedge-error-type"] == "no-endpoints"


async def test_checker_follows_endpoint_updates_and_stops_with_the_backend() -> None:
    async with switchable() as a, recording_backend() as b:
        async with running_edge(edge_yaml([b.address], HTTP_CHECK)) as edge:
            backend = a.backend = backend_of(edge)
            assert a.server is not None
            backend.apply(Add((Endpoint(Address("127.0.0.1", a.server.port)),)))
            await eventually(lambda: len(a.seen) >= 1)  # a new endpoint is checked at once
            backend.apply(Remove((a.key,)))
            seen = len(a.seen)
            await asyncio.sleep(0.2)  # several intervals: no check of a removed endpoint
            assert len(a.seen) <= seen + 1  # (one may have been in flight)
            assert backend.health.status(a.key)["health"] == "unknown"
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("kedge-health-")]
        assert tasks == []
