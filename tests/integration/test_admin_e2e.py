"""The admin listener of a whole running edge: probes, /metrics after real traffic, /status.

Readiness is tested against a DNS backend whose test nameserver first drops every query
(the resolver cannot have synced: /readyz is 503 and names the backend), then answers
(/readyz turns 200 and requests reach the endpoint the record names).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest

from kedge.edge.app import EdgeApp
from kedge.edge.config_parser import load_edge_config
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.dns_server import DnsTestServer
from tests.support.edge import RunningEdge, running_edge
from tests.support.ops_client import admin_get, curl, parse_metrics

EXPOSITION = "text/plain; version=0.0.4"


def edge_yaml(backend: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: b
    resolver:
      static:
        endpoints:
          - address: "{backend}"
            labels: {{zone: a}}
  - name: dead
    resolver:
      static:
        endpoints: ["127.0.0.1:9"]
routes:
  - name: r
    backend: b
    match: {{host: app.test}}
  - name: broken
    backend: dead
    match: {{host: dead.test}}
"""


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RunningEdge, RecordingBackend]]:
    async with recording_backend() as be, running_edge(edge_yaml(be.address)) as edge:
        yield edge, be


def admin_port(edge: RunningEdge) -> int:
    assert edge.app.admin is not None
    return edge.app.admin.bound_port


async def test_probes_and_admin_is_separate_from_proxy(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    port = admin_port(edge)
    assert port != edge.port()
    res = await curl(f"http://127.0.0.1:{port}/livez")
    assert res.status == 200 and res.body == b"ok"
    res = await curl(f"http://127.0.0.1:{port}/readyz")
    assert res.status == 200 and res.body == b"ready"
    res = await curl(f"http://127.0.0.1:{port}/nope")
    assert res.status == 404
    res = await curl("-X", "POST", f"http://127.0.0.1:{port}/livez")
    assert res.status == 405
    # The proxy listener does not serve admin paths: they are ordinary (unrouted) requests.
    res = await curl("-H", "Host: admin.test", f"{edge.url}/metrics")
    assert res.status == 404 and res.header("x-kedge-error-type") == "no-route"
    assert be.requests == []


async def test_metrics_after_traffic(setup: tuple[RunningEdge, RecordingBackend]) -> None:
    edge, be = setup
    for path in ("/a", "/b"):
        assert (await curl("-H", "Host: app.test", f"{edge.url}{path}")).status == 200
    assert (await curl("-H", "Host: nowhere.test", f"{edge.url}/")).status == 404
    assert (await curl("-H", "Host: dead.test", f"{edge.url}/")).status == 502
    res = await curl(f"http://127.0.0.1:{admin_port(edge)}/metrics")
    assert res.status == 200
    assert (res.header("content-type") or "").startswith(EXPOSITION)
    samples, types = parse_metrics(res.body.decode())

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    req = "kedge_requests_total"
    assert value(req, listener="http", route="r", backend="b", code="200") == 2
    assert value(req, listener="http", route="", backend="", code="404") == 1
    assert value(req, listener="http", route="broken", backend="dead", code="502") == 1
    assert sum(v for (n, _), v in samples.items() if n == req) == 4
    assert value("kedge_errors_total", kind="no-route") == 1
    assert value("kedge_errors_total", kind="upstream-connect") == 1
    assert value("kedge_errors_total", kind="bad-request") == 0
    assert value("kedge_connections_accepted_total", listener="http") == 4
    assert value("kedge_backend_endpoints", backend="b") == 1
    # Two curl processes, one pooled upstream connection.
    assert value("kedge_upstream_connections_opened_total", backend="b") == 1
    assert be.connections == 1
    assert (value("kedge_upstream_connect_failures_total", backend="dead") or 0) >= 1
    assert value("kedge_config_generation") == 1
    assert value("kedge_draining") == 0

    hist = "kedge_request_duration_seconds"
    assert types[hist] == "histogram"
    assert value(f"{hist}_count", route="r", backend="b") == 2
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == f"{hist}_bucket" and dict(labels).get("route") == "r"
    )
    assert buckets[-1] == (float("inf"), 2)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))  # cumulative
    total = value(f"{hist}_sum", route="r", backend="b")
    assert total is not None and 0 < total < 5

    # Naming rules: kedge_ prefix, counters end in _total, histograms are in seconds.
    assert types and all(name.startswith("kedge_") for name in types)
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
    assert all(n.startswith("kedge_") for n, _ in samples)


async def test_status_lists_backends_and_endpoints(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    assert (await curl("-H", "Host: app.test", f"{edge.url}/")).status == 200
    status, body = await admin_get(admin_port(edge), "/status")
    assert status == 200
    doc = orjson.loads(body)
    assert doc["generation"] == 1
    assert doc["draining"] is False
    assert doc["config"] == edge.config_path
    assert doc["listeners"] == {"http": edge.port()}
    assert doc["routes"] == 2
    assert set(doc["backends"]) == {"b", "dead"}
    b = doc["backends"]["b"]
    assert b["synced"] is True and b["balancer"] == "round_robin"
    (ep,) = b["endpoints"]
    assert ep["address"] == be.address
    assert ep["ready"] is True and ep["labels"] == {"zone": "a"} and ep["weight"] == 1
    assert ep["in_flight"] == 0 and ep["pool_idle"] == 1
    assert [e["address"] for e in doc["backends"]["dead"]["endpoints"]] == ["127.0.0.1:9"]


def dns_yaml(nameserver: str, port: int) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: bydns
    resolver:
      dns:
        name: svc.test
        port: {port}
        families: [A]
        nameservers: ["{nameserver}"]
        min_ttl: 100ms
        max_ttl: 1s
routes:
  - name: r
    backend: bydns
    match: {{host: app.test}}
"""


@asynccontextmanager
async def unready_edge(yaml_text: str) -> AsyncIterator[EdgeApp]:
    """An edge started without waiting for readiness (tests.support.edge waits for it)."""
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/edge.yaml"
        with open(path, "w") as f:
            f.write(yaml_text)
        app = EdgeApp(load_edge_config(path), config_path=path, watch_interval=0)
        await app.start()
        try:
            yield app
        finally:
            await app.aclose()


async def test_readyz_waits_for_the_dns_resolver() -> None:
    async with DnsTestServer() as dns, recording_backend() as be:
        dns.set_mode("drop")
        async with unready_edge(dns_yaml(str(dns.address), be.port)) as app:
            assert app.admin is not None
            port = app.admin.bound_port
            proxy = f"http://127.0.0.1:{app.listener_ports['http']}"
            async with asyncio.timeout(5):
                while dns.count("svc.test", "A") == 0:
                    await asyncio.sleep(0.01)
            status, body = await admin_get(port, "/readyz")
            assert status == 503
            assert b"bydns" in body, body
            assert (await admin_get(port, "/livez"))[0] == 200
            res = await curl("-H", "Host: app.test", f"{proxy}/early")
            assert res.status == 503 and res.header("x-kedge-error-type") == "no-endpoints"
            st = orjson.loads((await admin_get(port, "/status"))[1])
            assert st["backends"]["bydns"]["synced"] is False
            assert st["backends"]["bydns"]["endpoints"] == []

            # The nameserver starts answering: the resolver's retry syncs the backend.
            dns.set_a("svc.test", ["127.0.0.1"], ttl=30)
            dns.set_mode("answer")
            async with asyncio.timeout(15):
                while (await admin_get(port, "/readyz"))[0] != 200:
                    await asyncio.sleep(0.05)
            res = await curl("-H", "Host: app.test", f"{proxy}/late")
            assert res.status == 200, (res.status, res.body)
            assert [r.target for r in be.requests] == ["/late"]
            st = orjson.loads((await admin_get(port, "/status"))[1])
            assert [e["address"] for e in st["backends"]["bydns"]["endpoints"]] == [be.address]


async def test_a_backend_added_by_reload_that_never_resolves_keeps_the_edge_ready() -> None:
    """Readiness gates only the start: a reload adding a backend whose DNS never answers
    must not take every replica out of its Service; only that backend's route fails."""
    async with DnsTestServer() as dns, recording_backend() as be:
        dns.set_mode("drop")
        head = f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
backends:
  - name: good
    resolver: {{static: {{endpoints: ["{be.address}"]}}}}
"""
        good_route = "routes:\n  - {name: good, backend: good, match: {host: good.test}}\n"
        dns_backend = f"""  - name: bydns
    resolver:
      dns: {{name: svc.test, port: {be.port}, nameservers: ["{dns.address}"], families: [A]}}
"""
        dns_route = "  - {name: r, backend: bydns, match: {host: app.test}}\n"
        async with running_edge(head + good_route) as edge:
            assert edge.app.admin is not None
            port = edge.app.admin.bound_port
            assert (await admin_get(port, "/readyz"))[0] == 200
            edge.write_config(head + dns_backend + good_route + dns_route)
            assert await edge.app.reload("test") is True
            assert (await admin_get(port, "/readyz"))[0] == 200
            st = orjson.loads((await admin_get(port, "/status"))[1])
            assert st["backends"]["bydns"]["synced"] is False
            bad = await curl("-H", "Host: app.test", f"{edge.url}/x")
            assert bad.status == 503 and bad.header("x-kedge-error-type") == "no-endpoints"
            good = await curl("-H", "Host: good.test", f"{edge.url}/y")
            assert good.status == 200
