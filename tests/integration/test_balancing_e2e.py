"""Balancers through a real edge: p2c_ewma steers away from a slow endpoint, round_robin
does not, and /status shows each endpoint's latency estimate."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.backend import RecordedRequest, recording_backend, simple_response
from tests.support.edge import running_edge


async def _slow(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(0.05)
    w.write(simple_response(200, b"slow"))


def _yaml(balancer: str, fast: str, slow: str) -> str:
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
backends:
  - name: app
    balancer: {balancer}
    resolver: {{static: {{endpoints: ["{fast}", "{slow}"]}}}}
routes: [{{name: app, backend: app, match: {{host: app.test}}}}]
"""


@pytest.mark.parametrize(("balancer", "max_slow"), [("p2c_ewma", 8), ("round_robin", 20)])
async def test_the_slow_endpoint_gets_little_traffic_with_p2c_ewma(
    balancer: str, max_slow: int
) -> None:
    async with (
        recording_backend() as fast,
        recording_backend(_slow) as slow,
        running_edge(_yaml(balancer, fast.address, slow.address)) as edge,
        aiohttp.ClientSession() as session,
    ):

        async def one() -> None:
            async with session.get(edge.url + "/", headers={"host": "app.test"}) as r:
                assert r.status == 200

        for _ in range(10):  # 4 at a time, so load (in flight) matters too
            await asyncio.gather(*(one() for _ in range(4)))
        # Round robin alternates (half the requests wait 50 ms); p2c_ewma sends the slow
        # endpoint a request only while the fast one is loaded, learns its latency from the
        # answer, and then compares both endpoints every time.
        assert len(slow.requests) <= max_slow
        if balancer == "round_robin":
            assert len(slow.requests) == 20
        assert len(fast.requests) + len(slow.requests) == 40
        async with session.get(edge.admin_url + "/status") as r:
            endpoints = (await r.json())["backends"]["app"]["endpoints"]
        ewma = {e["address"]: e["ewma_ms"] for e in endpoints}
        assert ewma[fast.address] < 40
        if slow.requests:
            assert ewma[slow.address] > 40
        async with session.get(edge.admin_url + "/metrics") as r:
            metrics = await r.text()
        for address in (fast.address, slow.address):
            series = f'backend="app",endpoint="{address}",tier="0",cluster="",zone=""'
            assert f"kedge_endpoint_latency_ewma_seconds{{{series}}}" in metrics
            assert f"kedge_endpoint_available{{{series}}} 1" in metrics
            assert f"kedge_endpoint_in_flight{{{series}}} 0" in metrics
