"""`k8s` backends under load while the API churns, breaks and goes away (issue 5's load tests).

wrk drives a real edge whose backend follows a Service in the fake Kubernetes API. Pods come
and go at ~100 updates/s, watches are cut and expire, and the API server is down for 30 s;
the pods that leave stay up (as a terminating pod finishes its requests), so every request
must succeed: no 5xx and no socket error at all. The fake counts lists, which shows when the
edge resumed a watch and when it had to list again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.lib.wrk import WrkResult, parse_wrk_output
from tests.integration.test_k8s_resolver import (
    NS,
    PodNet,
    api_slice,
    edge_yaml,
    eventually,
    kube_yaml,
    lists,
    pod_ips,
    ready_set,
    watches_of,
)
from tests.support.edge import RunningEdge, running_edge
from tests.support.fake_kube import FakeKube, Port, endpoint
from tests.support.fake_kube import service as kube_service

STABLE = pod_ips(2, 10)  # ready all along
SPARE = pod_ips(20, 40)  # added and removed by the churn
CHURN_SLICES = [f"api-churn-{i}" for i in range(4)]


@dataclass
class Churn:
    """Pods joining, leaving, turning ready and terminating in a few slices of `api`, one API
    write per step (as the EndpointSlice controller writes them), with the set the edge
    should end up with."""

    kube: FakeKube
    port: int
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    # slice -> pod IP -> "ready" | "starting" | "terminating"
    pods: dict[str, dict[str, str]] = field(default_factory=lambda: {s: {} for s in CHURN_SLICES})
    written: set[str] = field(default_factory=set)  # slices that exist in the API
    steps: int = 0

    def expected(self) -> set[str]:
        ready = {ip for pods in self.pods.values() for ip, s in pods.items() if s == "ready"}
        return {f"{ip}:{self.port}" for ip in [*STABLE, *ready]}

    def _write(self, name: str) -> None:
        states = {
            "ready": {},
            "starting": {"ready": False},
            "terminating": {"ready": False, "serving": True, "terminating": True},
        }
        eps = [endpoint(ip, zone="zone-a", **states[s]) for ip, s in self.pods[name].items()]
        self.kube.apply(api_slice(name, self.port, *eps))
        self.written.add(name)

    def step(self) -> None:
        self.steps += 1
        present = [(s, ip) for s, pods in self.pods.items() for ip in pods]
        used = {ip for _, ip in present}
        action = self.rng.random()
        if action < 0.02 and self.written:  # a whole slice goes (its pods with it)
            name = self.rng.choice(sorted(self.written))
            self.pods[name].clear()
            self.written.discard(name)
            self.kube.delete("endpointslices", NS, name)
        elif action < 0.45 or not present:  # a pod joins, usually ready at once
            name = self.rng.choice(CHURN_SLICES)
            ip = self.rng.choice([ip for ip in SPARE if ip not in used])
            self.pods[name][ip] = "ready" if self.rng.random() < 0.8 else "starting"
            self._write(name)
        elif action < 0.75:  # a pod leaves
            name, ip = self.rng.choice(present)
            del self.pods[name][ip]
            self._write(name)
        else:  # a pod changes state: starting -> ready -> terminating -> ready ...
            name, ip = self.rng.choice(present)
            state = self.pods[name][ip]
            self.pods[name][ip] = "terminating" if state == "ready" else "ready"
            self._write(name)

    async def run(self, seconds: float, rate: float) -> int:
        """Step at `rate` per second for `seconds` (paced by the clock, not by sleeps that
        add up); return the number of steps."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = 0
        while (elapsed := loop.time() - start) < seconds:
            if done < elapsed * rate:
                self.step()
                done += 1
            else:
                await asyncio.sleep(1 / rate)
        return done


async def wrk(edge: RunningEdge, seconds: int, connections: int = 8) -> WrkResult:
    """wrk against the edge (host api.test) for `seconds`, in a subprocess that does not
    block this event loop (the edge runs on it)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += ["-H", "Host: api.test", edge.url + "/"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return parse_wrk_output(out.decode())


@dataclass
class Cluster:
    kube: FakeKube
    pods: PodNet
    port: int
    kubeconfig: Path

    def stable_slice(self, ips: list[str] = STABLE) -> dict[str, Any]:
        return api_slice("api-stable", self.port, *(endpoint(ip, zone="zone-a") for ip in ips))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    pods = PodNet()
    try:
        port = await pods.start([*STABLE, *SPARE])
        async with FakeKube(bookmark_interval=0.5) as kube:
            kube.apply(kube_service("api", NS, ports=[Port("http", 80, "http")]))
            c = Cluster(kube, pods, port, kube.write_kubeconfig(tmp_path / "kubeconfig"))
            kube.apply(c.stable_slice())
            yield c
    finally:
        await pods.aclose()


@asynccontextmanager
async def edge_on(c: Cluster, watch_timeout: str = "30s") -> AsyncIterator[RunningEdge]:
    yaml_text = edge_yaml(
        kube_yaml(c.kubeconfig, watch_timeout=watch_timeout), {"api": "api.apps:http"}
    )
    async with running_edge(yaml_text) as edge:
        await c.kube.wait_for_watches(1, "endpointslices")
        yield edge


async def traffic_started(c: Cluster) -> None:
    start = c.pods.hits.total()
    await eventually(lambda: c.pods.hits.total() >= start + 50, "wrk's first requests")


def assert_no_failures(result: WrkResult, minimum: int) -> None:
    print(f"wrk: {result.requests} requests, {result.rps:.0f}/s, {result.errors} errors")
    assert result.errors == 0, result
    assert result.requests >= minimum, result


@pytest.mark.slow
async def test_pod_churn_at_100_updates_per_second_under_load(cluster: Cluster) -> None:
    churn = Churn(cluster.kube, cluster.port)
    async with edge_on(cluster) as edge:
        load = asyncio.create_task(wrk(edge, seconds=6))
        await traffic_started(cluster)
        steps = await churn.run(seconds=5.0, rate=100)
        result = await load
        await eventually(lambda: ready_set(edge, "api") == churn.expected(), "the final set")
    print(f"{steps} API updates in 5 s")
    assert steps >= 450
    assert_no_failures(result, minimum=2000)
    hits = cluster.pods.hits
    assert all(hits[f"{ip}:{cluster.port}"] > 0 for ip in STABLE)
    assert sum(hits[f"{ip}:{cluster.port}"] > 0 for ip in SPARE) >= 10  # churned pods served
    assert lists(cluster.kube) == 1  # one list, then the watch carried every change


@pytest.mark.slow
async def test_watch_cuts_and_410s_under_load(cluster: Cluster) -> None:
    kube = cluster.kube
    churn = Churn(kube, cluster.port)

    def compacted() -> None:
        kube.disconnect_watches("endpointslices")
        churn.step()  # a change the edge has not seen, then its history goes
        kube.compact()

    faults = [
        lambda: kube.disconnect_watches("endpointslices"),
        lambda: kube.disconnect_watches("endpointslices", clean=True),
        lambda: kube.expire_watches("endpointslices"),
        compacted,
        lambda: kube.disconnect_watches("endpointslices"),
    ]
    async with edge_on(cluster) as edge:
        load = asyncio.create_task(wrk(edge, seconds=6))
        await traffic_started(cluster)
        for fault in faults:
            await kube.wait_for_watches(1, "endpointslices")
            fault()
            await churn.run(seconds=1.0, rate=50)
        result = await load
        await eventually(lambda: ready_set(edge, "api") == churn.expected(), "the final set")
    assert_no_failures(result, minimum=2000)
    # One watch request per fault, plus the compacted one's: resumed, refused with 410.
    assert len(watches_of(kube)) == 1 + len(faults) + 1
    assert lists(kube) == 3  # the first, and one per 410 (the expired watch, the compaction)


@pytest.mark.slow
async def test_api_server_down_for_30_s_while_traffic_flows(cluster: Cluster) -> None:
    kube = cluster.kube
    loop = asyncio.get_running_loop()
    async with edge_on(cluster) as edge, aiohttp.ClientSession() as session:
        before = ready_set(edge, "api")
        load = asyncio.create_task(wrk(edge, seconds=34))
        await traffic_started(cluster)
        await kube.go_down("refuse")
        down_at = loop.time()
        # A change the edge cannot see until the API is back: pod .2 leaves, .20 joins.
        kube.apply(cluster.stable_slice([*STABLE[1:], SPARE[0]]))
        after = {f"{ip}:{cluster.port}" for ip in [*STABLE[1:], SPARE[0]]}
        served_during = cluster.pods.hits.total()
        while loop.time() - down_at < 30:
            await asyncio.sleep(1)  # the outage lasts 30 s whatever happens meanwhile
            assert ready_set(edge, "api") == before  # the last known endpoints serve
            assert edge.app.readiness() == (True, "ready")
        async with session.get(edge.admin_url + "/status") as resp:
            [watch] = (await resp.json())["kubernetes_watches"]
        assert "connect" in watch["last_error"].lower(), watch
        served_during = cluster.pods.hits.total() - served_during

        await kube.come_back()
        back_at = loop.time()
        await eventually(lambda: ready_set(edge, "api") == after, "the outage's change", 5.0)
        caught_up = loop.time() - back_at
        kube.apply(cluster.stable_slice(STABLE[1:]))
        changed_at = loop.time()
        await eventually(
            lambda: ready_set(edge, "api") == after - {f"{SPARE[0]}:{cluster.port}"},
            "a change after the outage",
            2.0,
        )
        followed = loop.time() - changed_at
        result = await load
    assert_no_failures(result, minimum=10_000)
    assert served_during >= 5_000, served_during
    assert cluster.pods.hits[f"{SPARE[0]}:{cluster.port}"] > 0
    assert lists(kube) == 1  # resumed from its version: the history outlived the outage
    print(f"caught up {caught_up:.2f} s after the API came back; followed in {followed:.2f} s")


@pytest.mark.slow
async def test_api_server_hanging_does_not_stop_traffic(cluster: Cluster) -> None:
    kube = cluster.kube
    async with edge_on(cluster, watch_timeout="2s") as edge:
        before = ready_set(edge, "api")
        load = asyncio.create_task(wrk(edge, seconds=6))
        await traffic_started(cluster)
        await kube.go_down("hang")
        # The open watch goes silent, and a new one (after a cut) is accepted and never
        # answered: the edge waits on both and keeps serving what it has.
        watched = len(watches_of(kube))
        kube.disconnect_watches("endpointslices")
        await eventually(lambda: len(watches_of(kube)) == watched + 1, "a hanging watch")
        kube.apply(cluster.stable_slice([*STABLE[1:], SPARE[0]]))
        served = cluster.pods.hits.total()
        await asyncio.sleep(3)  # the hang lasts 3 s
        assert cluster.pods.hits.total() - served >= 500
        assert ready_set(edge, "api") == before
        await kube.come_back()
        after = {f"{ip}:{cluster.port}" for ip in [*STABLE[1:], SPARE[0]]}
        await eventually(lambda: ready_set(edge, "api") == after, "the change after the hang")
        result = await load
    assert_no_failures(result, minimum=2000)
    assert lists(kube) == 1
