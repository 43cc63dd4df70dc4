"""Reloads while HTTP/2 streams are in flight lose no request (issue 3: "GOAWAY on graceful
shutdown and reload with no request lost").

A reload swaps the config for new exchanges and keeps client connections open (their
streams go on; nothing needs a GOAWAY), so h2load's multiplexed connections must see every
request answered while the route flips between two backends.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import running_edge


def _yaml(backend: RecordingBackend) -> str:
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
backends:
  - name: app
    resolver: {{static: {{endpoints: ["{backend.address}"]}}}}
routes: [{{name: app, backend: app, match: {{host: edge.test}}}}]
"""


@pytest.mark.slow
async def test_reloads_during_h2load_lose_no_request() -> None:
    if shutil.which("h2load") is None:
        pytest.fail("h2load (apt nghttp2-client) is required")
    total = 4000
    async with (
        recording_backend() as a,
        recording_backend() as b,
        running_edge(_yaml(a)) as edge,
    ):
        proc = await asyncio.create_subprocess_exec(
            "h2load", "-n", str(total), "-c", "4", "-m", "16", "-H", ":authority: edge.test",
            f"http://127.0.0.1:{edge.port('http')}/load",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        reloads = 0
        backends = [b, a]
        # Flip the route's backend while the load runs (bounded: at most 20 reloads).
        while proc.returncode is None and reloads < 20:
            served = len(a.requests) + len(b.requests)
            if served >= total:
                break
            edge.write_config(_yaml(backends[reloads % 2]))
            assert await edge.app.reload("test") is True
            reloads += 1
            await asyncio.sleep(0.05)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert f"{total} succeeded, 0 failed, 0 errored" in text, text
        assert f"status codes: {total} 2xx" in text, text
        assert reloads >= 2, f"the load ended before two reloads ({reloads}): {text}"
        # Both backends served part of the load, and together all of it.
        assert a.requests and b.requests
        assert len(a.requests) + len(b.requests) == total
        # Connections stayed open across the reloads: h2load opened only its 4.
        assert edge.app.metrics.connections_accepted.labels("http").value == 4
