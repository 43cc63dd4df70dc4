"""Retries: another endpoint for a reset or a per-try timeout when the request can be sent
again, never for a request with a body, and never beyond the retry budget."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.backend import RecordedRequest, recording_backend
from tests.support.edge import running_edge


async def _reset(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    w.transport.abort()  # closes without an answer: the edge sees a reset


async def _slow(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(2)


def _yaml(a: str, b: str, retries: str) -> str:
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
backends:
  - name: app
    resolver: {{static: {{endpoints: ["{a}", "{b}"]}}}}
    retries: {{{retries}}}
    outlier_detection: {{enabled: false}}
routes: [{{name: app, backend: app, match: {{host: app.test}}}}]
"""


async def _send(edge_url: str, method: str = "GET", body: bytes | None = None) -> int:
    headers = {"host": "app.test"}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, edge_url + "/", data=body, headers=headers) as r,
    ):
        return r.status


async def test_a_reset_is_retried_for_idempotent_requests_only() -> None:
    async with recording_backend(_reset) as bad, recording_backend() as good:
        async with running_edge(_yaml(bad.address, good.address, "attempts: 2")) as edge:
            gets = [await _send(edge.url) for _ in range(6)]
            posts = [await _send(edge.url, "POST", b"x" * 10) for _ in range(6)]
        assert gets == [200] * 6  # every GET that met the bad endpoint went on to the good one
        assert len(bad.requests) >= 3 and len(good.requests) >= 6
        assert 502 in posts  # a POST with a body is never sent twice
        assert posts.count(200) + posts.count(502) == 6


async def test_a_per_try_timeout_moves_on_to_another_endpoint() -> None:
    async with recording_backend(_slow) as slow, recording_backend() as good:
        retries = "attempts: 2, per_try_timeout: 200ms"
        async with running_edge(_yaml(slow.address, good.address, retries)) as edge:
            loop = asyncio.get_running_loop()
            start = loop.time()
            statuses = [await _send(edge.url) for _ in range(4)]
            elapsed = loop.time() - start
        assert statuses == [200] * 4
        assert elapsed < 2.0  # never waited for the slow endpoint's answer


async def test_the_retry_budget_stops_a_retry_storm() -> None:
    async with recording_backend(_reset) as bad1, recording_backend(_reset) as bad2:
        # No share of requests, one retry per 10 s: the first failure is retried, later
        # ones answer their first error at once.
        retries = "attempts: 2, budget_percent: 0, budget_min_per_second: 0.1"
        async with running_edge(_yaml(bad1.address, bad2.address, retries)) as edge:
            statuses = [await _send(edge.url) for _ in range(5)]
        assert statuses == [502] * 5
        assert len(bad1.requests) + len(bad2.requests) == 6  # 5 tries + 1 retry
