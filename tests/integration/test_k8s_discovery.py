"""Route discovery through a real edge against the fake Kubernetes API (tests/support/fake_kube).

Each test runs the edge with `kubernetes.discovery` in the test's loop, a FakeKube holding
labelled Services and their EndpointSlices, and real backends (recording HTTP/1.1 servers and
grpc.aio servers) whose 127.0.0.1 ports the slices name. Requests go through the edge's
listener with the Service's host and port in `Host` (or the absolute-form URI, or the gRPC
`:authority`); what each backend received shows which route served them. Changes in the fake
reach the edge over real list/watch streams, so waits for them are bounded polls of the
edge's own state (discovery settles for 50 ms, then swaps a new route table in).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from multidict import CIMultiDict

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.fake_kube import FakeKube, Port, endpoint, endpoint_slice, service
from tests.support.grpc_hello import grpc_channel, grpc_hello_server
from tests.support.oidc_provider import SigningKey, rsa_key

SUFFIX = "kube.test"
LABEL = "kedge.io/kedge-exposed"
HTTP = Port("http", 80, 8080)
GRPC = Port("grpc", 9090)
METRICS = Port("metrics", 9100)
WAIT = 5.0  # every wait for the edge to catch up with the fake is bounded by this
TIMEOUT = aiohttp.ClientTimeout(total=10)


# -- objects -------------------------------------------------------------------------------


def exposed(
    name: str,
    namespace: str = "apps",
    *,
    ports: Sequence[Port] = (HTTP,),
    annotations: Mapping[str, str] | None = None,
    labelled: bool = True,
) -> dict[str, Any]:
    """A Service, labelled for discovery unless `labelled` is false."""
    labels = {LABEL: "true", "app": name} if labelled else {"app": name}
    return service(name, namespace, ports=ports, labels=labels, annotations=annotations)


def pod_slice(
    svc: str,
    namespace: str = "apps",
    *,
    pod: str = "a",
    http: int | None = None,
    grpc_port: int | None = None,
    extra: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One pod on 127.0.0.1 as its own EndpointSlice (each pod listens on its own port):
    the ports named `http`, `grpc` and those in `extra` (name -> port)."""
    ports = [Port("http", http)] if http is not None else []
    ports += [Port("grpc", grpc_port)] if grpc_port is not None else []
    ports += [Port(name, number) for name, number in (extra or {}).items()]
    return endpoint_slice(
        f"{svc}-{pod}",
        namespace,
        service=svc,
        endpoints=[endpoint("127.0.0.1", zone="zone-a", pod=f"{svc}-{pod}")],
        ports=ports,
    )


# -- the edge ------------------------------------------------------------------------------


def edge_yaml(
    kubeconfig: Path,
    *,
    namespaces: Sequence[str] = (),
    settle: str = "50ms",
    backends: Sequence[str] = (),
    routes: Sequence[str] = (),
    top: str = "",
    discovery: bool = True,
) -> str:
    ns = f", namespaces: [{', '.join(namespaces)}]" if namespaces else ""
    section = f"discovery: {{domain_suffix: {SUFFIX}, settle: {settle}{ns}}}" if discovery else ""
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
kubernetes:
  kubeconfig: "{kubeconfig}"
  watch_timeout: 30s
  backoff_initial: 50ms
  backoff_max: 200ms
  {section}
backends: [{", ".join(backends)}]
routes: [{", ".join(routes)}]
{top}
"""


def static_backend(name: str, address: str, protocol: str = "http1") -> str:
    resolver = f'{{static: {{endpoints: ["{address}"]}}}}'
    return f"{{name: {name}, protocol: {protocol}, resolver: {resolver}}}"


# Yields as soon as the edge started, ready or not (for the readiness tests).
started_edge = partial(running_edge, wait_until_ready=False)


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.5) as k:
        yield k


@pytest.fixture
def kubeconfig(kube: FakeKube, tmp_path: Path) -> Path:
    return kube.write_kubeconfig(tmp_path / "kubeconfig")


# -- clients -------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def error_type(self) -> str | None:
        return self.headers.get("X-Kedge-Error-Type")


async def send(
    edge: RunningEdge,
    host: str,
    path: str = "/",
    *,
    headers: Mapping[str, str] | None = None,
    absolute: bool = False,
) -> Reply:
    """GET through the edge: origin-form with `Host: host`, or absolute-form (edge as proxy)."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        if absolute:
            request = s.get(f"http://{host}{path}", proxy=edge.url, headers=headers)
        else:
            request = s.get(edge.url + path, headers={"Host": host, **(headers or {})})
        async with request as r:
            return Reply(r.status, CIMultiDict(r.headers), await r.read())


async def admin(edge: RunningEdge, path: str) -> Reply:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(edge.admin_url + path) as r,
    ):
        return Reply(r.status, CIMultiDict(r.headers), await r.read())


async def status_doc(edge: RunningEdge) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((await admin(edge, "/status")).body)
    return doc


async def metric(edge: RunningEdge, name: str, **labels: str) -> float | None:
    text = (await admin(edge, "/metrics")).body.decode()
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m is None or m[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2] or ""))
        if found == labels:
            return float(m[3])
    return None


def events(edge: RunningEdge, message: str) -> list[dict[str, Any]]:
    out = []
    for line in edge.log_lines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("message") == message:
                out.append(doc)
    return out


async def say_hello(edge: RunningEdge, authority: str, name: str = "x") -> str:
    async with grpc_channel(f"127.0.0.1:{edge.port()}", authority=authority) as ch:
        reply = await hello_pb2_grpc.GreeterStub(ch).SayHello(
            hello_pb2.HelloRequest(name=name), timeout=5
        )
        return str(reply.name)


async def grpc_code(edge: RunningEdge, authority: str, *, ping: bool = False) -> grpc.StatusCode:
    """The status of one call (Greeter.SayHello, or Other.Ping) through the edge."""
    async with grpc_channel(f"127.0.0.1:{edge.port()}", authority=authority) as ch:
        try:
            if ping:
                await hello_pb2_grpc.OtherStub(ch).Ping(hello_pb2.HelloRequest(), timeout=5)
            else:
                await hello_pb2_grpc.GreeterStub(ch).SayHello(hello_pb2.HelloRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


# -- waiting -------------------------------------------------------------------------------


async def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll the edge's (cheap, in-process) state until `check()` holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.02)


def route_names(edge: RunningEdge) -> list[str]:
    return [r.name for r in edge.app.state.config.routes]


def has_route_prefix(edge: RunningEdge, prefix: str) -> bool:
    return any(r.startswith(prefix) for r in route_names(edge))


async def until_routes(edge: RunningEdge, *names: str) -> None:
    """Wait until the edge's whole route table is exactly `names`, in this order."""
    await until(lambda: route_names(edge) == list(names), f"routes {list(names)}")


def host(svc: str, namespace: str = "apps") -> str:
    return f"{svc}.{namespace}.{SUFFIX}"


def targets(backend: RecordingBackend) -> list[str]:
    return [r.target for r in backend.requests]


# -- tests ---------------------------------------------------------------------------------


async def test_exposed_service_serves_http_and_grpc_ports(kube: FakeKube, kubeconfig: Path) -> None:
    async with (
        recording_backend() as pod_a,
        recording_backend() as pod_b,
        grpc_hello_server(name="web-grpc") as greeter,
    ):
        kube.apply(exposed("web", ports=[HTTP, GRPC, METRICS]))
        kube.apply(pod_slice("web", pod="a", http=pod_a.port, grpc_port=greeter.port))
        kube.apply(pod_slice("web", pod="b", http=pod_b.port))
        async with running_edge(edge_yaml(kubeconfig)) as edge:
            # Ready means discovered: no wait needed before the first request.
            assert route_names(edge) == ["discovered:apps/web:http", "discovered:apps/web:grpc"]
            for i in range(4):
                r = await send(edge, host("web"), f"/plain/{i}")
                assert r.status == 200 and r.body == b"hello from backend"
            # Both pods served (round robin over the merged slices).
            assert len(pod_a.requests) == 2 and len(pod_b.requests) == 2
            assert pod_a.requests[0].header("host") == host("web")
            r = await send(edge, f"{host('web')}:80", "/explicit-port")
            assert r.status == 200
            r = await send(edge, host("web"), "/absolute", absolute=True)
            assert r.status == 200
            assert {"/explicit-port", "/absolute"} <= set(targets(pod_a) + targets(pod_b))

            # The route matches the Service port, not the pods' port; unnamed-protocol
            # ports (metrics) are not published.
            for other in (f"{host('web')}:8080", f"{host('web')}:9100", "web.apps.other.test"):
                r = await send(edge, other, "/nope")
                assert (r.status, r.error_type) == (404, "no-route"), other
            assert "/nope" not in targets(pod_a) + targets(pod_b)

            # The grpc port: gRPC calls with the Service's authority reach the pod's server.
            assert await say_hello(edge, f"{host('web')}:9090", "hi") == "web-grpc:hi"
            assert greeter.methods() == ["/kedge.e2e.Greeter/SayHello"]
            # A plain request to the grpc port matches no route (gRPC calls only).
            r = await send(edge, f"{host('web')}:9090", "/plain")
            assert (r.status, r.error_type) == (404, "no-route")

            doc = await status_doc(edge)
            assert doc["discovery"] == {
                "services": 1,
                "routes": ["discovered:apps/web:http", "discovered:apps/web:grpc"],
                "problems": [],
            }
            web_http = doc["backends"]["k8s:apps/web:http"]
            assert sorted(e["address"] for e in web_http["endpoints"]) == sorted(
                [pod_a.address, pod_b.address]
            )
            assert [e["address"] for e in doc["backends"]["k8s:apps/web:grpc"]["endpoints"]] == [
                greeter.address
            ]
            assert await metric(edge, "kedge_discovered_routes") == 2
            assert await metric(edge, "kedge_discovery_problems", kind="invalid") == 0
            # All ports of the Service share one EndpointSlice watch.
            assert len(kube.open_watches("endpointslices")) == 1
            assert kube.count_requests("list", "endpointslices") == 1

            # Endpoint changes still flow: pod b leaves, pod a takes all the traffic.
            kube.delete("endpointslices", "apps", "web-b")
            backend = edge.app.state.backends["k8s:apps/web:http"]
            await until(lambda: len(backend.endpoints.endpoints) == 1, "pod b removed")
            before = len(pod_b.requests)
            for _ in range(3):
                assert (await send(edge, host("web"), "/after")).status == 200
            assert len(pod_b.requests) == before


async def test_hand_written_routes_win_and_conflicts_are_reported(
    kube: FakeKube, kubeconfig: Path
) -> None:
    async with (
        recording_backend() as pinned,
        recording_backend() as pod,
    ):
        kube.apply(exposed("web", ports=[HTTP, Port("http-alt", 8081)]))
        kube.apply(pod_slice("web", http=pod.port, extra={"http-alt": pod.port}))
        yaml_text = edge_yaml(
            kubeconfig,
            backends=[
                static_backend("pinned", pinned.address),
            ],
            routes=[f"{{name: pinned, backend: pinned, match: {{host: {host('web')}, port: 80}}}}"],
        )
        async with running_edge(yaml_text) as edge:
            assert route_names(edge) == ["pinned", "discovered:apps/web:http-alt"]
            r = await send(edge, host("web"), "/which")
            assert r.status == 200
            assert targets(pinned) == ["/which"] and pod.requests == []
            r = await send(edge, f"{host('web')}:8081", "/alt")
            assert r.status == 200 and targets(pod) == ["/alt"]

            problems = (await status_doc(edge))["discovery"]["problems"]
            assert len(problems) == 1
            assert problems[0]["service"] == "apps/web" and problems[0]["kind"] == "conflict"
            assert "route 'pinned'" in problems[0]["message"]
            assert f"{host('web')}:80" in problems[0]["message"]
            assert await metric(edge, "kedge_discovery_problems", kind="conflict") == 1
            assert await metric(edge, "kedge_discovered_routes") == 1
            skipped = events(edge, "discovery skipped")
            assert [(e["service"], e["kind"]) for e in skipped] == [("apps/web", "conflict")]

            # Another rebuild (a new Service) keeps the order and logs the conflict once only.
            kube.apply(exposed("api"))
            await until_routes(
                edge, "pinned", "discovered:apps/api:http", "discovered:apps/web:http-alt"
            )
            assert len(events(edge, "discovery skipped")) == 1
            assert await metric(edge, "kedge_discovery_problems", kind="conflict") == 1


async def test_hand_written_routes_hiding_generated_ones_are_conflicts(
    kube: FakeKube, kubeconfig: Path
) -> None:
    """A hand-written route without `port` serves every port of its host, and one without
    gRPC methods serves gRPC calls too: the generated routes they hide are conflicts
    (reported, left out), not silently dead entries of the table."""
    async with (
        recording_backend() as pinned,
        recording_backend() as pod,
        grpc_hello_server(name="hand") as hand,
        grpc_hello_server(name="pod") as pod_grpc,
    ):
        for name in ("web", "rpc"):
            kube.apply(exposed(name, ports=[HTTP, GRPC]))
            kube.apply(pod_slice(name, http=pod.port, grpc_port=pod_grpc.port))
        yaml_text = edge_yaml(
            kubeconfig,
            backends=[
                static_backend("pinned", pinned.address),
                static_backend("hand", hand.address, "h2c"),
            ],
            routes=[
                f"{{name: pinned, backend: pinned, match: {{host: {host('web')}}}}}",
                f"{{name: rpc-plain, backend: hand, match: {{host: {host('rpc')}, port: 9090}}}}",
            ],
        )
        async with running_edge(yaml_text) as edge:
            assert route_names(edge) == ["pinned", "rpc-plain", "discovered:apps/rpc:http"]
            assert (await send(edge, host("web"), "/which")).status == 200
            assert targets(pinned) == ["/which"] and pod.requests == []
            assert await say_hello(edge, f"{host('rpc')}:9090", "c") == "hand:c"
            assert pod_grpc.calls == []
            assert (await send(edge, host("rpc"), "/rpc-http")).status == 200
            assert targets(pod) == ["/rpc-http"]

            problems = (await status_doc(edge))["discovery"]["problems"]
            conflicts = [(p["service"], p["kind"], p["message"].split()[0]) for p in problems]
            assert conflicts == [
                ("apps/rpc", "conflict", f"{host('rpc')}:9090"),
                ("apps/web", "conflict", f"{host('web')}:80"),
                ("apps/web", "conflict", f"{host('web')}:9090"),
            ]
            assert "route 'pinned'" in problems[2]["message"]
            assert await metric(edge, "kedge_discovery_problems", kind="conflict") == 3


async def test_route_order_is_the_same_for_the_same_services_across_restarts(
    kube: FakeKube, kubeconfig: Path
) -> None:
    """Services added one by one, out of order, while an edge runs give exactly the table a
    fresh edge builds from the same Services at once: hand-written first, then by namespace,
    Service and port."""
    hand = static_backend("hand", "127.0.0.1:9")
    yaml_text = edge_yaml(
        kubeconfig,
        backends=[hand],
        routes=[f"{{name: hand, backend: hand, match: {{host: hand.{SUFFIX}}}}}"],
    )
    expected = [
        "hand",
        "discovered:apps/alpha:http",
        "discovered:apps/alpha:grpc",
        "discovered:apps/zeta:http",
        "discovered:other/beta:http",
    ]
    async with running_edge(yaml_text) as first:
        assert route_names(first) == ["hand"]
        for svc in (
            exposed("beta", "other"),
            exposed("zeta"),
            exposed("alpha", ports=[HTTP, GRPC]),
        ):
            kube.apply(svc)
            prefix = f"discovered:{svc['metadata']['namespace']}/{svc['metadata']['name']}:"
            await until(partial(has_route_prefix, first, prefix), prefix)
        await until_routes(first, *expected)
        table = first.app.state.config.routes
        async with running_edge(yaml_text) as second:
            assert route_names(second) == expected
            assert [(r.name, r.backend, r.match) for r in second.app.state.config.routes] == [
                (r.name, r.backend, r.match) for r in table
            ]


async def test_a_burst_of_changes_is_one_rebuild(kube: FakeKube, kubeconfig: Path) -> None:
    async with running_edge(edge_yaml(kubeconfig, settle="300ms")) as edge:
        generation = edge.app.state.generation
        for i in range(5):
            kube.apply(exposed(f"svc{i}"))
        await until(lambda: len(route_names(edge)) == 5, "five routes")
        assert edge.app.state.generation == generation + 1
        assert await metric(edge, "kedge_discovered_routes") == 5


async def test_service_relabelled_on_and_off(kube: FakeKube, kubeconfig: Path) -> None:
    async with recording_backend() as pod:
        kube.apply(exposed("web", labelled=False))
        kube.apply(pod_slice("web", http=pod.port))
        async with running_edge(edge_yaml(kubeconfig)) as edge:
            r = await send(edge, host("web"), "/before")
            assert (r.status, r.error_type) == (404, "no-route")
            assert kube.open_watches("endpointslices") == []

            for round_ in range(2):
                kube.apply(exposed("web"))
                await until_routes(edge, "discovered:apps/web:http")
                r = await send(edge, host("web"), f"/on/{round_}")
                assert r.status == 200
                assert targets(pod)[-1] == f"/on/{round_}"
                assert await metric(edge, "kedge_discovered_routes") == 1

                kube.apply(exposed("web", labelled=False))
                await until_routes(edge)
                r = await send(edge, host("web"), f"/off/{round_}")
                assert (r.status, r.error_type) == (404, "no-route")
                assert f"/off/{round_}" not in targets(pod)
                assert "k8s:apps/web:http" not in edge.app.state.backends
                assert await metric(edge, "kedge_discovered_routes") == 0
                # The retired backend's EndpointSlice watch is closed, not leaked.
                await kube.wait_for_watches(0, "endpointslices")

            # Deleting a labelled Service withdraws its routes too.
            kube.apply(exposed("web"))
            await until_routes(edge, "discovered:apps/web:http")
            kube.delete("services", "apps", "web")
            await until_routes(edge)
            assert (await send(edge, host("web"), "/deleted")).status == 404


async def test_malformed_services_are_reported_and_never_stall_the_others(
    kube: FakeKube, kubeconfig: Path
) -> None:
    async with recording_backend() as good_pod, recording_backend() as late_pod:
        kube.apply(exposed("good"))
        kube.apply(pod_slice("good", http=good_pod.port))
        kube.apply(exposed("bad-host", annotations={"kedge.io/host": "not_a host!"}))
        kube.apply(exposed("no-port", ports=[METRICS, Port("admin", 8000)]))
        kube.apply(exposed("bad-auth", annotations={"kedge.io/anonymous": "yes"}))
        kube.apply(exposed("needs-auth", annotations={"kedge.io/permissions": "read"}))
        async with running_edge(edge_yaml(kubeconfig)) as edge:
            assert route_names(edge) == ["discovered:apps/good:http"]
            assert (await send(edge, host("good"), "/g")).status == 200
            assert targets(good_pod) == ["/g"]

            problems = (await status_doc(edge))["discovery"]["problems"]
            by_service = {p["service"]: p for p in problems}
            assert sorted(by_service) == [
                "apps/bad-auth",
                "apps/bad-host",
                "apps/needs-auth",
                "apps/no-port",
            ]
            assert all(p["kind"] == "invalid" for p in problems)
            assert "not a DNS name" in by_service["apps/bad-host"]["message"]
            assert "no port is named" in by_service["apps/no-port"]["message"]
            assert "true or false" in by_service["apps/bad-auth"]["message"]
            assert "auth" in by_service["apps/needs-auth"]["message"]
            assert await metric(edge, "kedge_discovery_problems", kind="invalid") == 4
            logged = events(edge, "discovery skipped")
            assert sorted(e["service"] for e in logged) == sorted(by_service)
            assert all(e["level"] == "warning" and e["reason"] for e in logged)

            # A new good Service after the bad ones exist: published, and served.
            kube.apply(exposed("late"))
            kube.apply(pod_slice("late", http=late_pod.port))
            await until_routes(edge, "discovered:apps/good:http", "discovered:apps/late:http")
            await until(
                lambda: bool(edge.app.state.backends["k8s:apps/late:http"].endpoints.ready),
                "late's endpoint",
            )
            assert (await send(edge, host("late"), "/l")).status == 200
            assert targets(late_pod) == ["/l"]
            # ... and the good one keeps following its endpoints.
            kube.apply(pod_slice("good", http=late_pod.port))  # pod "a" moved to another port
            good = "k8s:apps/good:http"
            await until(
                lambda: (
                    [e.key for e in edge.app.state.backends[good].endpoints.endpoints]
                    == [late_pod.address]
                ),
                "good's new endpoint",
            )
            assert (await send(edge, host("good"), "/moved")).status == 200
            assert targets(late_pod)[-1] == "/moved"
            assert len(events(edge, "discovery skipped")) == 4  # each logged once

            # Fixing a bad Service publishes it and clears its problem.
            kube.apply(exposed("bad-host", annotations={"kedge.io/host": "fixed.example.test"}))
            await until(
                lambda: "discovered:apps/bad-host:http" in route_names(edge), "bad-host fixed"
            )
            assert await metric(edge, "kedge_discovery_problems", kind="invalid") == 3
            assert await metric(edge, "kedge_discovered_routes") == 3


async def test_only_the_listed_namespaces_are_watched(kube: FakeKube, kubeconfig: Path) -> None:
    async with recording_backend() as pod:
        for ns in ("apps", "shop", "other"):
            kube.apply(exposed("web", ns))
            kube.apply(pod_slice("web", ns, http=pod.port))
        async with running_edge(edge_yaml(kubeconfig, namespaces=["apps", "shop"])) as edge:
            assert route_names(edge) == ["discovered:apps/web:http", "discovered:shop/web:http"]
            watches = await kube.wait_for_watches(2, "services")
            assert sorted((w.namespace, w.label_selector) for w in watches) == [
                ("apps", LABEL),
                ("shop", LABEL),
            ]
            service_requests = [r for r in kube.requests if r.resource == "services"]
            assert {r.namespace for r in service_requests} == {"apps", "shop"}
            assert kube.count_requests("list", "services", "apps") == 1
            assert kube.count_requests("list", "services", "shop") == 1

            assert (await send(edge, host("web", "shop"), "/shop")).status == 200
            r = await send(edge, host("web", "other"), "/other")
            assert (r.status, r.error_type) == (404, "no-route")

            # Changes in an unwatched namespace never reach the edge; watched ones do.
            generation = edge.app.state.generation
            kube.apply(exposed("api", "other"))
            kube.apply(exposed("api", "shop"))
            await until_routes(
                edge,
                "discovered:apps/web:http",
                "discovered:shop/api:http",
                "discovered:shop/web:http",
            )
            assert edge.app.state.generation == generation + 1
            assert {r.namespace for r in kube.requests if r.resource == "services"} == {
                "apps",
                "shop",
            }


async def test_host_and_grpc_methods_annotations(kube: FakeKube, kubeconfig: Path) -> None:
    async with recording_backend() as pod, grpc_hello_server(name="g") as greeter:
        notes = {
            "kedge.io/host": "Hello.Example.Test",
            "kedge.io/grpc-methods": "kedge.e2e.Greeter/SayHello, kedge.e2e.Greeter/Bidi",
        }
        kube.apply(exposed("greet", ports=[HTTP, GRPC], annotations=notes))
        kube.apply(pod_slice("greet", http=pod.port, grpc_port=greeter.port))
        async with running_edge(edge_yaml(kubeconfig)) as edge:
            route = edge.app.state.config.routes[1]
            assert route.match.host == "hello.example.test"
            assert route.match.grpc_methods == (
                "kedge.e2e.Greeter/SayHello",
                "kedge.e2e.Greeter/Bidi",
            )
            assert (await send(edge, "hello.example.test", "/h")).status == 200
            assert targets(pod) == ["/h"]
            # The annotation replaces the generated host.
            r = await send(edge, host("greet"), "/default-host")
            assert (r.status, r.error_type) == (404, "no-route")

            assert await say_hello(edge, "hello.example.test:9090", "m") == "g:m"
            # A method outside the annotation's globs matches no route.
            code = await grpc_code(edge, "hello.example.test:9090", ping=True)
            assert code == grpc.StatusCode.UNIMPLEMENTED
            assert greeter.methods() == ["/kedge.e2e.Greeter/SayHello"]

            # Changing the annotation takes effect on the next rebuild.
            notes["kedge.io/grpc-methods"] = "kedge.e2e.Other"
            kube.apply(exposed("greet", ports=[HTTP, GRPC], annotations=notes))
            await until(
                lambda: edge.app.state.config.routes[1].match.grpc_methods == ("kedge.e2e.Other",),
                "new grpc-methods",
            )
            assert await grpc_code(edge, "hello.example.test:9090", ping=True) == grpc.StatusCode.OK
            code = await grpc_code(edge, "hello.example.test:9090")
            assert code == grpc.StatusCode.UNIMPLEMENTED
            assert greeter.methods() == ["/kedge.e2e.Greeter/SayHello", "/kedge.e2e.Other/Ping"]


@asynccontextmanager
async def jwks_server(key: SigningKey) -> AsyncIterator[str]:
    """An OIDC issuer's key set on 127.0.0.1 (`<issuer>/jwks`); yields the issuer URL."""

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [key.public_jwk]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_auth_annotations(kube: FakeKube, kubeconfig: Path) -> None:
    key = rsa_key("k1")
    async with jwks_server(key) as issuer, recording_backend() as pod:
        kube.apply(exposed("open", annotations={"kedge.io/anonymous": "true"}))
        kube.apply(exposed("plain"))
        kube.apply(exposed("locked", annotations={"kedge.io/permissions": "read, admin"}))
        for name in ("open", "plain", "locked"):
            kube.apply(pod_slice(name, http=pod.port))
        auth = f"""
auth:
  issuers:
    - {{name: op, issuer: "{issuer}", audiences: [kedge], jwks_url: "{issuer}/jwks"}}
"""
        now = int(time.time())

        def token(*permissions: str) -> dict[str, str]:
            claims = {"iss": issuer, "aud": "kedge", "sub": "alice", "iat": now, "exp": now + 600}
            signed = key.sign({**claims, "permissions": list(permissions)})
            return {"Proxy-Authorization": f"Bearer {signed}"}

        async with running_edge(edge_yaml(kubeconfig, top=auth)) as edge:
            assert (await send(edge, host("open"), "/open")).status == 200
            r = await send(edge, host("plain"), "/plain-anon")
            assert (r.status, r.error_type) == (401, "unauthenticated")
            assert (await send(edge, host("plain"), "/plain", headers=token())).status == 200
            r = await send(edge, host("locked"), "/locked-anon")
            assert (r.status, r.error_type) == (401, "unauthenticated")
            r = await send(edge, host("locked"), "/locked-other", headers=token("write"))
            assert (r.status, r.error_type) == (403, "permission-denied")
            r = await send(edge, host("locked"), "/locked-admin", headers=token("admin"))
            assert r.status == 200
            r = await send(edge, host("locked"), "/locked-read", headers=token("read"))
            assert r.status == 200
            assert targets(pod) == ["/open", "/plain", "/locked-admin", "/locked-read"]
            # The edge's credential never reaches the pods.
            assert all(req.header("proxy-authorization") is None for req in pod.requests)
            assert (await status_doc(edge))["discovery"]["problems"] == []


async def test_not_ready_until_services_listed_and_outage_keeps_routes(
    kube: FakeKube, kubeconfig: Path
) -> None:
    async with recording_backend() as pod, recording_backend() as pod2:
        kube.apply(exposed("web"))
        kube.apply(pod_slice("web", http=pod.port))
        await kube.go_down("hang")  # requests are accepted and never answered
        async with started_edge(edge_yaml(kubeconfig)) as edge:
            await until(lambda: kube.count_requests("list", "services") == 1, "the list request")
            ready, why = edge.app.readiness()
            assert not ready and "route discovery" in why
            r = await admin(edge, "/readyz")
            assert r.status == 503
            r = await send(edge, host("web"), "/early")
            assert (r.status, r.error_type) == (404, "no-route")

            await kube.come_back()
            await until(lambda: edge.app.readiness()[0], "ready after the list")
            assert (await admin(edge, "/readyz")).status == 200
            assert (await send(edge, host("web"), "/served")).status == 200

            # The API goes away: routes and endpoints keep serving, readiness holds.
            watches = edge.app.kube.watches
            assert watches is not None
            assert [w["last_error"] for w in watches.status()] == [None, None]
            await kube.go_down("refuse")
            await until(
                lambda: all(w["last_error"] for w in watches.status()), "the watches noticed"
            )
            for i in range(3):
                assert (await send(edge, host("web"), f"/outage/{i}")).status == 200
            assert targets(pod)[-3:] == ["/outage/0", "/outage/1", "/outage/2"]
            assert edge.app.readiness() == (True, "ready")
            assert route_names(edge) == ["discovered:apps/web:http"]

            # Back: changes made meanwhile arrive (a relist or a resumed watch).
            kube.apply(exposed("api"))
            kube.apply(pod_slice("api", http=pod2.port))
            await kube.come_back()
            await until_routes(edge, "discovered:apps/api:http", "discovered:apps/web:http")
            await until(
                lambda: bool(edge.app.state.backends["k8s:apps/api:http"].endpoints.ready),
                "api's endpoint",
            )
            assert (await send(edge, host("api"), "/api")).status == 200
            assert targets(pod2) == ["/api"]


async def test_reload_keeps_discovered_routes(kube: FakeKube, kubeconfig: Path) -> None:
    async with (
        recording_backend() as one,
        recording_backend() as two,
        recording_backend() as pod,
    ):
        kube.apply(exposed("web"))
        kube.apply(pod_slice("web", http=pod.port))
        backends = [static_backend("one", one.address), static_backend("two", two.address)]
        route_one = f"{{name: one, backend: one, match: {{host: one.{SUFFIX}}}}}"
        route_two = f"{{name: two, backend: two, match: {{host: two.{SUFFIX}}}}}"
        async with running_edge(
            edge_yaml(kubeconfig, backends=backends, routes=[route_one])
        ) as edge:
            assert route_names(edge) == ["one", "discovered:apps/web:http"]
            discovered = edge.app.state.backends["k8s:apps/web:http"]
            lists = kube.count_requests("list", "endpointslices")

            edge.write_config(
                edge_yaml(kubeconfig, backends=backends, routes=[route_one, route_two])
            )
            assert await edge.app.reload("test")
            assert route_names(edge) == ["one", "two", "discovered:apps/web:http"]
            for h, backend in ((f"one.{SUFFIX}", one), (f"two.{SUFFIX}", two), (host("web"), pod)):
                assert (await send(edge, h, "/after-reload")).status == 200, h
                assert targets(backend) == ["/after-reload"], h
            # The discovered backend lives on (pools, endpoints, its shared watch).
            assert edge.app.state.backends["k8s:apps/web:http"] is discovered
            assert kube.count_requests("list", "endpointslices") == lists
            assert (await status_doc(edge))["discovery"]["routes"] == ["discovered:apps/web:http"]

            # A reload that hand-writes the discovered host takes it over, as a conflict.
            route_web = f"{{name: web, backend: two, match: {{host: {host('web')}, port: 80}}}}"
            edge.write_config(edge_yaml(kubeconfig, backends=backends, routes=[route_web]))
            assert await edge.app.reload("test")
            assert route_names(edge) == ["web"]
            assert (await send(edge, host("web"), "/taken")).status == 200
            assert targets(two)[-1] == "/taken" and "/taken" not in targets(pod)
            problems = (await status_doc(edge))["discovery"]["problems"]
            assert [(p["service"], p["kind"]) for p in problems] == [("apps/web", "conflict")]
            assert await metric(edge, "kedge_discovery_problems", kind="conflict") == 1

            # Discovery turned off: its routes, backends, watches and gauges go; on again,
            # they come back.
            off = edge_yaml(kubeconfig, backends=backends, routes=[route_one], discovery=False)
            edge.write_config(off)
            assert await edge.app.reload("test")
            assert route_names(edge) == ["one"]
            assert (await status_doc(edge))["discovery"] is None
            assert await metric(edge, "kedge_discovered_routes") == 0
            assert await metric(edge, "kedge_discovery_problems", kind="conflict") == 0
            assert (await send(edge, host("web"), "/off")).status == 404
            await kube.wait_for_watches(0, "services")
            await kube.wait_for_watches(0, "endpointslices")
            edge.write_config(edge_yaml(kubeconfig, backends=backends, routes=[route_one]))
            assert await edge.app.reload("test")
            await until_routes(edge, "one", "discovered:apps/web:http")
            assert await metric(edge, "kedge_discovered_routes") == 1
            assert (await send(edge, host("web"), "/on-again")).status == 200
            assert targets(pod)[-1] == "/on-again"


async def test_discovery_reloads_during_an_api_outage_keep_routes_and_endpoints(
    kube: FakeKube, kubeconfig: Path
) -> None:
    """While the API is down, a reload that changes what discovery watches (its namespaces),
    then another reload: discovered routes and their endpoints keep serving (no backend is
    rebuilt, no watch is restarted), and the new namespace is listed once the API is back."""
    async with recording_backend() as pod, recording_backend() as one:
        kube.apply(exposed("web"))
        kube.apply(pod_slice("web", http=pod.port))
        backends = [static_backend("one", one.address)]
        route_one = f"{{name: one, backend: one, match: {{host: one.{SUFFIX}}}}}"
        both = ["apps", "shop"]
        async with running_edge(edge_yaml(kubeconfig, namespaces=["apps"])) as edge:
            assert route_names(edge) == ["discovered:apps/web:http"]
            web = edge.app.state.backends["k8s:apps/web:http"]
            watches = edge.app.kube.watches
            await kube.go_down("refuse")
            edge.write_config(edge_yaml(kubeconfig, namespaces=both, settle="20ms"))
            async with asyncio.timeout(2):  # no wait for a backend that cannot resolve
                assert await edge.app.reload("test")
            assert route_names(edge) == ["discovered:apps/web:http"]
            edge.write_config(
                edge_yaml(kubeconfig, namespaces=both, backends=backends, routes=[route_one])
            )
            async with asyncio.timeout(2):
                assert await edge.app.reload("test")
            assert route_names(edge) == ["one", "discovered:apps/web:http"]
            assert edge.app.state.backends["k8s:apps/web:http"] is web
            assert edge.app.kube.watches is watches
            assert (await send(edge, host("web"), "/outage")).status == 200
            assert targets(pod) == ["/outage"]

            await kube.come_back()
            kube.apply(exposed("web", "shop"))
            await until_routes(edge, "one", "discovered:apps/web:http", "discovered:shop/web:http")
            assert (await send(edge, host("web"), "/back")).status == 200
            assert targets(pod) == ["/outage", "/back"]
