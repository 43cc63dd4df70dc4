"""Locality through a real edge: a healthy local zone keeps its traffic, a retry may leave
it, and a backend that stays in its cluster never reaches another one."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import running_edge


def _endpoint(backend: RecordingBackend, **labels: str) -> str:
    items = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return f'{{address: "{backend.address}", labels: {{{items}}}}}'


def _yaml(endpoints: list[str], *, extra: str = "") -> str:
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
locality: {{cluster: a, region: eu, zone: eu-1}}
backends:
  - name: app
    balancer: p2c_ewma
    resolver: {{static: {{endpoints: [{", ".join(endpoints)}]}}}}{extra}
routes: [{{name: app, backend: app, match: {{host: app.test}}}}]
"""


async def _get(session: aiohttp.ClientSession, url: str, n: int) -> list[int]:
    async def one() -> int:
        async with session.get(url, headers={"host": "app.test"}) as r:
            return r.status

    out: list[int] = []
    for _ in range(n // 4):
        out += await asyncio.gather(*(one() for _ in range(4)))
    return out


async def test_a_healthy_local_zone_keeps_the_traffic() -> None:
    async with (
        recording_backend() as local1,
        recording_backend() as local2,
        recording_backend() as other_zone,
        recording_backend() as other_cluster,
    ):
        endpoints = [
            _endpoint(local1, zone="eu-1"),
            _endpoint(local2, zone="eu-1"),
            _endpoint(other_zone, zone="eu-2"),
            _endpoint(other_cluster, cluster="b", zone="eu-1"),
        ]
        async with running_edge(_yaml(endpoints)) as edge, aiohttp.ClientSession() as s:
            assert await _get(s, edge.url + "/", 200) == [200] * 200
        assert len(local1.requests) + len(local2.requests) == 200
        assert local1.requests and local2.requests
        assert not other_zone.requests and not other_cluster.requests


async def test_a_dead_local_endpoint_is_retried_in_the_next_tier() -> None:
    async with recording_backend() as far:
        dead = '{address: "127.0.0.1:9", labels: {zone: eu-1}}'  # refuses connections
        endpoints = [dead, _endpoint(far, zone="eu-2")]
        async with running_edge(_yaml(endpoints)) as edge, aiohttp.ClientSession() as s:
            assert await _get(s, edge.url + "/", 8) == [200] * 8
        assert len(far.requests) == 8


async def test_allow_cross_cluster_false_never_leaves_the_cluster() -> None:
    async with recording_backend() as local, recording_backend() as remote:
        endpoints = [_endpoint(local, zone="eu-2"), _endpoint(remote, cluster="b")]
        extra = "\n    allow_cross_cluster: false"
        async with (
            running_edge(_yaml(endpoints, extra=extra)) as edge,
            aiohttp.ClientSession() as s,
        ):
            assert await _get(s, edge.url + "/", 40) == [200] * 40
        assert len(local.requests) == 40 and not remote.requests
