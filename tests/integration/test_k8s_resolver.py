"""`k8s` backends against the fake Kubernetes API: a real edge, real TLS to the API, real pods.

Each "pod" is an HTTP server on its own loopback address (127.0.0.x: all of 127/8 reaches
loopback on Linux), so EndpointSlices carry pod IPs as a cluster's would and traffic shows
which pods the edge picked. The fake API counts every list and watch request, which proves
the watch sharing, resumption and relisting the resolver promises (configs/README.md,
"resolver.k8s" and "kubernetes").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import pytest

from kedge.edge.forwarding.backend import Backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.fake_kube import FakeKube, Port, RequestRecord, endpoint, endpoint_slice
from tests.support.fake_kube import service as kube_service

NS = "apps"
TIMEOUT = aiohttp.ClientTimeout(total=10)


# -- pods ---------------------------------------------------------------------------------------


class _PodProtocol(asyncio.Protocol):
    """One connection to a pod: answers every request with 200 and the pod's address."""

    def __init__(self, net: PodNet) -> None:
        self._net = net
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport
        self._parser = httptools.HttpRequestParser(self)
        self._address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        host, port = transport.get_extra_info("sockname")[:2]
        self._address = f"{host}:{port}"

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.close()

    def on_message_complete(self) -> None:
        self._net.hits[self._address] += 1
        body = self._address.encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        self._transport.write(head + body)
        if not self._parser.should_keep_alive():
            self._transport.close()


class PodNet:
    """Pods on 127.0.0.x sharing one port per `start` call; `hits` counts requests per pod."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self._servers: list[asyncio.Server] = []

    async def start(self, hosts: Iterable[str]) -> int:
        """Listen on every host at one port (retrying if another socket holds it there)."""
        loop = asyncio.get_running_loop()
        hosts = list(hosts)
        for _attempt in range(10):
            servers: list[asyncio.Server] = []
            port = 0
            try:
                for host in hosts:
                    server = await loop.create_server(lambda: _PodProtocol(self), host, port)
                    servers.append(server)
                    port = int(server.sockets[0].getsockname()[1])
            except OSError:
                for server in servers:
                    server.close()
                continue
            self._servers += servers
            return port
        raise OSError(f"no port free on all of {hosts}")

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()


def pod_ips(first: int, count: int) -> list[str]:
    return [f"127.0.0.{i}" for i in range(first, first + count)]


# -- edge and API helpers -----------------------------------------------------------------------


def kube_yaml(kubeconfig: Path, *, watch_timeout: str = "30s", extra: str = "") -> str:
    more = f", {extra}" if extra else ""
    return (
        f"kubernetes: {{kubeconfig: {kubeconfig}, watch_timeout: {watch_timeout}, "
        f"backoff_initial: 50ms, backoff_max: 500ms{more}}}"
    )


def edge_yaml(kubernetes: str, backends: Mapping[str, str], *, static: str | None = None) -> str:
    """An edge with one `k8s` backend per entry of `backends` (name -> target), each routed
    from host `<name>.test`; `static` adds a backend `plain` for host `plain.test`."""
    lines = [
        'listeners: [{name: http, address: "127.0.0.1:0"}]',
        'admin: {address: "127.0.0.1:0"}',
        kubernetes,
        "backends:",
    ]
    routes = ["routes:"]
    for name, target in backends.items():
        lines.append(f'  - {{name: {name}, resolver: {{k8s: "{target}"}}}}')
        routes.append(f"  - {{backend: {name}, match: {{host: {name}.test}}}}")
    if static is not None:
        lines.append(f'  - {{name: plain, resolver: {{static: {{endpoints: ["{static}"]}}}}}}')
        routes.append("  - {backend: plain, match: {host: plain.test}}")
    if len(routes) == 1:
        routes = ["routes: []"]
    return "\n".join(lines + routes) + "\n"


# Yields as soon as the edge started, ready or not (for the readiness tests).
unready_edge = partial(running_edge, wait_until_ready=False)


def api_slice(
    name: str,
    port: int,
    *endpoints: Mapping[str, Any],
    service: str = "api",
    namespace: str = NS,
    port_name: str = "http",
    more_ports: Sequence[Port] = (),
) -> dict[str, Any]:
    return endpoint_slice(
        name,
        namespace,
        service=service,
        endpoints=list(endpoints),
        ports=[Port(port_name, port), *more_ports],
    )


def ready_set(edge: RunningEdge, backend: str) -> set[str]:
    return {e.key for e in edge.app.state.backends[backend].endpoints.ready}


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `check` (state with no event to await) until true; AssertionError after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def send(
    session: aiohttp.ClientSession, edge: RunningEdge, host: str, count: int
) -> list[tuple[int, str]]:
    """`count` GETs for `host`, one at a time: (status, body) each."""
    out = []
    for _ in range(count):
        async with session.get(edge.url, headers={"Host": host}) as resp:
            out.append((resp.status, await resp.text()))
    return out


async def pods_reached(
    session: aiohttp.ClientSession, edge: RunningEdge, host: str, count: int = 30
) -> set[str]:
    """The pods that answered `count` requests, all of which must succeed."""
    answers = await send(session, edge, host, count)
    assert {status for status, _ in answers} == {200}, answers
    return {body for _, body in answers}


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


def watches_of(kube: FakeKube, namespace: str | None = None) -> list[RequestRecord]:
    return [
        r
        for r in kube.requests
        if r.verb == "watch"
        and r.resource == "endpointslices"
        and (namespace is None or r.namespace == namespace)
    ]


def lists(kube: FakeKube, namespace: str | None = None) -> int:
    return kube.count_requests("list", "endpointslices", namespace)


def record_sets(backend: Backend) -> list[frozenset[str]]:
    """Every ready set `backend` publishes from now on, in order (chains its change hook,
    which runs on each resolver update, so no intermediate set can slip between polls)."""
    seen: list[frozenset[str]] = []
    chained = backend._on_change

    def on_change(b: Backend) -> None:
        seen.append(frozenset(e.key for e in b.endpoints.ready))
        if chained is not None:
            chained(b)

    backend._on_change = on_change
    return seen


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.2) as k:
        k.apply(kube_service("api", NS, ports=[Port("http", 80, "http"), Port("metrics", 9102)]))
        yield k


@pytest.fixture
async def pods() -> AsyncIterator[PodNet]:
    net = PodNet()
    try:
        yield net
    finally:
        await net.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s


@pytest.fixture
def kubeconfig(kube: FakeKube, tmp_path: Path) -> Path:
    return kube.write_kubeconfig(tmp_path / "kubeconfig")


# -- endpoints from slices ----------------------------------------------------------------------


async def test_ready_endpoints_of_every_slice_named_port_per_slice_and_numeric_port(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path
) -> None:
    # A rollout: the pods of slice a serve "http" on one port, those of slice b on another.
    p1 = await pods.start(pod_ips(2, 3))
    p2 = await pods.start(pod_ips(5, 2))
    a2, a3, a4 = (f"127.0.0.{i}:{p1}" for i in (2, 3, 4))
    b5, b6 = (f"127.0.0.{i}:{p2}" for i in (5, 6))
    kube.apply(
        api_slice(
            "api-a",
            p1,
            endpoint("127.0.0.2", zone="zone-a", node_name="node-1"),
            endpoint("127.0.0.3", ready=False, zone="zone-a"),  # starting
            endpoint("127.0.0.4", ready=False, serving=True, terminating=True),  # leaving
        )
    )
    kube.apply(
        api_slice(
            "api-b",
            p2,
            endpoint("127.0.0.5", zone="zone-b", node_name="node-2"),
            endpoint("127.0.0.6", zone="zone-c", node_name="node-3"),
            more_ports=[Port("metrics", 9102)],
        )
    )
    # A slice of this Service without an "http" port (its endpoint serves port p1 as
    # "admin"), and one of another Service: neither has an "http" endpoint of api.
    kube.apply(api_slice("api-c", p1, endpoint("127.0.0.3"), port_name="admin"))
    kube.apply(api_slice("other-a", p1, endpoint("127.0.0.4"), service="other"))

    backends = {"named": f"api.{NS}:http", "numbered": f"api.{NS}.svc.cluster.local:{p1}"}
    async with running_edge(edge_yaml(kube_yaml(kubeconfig), backends)) as edge:
        assert ready_set(edge, "named") == {a2, b5, b6}
        # A number is the endpoints' own port: every slice listing p1 counts, whatever
        # the port's name there (api-c's "admin"), and only those.
        assert ready_set(edge, "numbered") == {a2, a3}

        assert await pods_reached(session, edge, "named.test") == {a2, b5, b6}
        assert await pods_reached(session, edge, "numbered.test") == {a2, a3}
        assert a4 not in pods.hits  # not ready, and another Service's

        status = await get_json(session, edge.admin_url + "/status")
        named = status["backends"]["named"]
        assert named["synced"] is True
        labels = {e["address"]: e["labels"] for e in named["endpoints"]}
        assert labels == {
            a2: {"zone": "zone-a", "node": "node-1"},
            b5: {"zone": "zone-b", "node": "node-2"},
            b6: {"zone": "zone-c", "node": "node-3"},
        }
        # Both backends are on one Service: one list, one watch.
        [watch] = status["kubernetes_watches"]
        assert (watch["subscribers"], watch["objects"], watch["lists"]) == (2, 3, 1)
        assert lists(kube) == 1

        # A pod turns ready and one leaves: the traffic follows.
        kube.apply(
            api_slice(
                "api-a",
                p1,
                endpoint("127.0.0.2", zone="zone-a", node_name="node-1"),
                endpoint("127.0.0.3", zone="zone-a"),
            )
        )
        kube.delete("endpointslices", NS, "api-b")
        await eventually(lambda: ready_set(edge, "named") == {a2, a3}, "slice changes applied")
        assert await pods_reached(session, edge, "named.test") == {a2, a3}


@pytest.mark.parametrize("serve_terminating", [False, True])
async def test_serving_terminating_endpoints_only_as_the_fallback(
    kube: FakeKube,
    pods: PodNet,
    session: aiohttp.ClientSession,
    kubeconfig: Path,
    serve_terminating: bool,
) -> None:
    port = await pods.start(pod_ips(2, 4))
    ready, starting, leaving, gone = (f"127.0.0.{i}:{port}" for i in (2, 3, 4, 5))
    draining = [
        endpoint("127.0.0.3", ready=False),  # not serving yet
        endpoint("127.0.0.4", ready=False, serving=True, terminating=True),
        endpoint("127.0.0.5", ready=False, serving=False, terminating=True),
    ]
    kube.apply(api_slice("api-a", port, *draining))
    flag = "serve_terminating: true" if serve_terminating else ""
    yaml_text = edge_yaml(kube_yaml(kubeconfig, extra=flag), {"api": "api.apps:http"})
    async with running_edge(yaml_text) as edge:
        if serve_terminating:
            assert ready_set(edge, "api") == {leaving}
            assert await pods_reached(session, edge, "api.test") == {leaving}
        else:
            assert ready_set(edge, "api") == set()
            async with session.get(edge.url, headers={"Host": "api.test"}) as resp:
                assert resp.status == 503
                assert resp.headers["X-Kedge-Error-Type"] == "no-endpoints"
        assert not {starting, gone} & set(pods.hits)

        # Once a pod is ready, terminating ones stop serving even with the fallback on.
        kube.apply(api_slice("api-a", port, endpoint("127.0.0.2"), *draining))
        await eventually(lambda: ready_set(edge, "api") == {ready}, "the ready pod alone")
        assert await pods_reached(session, edge, "api.test") == {ready}


# -- one watch per Service ----------------------------------------------------------------------


async def test_one_shared_watch_per_service_however_many_backends(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path
) -> None:
    http_port = await pods.start(pod_ips(2, 2))
    metrics_port = await pods.start(pod_ips(2, 2))
    web_port = await pods.start(pod_ips(10, 1))
    kube.apply(
        endpoint_slice(
            "api-a",
            NS,
            service="api",
            endpoints=[endpoint("127.0.0.2"), endpoint("127.0.0.3")],
            ports=[Port("http", http_port), Port("metrics", metrics_port)],
        )
    )
    kube.apply(kube_service("web", "shop", ports=[Port("http", 80, "http")]))
    kube.apply(
        api_slice("web-a", web_port, endpoint("127.0.0.10"), service="web", namespace="shop")
    )
    api_backends = {
        "api-http": "api.apps:http",
        "api-metrics": "api.apps:metrics",
        "api-number": f"api.apps.svc:{http_port}",
    }
    kubernetes = kube_yaml(kubeconfig)
    async with running_edge(edge_yaml(kubernetes, api_backends)) as edge:
        await kube.wait_for_watches(1, "endpointslices")
        assert (lists(kube), len(watches_of(kube))) == (1, 1)
        for name, port in (
            ("api-http", http_port),
            ("api-metrics", metrics_port),
            ("api-number", http_port),
        ):
            reached = await pods_reached(session, edge, f"{name}.test", 10)
            assert reached == {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}, name

        # A backend on a second Service (added by a reload) adds exactly one list and watch.
        edge.write_config(edge_yaml(kubernetes, {**api_backends, "web": "web.shop:http"}))
        assert await edge.app.reload("test")
        open_now = await kube.wait_for_watches(2, "endpointslices")
        assert sorted(w.namespace or "" for w in open_now) == ["apps", "shop"]
        assert (lists(kube, "apps"), lists(kube, "shop")) == (1, 1)
        assert (len(watches_of(kube, "apps")), len(watches_of(kube, "shop"))) == (1, 1)
        assert await pods_reached(session, edge, "web.test", 5) == {f"127.0.0.10:{web_port}"}
        status = await get_json(session, edge.admin_url + "/status")
        subscribers = {
            w["query"].split("/")[5]: w["subscribers"] for w in status["kubernetes_watches"]
        }
        assert subscribers == {"apps": 3, "shop": 1}
    await kube.wait_for_watches(0, "endpointslices")  # the edge closed them as it stopped


# -- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", ["token", "client-cert"])
async def test_kubeconfig_with_a_token_or_a_client_certificate(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, tmp_path: Path, credential: str
) -> None:
    port = await pods.start(pod_ips(2, 1))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    if credential == "token":
        kube.tokens["edge-token-7f3a"] = "system:serviceaccount:kedge:edge"
        config = kube.write_kubeconfig(tmp_path / "kubeconfig", token="edge-token-7f3a")
        user = "system:serviceaccount:kedge:edge"
    else:
        cert = kube.issue_client_cert("kedge-edge", "kedge")
        config = kube.write_kubeconfig(tmp_path / "kubeconfig", client_cert=cert)
        user = "kedge-edge"
    async with running_edge(edge_yaml(kube_yaml(config), {"api": "api.apps:http"})) as edge:
        assert await pods_reached(session, edge, "api.test", 3) == {f"127.0.0.2:{port}"}
        await kube.wait_for_watches(1, "endpointslices")
    seen = {r.user for r in kube.requests if r.resource == "endpointslices"}
    assert seen == {user}


class ProjectedToken:
    """A service-account token volume as the kubelet writes it: `token` is a symlink through
    `..data`, which is swapped atomically to a new timestamped directory on rotation."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "token"
        self._generation = 0

    def write(self, token: str) -> None:
        self._generation += 1
        stamp = f"..2025_01_01_00_00_{self._generation:02d}"
        (self.directory / stamp).mkdir()
        (self.directory / stamp / "token").write_text(token)
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(stamp)
        os.replace(tmp, self.directory / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/token")


async def test_in_cluster_token_file_is_reread_when_rotated(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port = await pods.start(pod_ips(2, 3))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "ca.crt").write_bytes(kube.ca_pem)
    token = ProjectedToken(sa)
    token.write("token-1")
    kube.tokens = {"token-1": "sa-1"}
    kubernetes = (
        f"kubernetes: {{api_url: '{kube.url}', token_file: {token.path}, "
        f"ca_file: {sa / 'ca.crt'}, backoff_initial: 50ms, backoff_max: 300ms}}"
    )
    async with running_edge(edge_yaml(kubernetes, {"api": "api.apps:http"})) as edge:
        await kube.wait_for_watches(1, "endpointslices")

        # The kubelet rotates the file, then the old token stops working: the next request
        # (a watch resumed after a cut) carries the new token, with no 401 on the way.
        token.write("token-2")
        kube.tokens = {"token-2": "sa-2"}
        kube.disconnect_watches()
        kube.apply(api_slice("api-a", port, endpoint("127.0.0.2"), endpoint("127.0.0.3")))
        want = {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}
        await eventually(lambda: ready_set(edge, "api") == want, "the change after rotation")
        assert [r.user for r in watches_of(kube)] == ["sa-1", "sa-2"]
        assert lists(kube) == 1  # resumed, not relisted

        # The token is revoked before the file changes: 401s, the last endpoints keep
        # serving, and the edge recovers once the file holds a valid token.
        kube.tokens = {"token-3": "sa-3"}
        kube.disconnect_watches()
        await eventually(
            lambda: any(r.user is None for r in watches_of(kube)), "a refused watch request"
        )
        assert await pods_reached(session, edge, "api.test", 4) == want
        token.write("token-3")
        kube.apply(api_slice("api-a", port, endpoint("127.0.0.4")))
        await eventually(
            lambda: ready_set(edge, "api") == {f"127.0.0.4:{port}"}, "recovery after rotation"
        )
        assert watches_of(kube)[-1].user == "sa-3"
        assert lists(kube) == 1


async def test_a_wrong_token_never_syncs_and_reports_the_error(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port = await pods.start(pod_ips(2, 1))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    config = kube.write_kubeconfig(tmp_path / "kubeconfig", token="not-a-valid-token")
    yaml_text = edge_yaml(kube_yaml(config), {"api": "api.apps:http"}, static="127.0.0.1:9")
    async with unready_edge(yaml_text) as edge:
        # It keeps trying (with backoff), and never gets anything.
        await eventually(lambda: lists(kube) >= 3, "retried lists", timeout=5.0)
        assert {r.user for r in kube.requests} == {None}
        assert edge.app.readiness() == (False, "resolvers not synced: api")
        async with session.get(edge.admin_url + "/readyz") as resp:
            assert resp.status == 503
            assert "resolvers not synced: api" in await resp.text()
        async with session.get(edge.admin_url + "/livez") as resp:
            assert resp.status == 200
        status = await get_json(session, edge.admin_url + "/status")
        assert status["backends"]["api"]["synced"] is False
        assert status["backends"]["api"]["endpoints"] == []
        [watch] = status["kubernetes_watches"]
        assert watch["objects"] is None
        assert "401" in watch["last_error"] and "Unauthorized" in watch["last_error"]
        async with session.get(edge.url, headers={"Host": "api.test"}) as resp:
            assert resp.status == 503
            assert resp.headers["X-Kedge-Error-Type"] == "no-endpoints"

        # The token becomes valid (e.g. an RBAC binding fixed): the edge syncs by itself.
        kube.tokens["not-a-valid-token"] = "late"
        await eventually(lambda: edge.app.readiness()[0], "ready once the token works")
        assert ready_set(edge, "api") == {f"127.0.0.2:{port}"}


# -- watch resumption, relists, bookmarks -------------------------------------------------------


@pytest.mark.parametrize("clean", [False, True], ids=["cut", "ended"])
async def test_a_broken_watch_resumes_from_its_resource_version(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path, clean: bool
) -> None:
    port = await pods.start(pod_ips(2, 2))
    listed = kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    async with running_edge(edge_yaml(kube_yaml(kubeconfig), {"api": "api.apps:http"})) as edge:
        await kube.wait_for_watches(1, "endpointslices")
        # Cut the watch, and change the slice before the edge can reconnect (this loop
        # turn): the stream that was cut never carried the change, so only a watch resumed
        # from the version the edge had reached can deliver it, without a new list.
        assert kube.disconnect_watches("endpointslices", clean=clean) == 1
        changed = kube.apply(api_slice("api-a", port, endpoint("127.0.0.2"), endpoint("127.0.0.3")))
        want = {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}
        await eventually(lambda: ready_set(edge, "api") == want, "the change made while cut")
        assert lists(kube) == 1
        assert len(watches_of(kube)) == 2
        resumed = watches_of(kube)[1]
        since = int(resumed.query["resourceVersion"])
        assert int(listed["metadata"]["resourceVersion"]) <= since
        assert since < int(changed["metadata"]["resourceVersion"])
        assert await pods_reached(session, edge, "api.test", 6) == want


@pytest.mark.parametrize("how", ["expire-event", "compacted"])
async def test_a_410_relists_and_swaps_the_set_at_once(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path, how: str
) -> None:
    port = await pods.start(pod_ips(2, 4))
    at = [f"127.0.0.{i}:{port}" for i in range(2, 6)]
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    kube.apply(api_slice("api-b", port, endpoint("127.0.0.3")))
    async with running_edge(edge_yaml(kube_yaml(kubeconfig), {"api": "api.apps:http"})) as edge:
        await kube.wait_for_watches(1, "endpointslices")
        published = record_sets(edge.app.state.backends["api"])
        statuses: Counter[int] = Counter()
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                for status, _ in await send(session, edge, "api.test", 1):
                    statuses[status] += 1

        load = asyncio.create_task(traffic())
        await eventually(lambda: statuses.total() >= 20, "traffic before")
        # The watch ends with 410 (or is cut and then finds its version compacted away),
        # and the API changes meanwhile: every slice is replaced. The relist must swap
        # {2, 3} for {4, 5} in one step: no empty set and no half-built one.
        if how == "expire-event":
            assert kube.expire_watches("endpointslices") == 1
        else:
            assert kube.disconnect_watches("endpointslices") == 1
        kube.delete("endpointslices", NS, "api-a")
        kube.apply(api_slice("api-b", port, endpoint("127.0.0.4")))
        kube.apply(api_slice("api-c", port, endpoint("127.0.0.5")))
        if how == "compacted":
            kube.compact()
        await eventually(lambda: ready_set(edge, "api") == {at[2], at[3]}, "the relisted set")
        after = statuses.total()
        await eventually(lambda: statuses.total() >= after + 20, "traffic after")
        stop.set()
        await load
        assert published == [frozenset({at[2], at[3]})]
        assert set(statuses) == {200}, statuses
        assert lists(kube) == 2
        await kube.wait_for_watches(1, "endpointslices")
        assert await pods_reached(session, edge, "api.test", 6) == {at[2], at[3]}


async def test_watches_end_by_timeout_and_resume_from_the_bookmarked_version(
    kube: FakeKube, pods: PodNet, kubeconfig: Path
) -> None:
    port = await pods.start(pod_ips(2, 2))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    kubernetes = kube_yaml(kubeconfig, watch_timeout="1s")
    async with running_edge(edge_yaml(kubernetes, {"api": "api.apps:http"})) as edge:
        await kube.wait_for_watches(1, "endpointslices")
        # A write to another resource moves the API's version on; no slice event says so,
        # only the bookmarks that follow (sent every 0.2 s) do.
        other = kube.apply(kube_service("other", NS))
        head = other["metadata"]["resourceVersion"]
        await eventually(lambda: len(watches_of(kube)) >= 3, "watches re-issued", timeout=5.0)
        watches = watches_of(kube)
        assert lists(kube) == 1
        for w in watches:
            assert w.query["allowWatchBookmarks"] == "true"
            assert w.query["timeoutSeconds"] == "1"
        assert watches[1].query["resourceVersion"] == head
        # The state is intact through the re-issued watches.
        kube.apply(api_slice("api-a", port, endpoint("127.0.0.3")))
        await eventually(
            lambda: ready_set(edge, "api") == {f"127.0.0.3:{port}"}, "a change after them"
        )
        assert lists(kube) == 1


async def test_watches_the_api_ends_at_once_back_off(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path
) -> None:
    port = await pods.start(pod_ips(2, 2))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    async with running_edge(edge_yaml(kube_yaml(kubeconfig), {"api": "api.apps:http"})) as edge:
        # For 1.5 s every watch is ended cleanly as soon as it opens, before any event (as
        # a misbehaving proxy in front of the API would): the edge must not resume in a
        # tight loop (it made ~600 requests a second before backing off here).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while True:
                    await kube.wait_for_watches(1, "endpointslices")
                    kube.disconnect_watches("endpointslices", clean=True)
                    await kube.wait_for_watches(0, "endpointslices")
        assert 3 <= len(watches_of(kube)) <= 20, len(watches_of(kube))
        status = await get_json(session, edge.admin_url + "/status")
        assert "ended the watch at once" in status["kubernetes_watches"][0]["last_error"]
        assert await pods_reached(session, edge, "api.test", 3) == {f"127.0.0.2:{port}"}
        # Left alone, the watch stays open and carries changes; nothing was listed again.
        kube.apply(api_slice("api-a", port, endpoint("127.0.0.3")))
        await eventually(lambda: ready_set(edge, "api") == {f"127.0.0.3:{port}"}, "a change")
        assert lists(kube) == 1


# -- reloads and readiness ----------------------------------------------------------------------


async def test_a_reload_keeps_the_watch_and_removing_the_backend_stops_it(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path
) -> None:
    port = await pods.start(pod_ips(2, 1))
    static_port = await pods.start(pod_ips(20, 1))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    kubernetes = kube_yaml(kubeconfig)
    backends = {"api": "api.apps:http"}
    async with running_edge(edge_yaml(kubernetes, backends)) as edge:
        [before] = await kube.wait_for_watches(1, "endpointslices")

        # Another backend and route: the k8s backend is unchanged, so is its watch.
        edge.write_config(edge_yaml(kubernetes, backends, static=f"127.0.0.20:{static_port}"))
        assert await edge.app.reload("test")
        assert await pods_reached(session, edge, "plain.test", 2) == {f"127.0.0.20:{static_port}"}
        assert await pods_reached(session, edge, "api.test", 2) == {f"127.0.0.2:{port}"}
        assert kube.open_watches("endpointslices") == [before]
        assert (lists(kube), len(watches_of(kube))) == (1, 1)

        # A second backend on the Service joins the watch, and is served from its objects.
        both = {**backends, "again": f"api.apps:{port}"}
        edge.write_config(edge_yaml(kubernetes, both))
        assert await edge.app.reload("test")
        assert await pods_reached(session, edge, "again.test", 2) == {f"127.0.0.2:{port}"}
        # The first one goes: the watch stays for the other.
        edge.write_config(edge_yaml(kubernetes, {"again": both["again"]}))
        assert await edge.app.reload("test")
        kube.apply(api_slice("api-a", port, endpoint("127.0.0.3")))
        await eventually(lambda: ready_set(edge, "again") == {f"127.0.0.3:{port}"}, "a change")
        assert kube.open_watches("endpointslices") == [before]
        assert (lists(kube), len(watches_of(kube))) == (1, 1)

        # The last backend on the Service goes: the watch is closed on the API server too.
        edge.write_config(edge_yaml(kubernetes, {}, static=f"127.0.0.20:{static_port}"))
        assert await edge.app.reload("test")
        await kube.wait_for_watches(0, "endpointslices")
        async with session.get(edge.url, headers={"Host": "again.test"}) as resp:
            assert resp.status == 404
        assert (lists(kube), len(watches_of(kube))) == (1, 1)


async def test_a_reload_that_changes_the_kubernetes_section_replaces_the_watch(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path
) -> None:
    port = await pods.start(pod_ips(2, 1))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    backends = {"api": "api.apps:http"}
    async with running_edge(edge_yaml(kube_yaml(kubeconfig), backends)) as edge:
        await kube.wait_for_watches(1, "endpointslices")
        edge.write_config(edge_yaml(kube_yaml(kubeconfig, watch_timeout="20s"), backends))
        assert await edge.app.reload("test")
        # The new section lists again; the old watch is closed once the new one serves.
        await eventually(lambda: len(watches_of(kube)) == 2, "a new list and watch")
        await kube.wait_for_watches(1, "endpointslices")
        assert lists(kube) == 2
        assert watches_of(kube)[1].query["timeoutSeconds"] in {str(s) for s in range(15, 21)}
        assert await pods_reached(session, edge, "api.test", 3) == {f"127.0.0.2:{port}"}


@pytest.mark.slow
async def test_a_reload_during_an_api_outage_keeps_the_endpoints(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path
) -> None:
    port = await pods.start(pod_ips(2, 1))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    backends = {"api": "api.apps:http"}
    async with running_edge(edge_yaml(kube_yaml(kubeconfig), backends)) as edge:
        await kube.go_down("refuse")
        edge.write_config(edge_yaml(kube_yaml(kubeconfig, watch_timeout="20s"), backends))
        assert await edge.app.reload("test")
        answers = await send(session, edge, "api.test", 3)
        assert [status for status, _ in answers] == [200] * 3, answers


@pytest.mark.parametrize("outage", ["hang", "refuse"])
async def test_not_ready_until_the_first_list_arrives(
    kube: FakeKube, pods: PodNet, session: aiohttp.ClientSession, kubeconfig: Path, outage: str
) -> None:
    port = await pods.start(pod_ips(2, 1))
    kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
    await kube.go_down("hang" if outage == "hang" else "refuse")
    async with unready_edge(edge_yaml(kube_yaml(kubeconfig), {"api": "api.apps:http"})) as edge:
        if outage == "hang":
            await eventually(lambda: lists(kube) == 1, "the list request arrived")
        await asyncio.sleep(0.3)  # long enough for a list answered at once to be applied
        async with session.get(edge.admin_url + "/readyz") as resp:
            assert resp.status == 503
            assert await resp.text() == "resolvers not synced: api"
        assert not edge.app.state.backends["api"].synced
        await kube.come_back()
        await eventually(lambda: edge.app.readiness()[0], "ready after the first list")
        async with session.get(edge.admin_url + "/readyz") as resp:
            assert resp.status == 200
        assert await pods_reached(session, edge, "api.test", 2) == {f"127.0.0.2:{port}"}
