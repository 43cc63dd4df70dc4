"""Edge-made gRPC errors: trailers-only responses with grpc-status and grpc-message.

A gRPC call (content-type application/grpc over HTTP/2) that the edge cannot route, whose
backend is down, or whose deadline passes gets HTTP 200 with one HEADERS frame that ends
the stream and carries the status, as gRPC clients expect (PROTOCOL-HTTP2.md); a plain
HTTP/2 request in the same situation gets the HTTP error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.edge import RunningEdge, running_edge
from tests.support.h2_client import H2TestClient, get_headers
from tests.support.scripted_backend import BackendConn, scripted_backend


def edge_yaml(silent: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: down
    resolver: {{static: {{endpoints: ["127.0.0.1:9"]}}}}
    retries: {{attempts: 1}}
  - name: silent
    resolver: {{static: {{endpoints: ["{silent}"]}}}}
    timeouts: {{max_grpc_timeout: 300ms}}
routes:
  - backend: down
    match: {{host: down.test}}
  - backend: silent
    match: {{host: silent.test}}
"""


def grpc_call(host: bytes, timeout: bytes | None = None) -> list[tuple[bytes, bytes]]:
    fields = [
        *get_headers(host, b"/kedge.e2e.Greeter/SayHello", b"POST"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    if timeout is not None:
        fields.append((b"grpc-timeout", timeout))
    return fields


@pytest.fixture
async def edge() -> AsyncIterator[RunningEdge]:
    async def never_answers(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.wait_closed_by_peer()

    async with scripted_backend(never_answers) as be, running_edge(edge_yaml(be.address)) as e:
        yield e


# An empty gRPC message: compressed flag 0, length 0 (gRPC length-prefixed framing).
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("host", "status", "kind"),
    [
        (b"nowhere.test", b"12", b"no-route"),  # UNIMPLEMENTED
        (b"down.test", b"14", b"upstream-connect"),  # UNAVAILABLE
    ],
)
async def test_trailers_only_errors(
    edge: RunningEdge, host: bytes, status: bytes, kind: bytes
) -> None:
    client = await H2TestClient.connect(edge.port())
    try:
        result = await client.wait(client.request(grpc_call(host), EMPTY_MESSAGE))
        assert result.status == 200
        assert result.ended and result.body == b"" and result.trailers == []
        assert result.header(b"content-type") == b"application/grpc"
        assert result.header(b"grpc-status") == status
        assert result.header(b"grpc-message")
        assert result.header(b"x-kedge-error-type") == kind
        # The same failure for plain HTTP/2 is an HTTP error.
        plain = await client.wait(client.request(get_headers(host, b"/x")))
        assert plain.status in (404, 502)
        assert plain.header(b"grpc-status") is None
    finally:
        await client.aclose()


async def test_grpc_timeout_is_capped_by_the_backend(edge: RunningEdge) -> None:
    client = await H2TestClient.connect(edge.port())
    try:
        started = time.monotonic()
        sid = client.request(grpc_call(b"silent.test", b"10S"), EMPTY_MESSAGE)
        result = await client.wait(sid)
        elapsed = time.monotonic() - started
        assert result.header(b"grpc-status") == b"4"  # DEADLINE_EXCEEDED
        assert 0.25 <= elapsed < 2.0  # max_grpc_timeout 300ms, not the 10 s asked for
    finally:
        await client.aclose()


async def test_short_grpc_timeout_is_honoured(edge: RunningEdge) -> None:
    client = await H2TestClient.connect(edge.port())
    try:
        started = time.monotonic()
        result = await client.wait(client.request(grpc_call(b"silent.test", b"100m")))
        assert result.header(b"grpc-status") == b"4"
        assert time.monotonic() - started < 0.28
    finally:
        await client.aclose()


async def test_malformed_grpc_timeout_is_ignored_not_trusted(edge: RunningEdge) -> None:
    # Hardening G1: "99999999999S" (too many digits) must not overflow or be obeyed; the
    # call then has no deadline of its own, so the client's own patience decides.
    client = await H2TestClient.connect(edge.port())
    try:
        sid = client.request(grpc_call(b"silent.test", b"99999999999S"))
        with pytest.raises(TimeoutError):
            await client.wait(sid, timeout=0.6)
        assert client.streams[sid].status == 0  # still waiting: nothing was invented
    finally:
        await client.aclose()
    await asyncio.sleep(0)
