"""Smoke test: a request through the edge to a recording backend, with real sockets."""

from __future__ import annotations

import asyncio

from tests.support.backend import recording_backend
from tests.support.edge import running_edge


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
        endpoints: ["{backend}"]
routes:
  - name: r
    backend: b
    match:
      host: app.test
"""


async def test_get_through_edge_with_curl() -> None:
    async with recording_backend() as be, running_edge(edge_yaml(be.address)) as edge:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-s",
            "-i",
            "-H",
            "Host: app.test",
            f"{edge.url}/x?y=1",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert out.startswith(b"HTTP/1.1 200"), out
        assert out.endswith(b"hello from backend")
        assert len(be.requests) == 1
        req = be.requests[0]
        assert req.target == "/x?y=1"
        assert req.header("host") == "app.test"
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert req.header("via") == "1.1 kedge"
        rid = req.header("x-request-id")
        assert rid and rid.encode() in out
