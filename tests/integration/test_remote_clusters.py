"""Cross-cluster endpoints: a backend served by another cluster's edge, failover to it, its
credential, the Host kept, and a global -> hub -> cluster hierarchy through two hops."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import running_edge


def _edge(endpoints: str, remotes: str = "", locality: str = "") -> str:
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
{locality}
backends:
  - name: app
    balancer: p2c_ewma
    resolver: {{static: {{endpoints: [{endpoints}]}}}}
    remote_clusters: [{remotes}]
routes: [{{name: app, backend: app, match: {{host: app.test}}}}]
"""


def _remote(name: str, target: RecordingBackend | str, token: Path | None = None) -> str:
    address = target if isinstance(target, str) else target.address
    extra = f", token_file: {token}" if token is not None else ""
    return f'{{name: {name}, endpoints: ["{address}"]{extra}}}'


async def _get(url: str, n: int) -> list[int]:
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(url + "/x", headers={"host": "app.test"}) as r:
                statuses.append(r.status)
    return statuses


async def test_a_healthy_local_backend_keeps_the_traffic(tmp_path: Path) -> None:
    async with recording_backend() as local, recording_backend() as remote_edge:
        yaml = _edge(f'"{local.address}"', _remote("b", remote_edge))
        async with running_edge(yaml) as edge:
            assert await _get(edge.url, 20) == [200] * 20
        assert len(local.requests) == 20 and not remote_edge.requests


async def test_failover_to_the_remote_edge_with_its_credential_and_the_host(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("remote-edge-token\n")
    async with recording_backend() as remote_edge:
        dead = '"127.0.0.1:9"'  # the local endpoint refuses connections
        yaml = _edge(dead, _remote("b", remote_edge, token))
        async with running_edge(yaml) as edge:
            assert await _get(edge.url, 10) == [200] * 10
            async with aiohttp.ClientSession() as s, s.get(edge.admin_url + "/status") as r:
                eps = (await r.json())["backends"]["app"]["endpoints"]
        assert len(remote_edge.requests) == 10
        req = remote_edge.requests[0]
        assert req.header("host") == "app.test"  # the remote edge routes it itself
        assert req.header("proxy-authorization") == "Bearer remote-edge-token"
        by_address = {e["address"]: e for e in eps}
        assert by_address[remote_edge.address]["labels"] == {"cluster": "b"}
        # The token file is re-read when it changes (rotation without a restart).
        token.write_text("rotated\n")
        async with running_edge(yaml) as edge:
            assert await _get(edge.url, 1) == [200]
        assert remote_edge.requests[-1].header("proxy-authorization") == "Bearer rotated"


async def test_remote_priority_orders_the_clusters() -> None:
    async with recording_backend() as near, recording_backend() as far:
        remotes = (
            f'{{name: far, endpoints: ["{far.address}"], priority: 2}}, '
            f'{{name: near, endpoints: ["{near.address}"], priority: 1}}'
        )
        async with running_edge(_edge('"127.0.0.1:9"', remotes)) as edge:
            assert await _get(edge.url, 10) == [200] * 10
        assert len(near.requests) == 10 and not far.requests


async def test_a_global_hub_cluster_hierarchy_through_two_hops() -> None:
    async with recording_backend() as pod:
        async with running_edge(_edge(f'"{pod.address}"')) as cluster_edge:
            cluster = f"127.0.0.1:{cluster_edge.port()}"
            hub_yaml = _edge('"127.0.0.1:9"', _remote("cluster-c", cluster))
            async with running_edge(hub_yaml) as hub:
                hub_address = f"127.0.0.1:{hub.port()}"
                global_yaml = _edge('"127.0.0.1:9"', _remote("hub-eu", hub_address))
                async with running_edge(global_yaml) as global_edge:
                    assert await _get(global_edge.url, 5) == [200] * 5
        assert len(pod.requests) == 5
        req = pod.requests[-1]
        assert req.header("host") == "app.test"
        # Every hop added itself (RFC 9110 §7.6.3) and the client address chain.
        assert req.header("via") == "1.1 kedge, 1.1 kedge, 1.1 kedge"
        assert req.header("x-forwarded-for") == "127.0.0.1, 127.0.0.1, 127.0.0.1"


async def test_the_last_try_goes_to_a_tier_not_tried_yet() -> None:
    """A whole local tier just died (nothing ejected yet): with 2 attempts, every request
    still succeeds, because the last try leaves the tier (Envoy's previous_priorities)."""
    async with recording_backend() as remote_edge:
        dead = ", ".join(f'"127.0.0.1:{p}"' for p in (9, 19, 29, 39))
        yaml = _edge(dead, _remote("b", remote_edge)).replace(
            "remote_clusters:", "retries: {attempts: 2}\n    remote_clusters:"
        )
        async with running_edge(yaml) as edge:
            assert await _get(edge.url, 12) == [200] * 12
        assert len(remote_edge.requests) == 12


async def test_a_backend_served_by_remote_clusters_only() -> None:
    async with recording_backend() as remote_edge:
        yaml = f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
backends:
  - name: app
    remote_clusters: [{_remote("b", remote_edge)}]
routes: [{{name: app, backend: app, match: {{host: app.test}}}}]
"""
        async with running_edge(yaml) as edge:
            assert await _get(edge.url, 3) == [200] * 3
            async with aiohttp.ClientSession() as s, s.get(edge.admin_url + "/status") as r:
                (remote,) = (await r.json())["backends"]["app"]["remote_clusters"]
        assert len(remote_edge.requests) == 3
        assert remote["name"] == "b" and remote["available"] == 1
