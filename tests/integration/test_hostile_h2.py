"""Hostile HTTP/2 input: what python-hyper h2 lets through is refused by the edge.

Each bad request head gets a clear error on its own stream (status and
`x-kedge-error-type`), nothing reaches the backend, and the connection goes on serving.
What h2 itself refuses ends the connection with GOAWAY, as RFC 9113 §8.1.1 allows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.h2_client import H2TestClient, get_headers


def edge_yaml(backend: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: app
    resolver: {{static: {{endpoints: ["{backend}"]}}}}
routes:
  - backend: app
    match: {{host: edge.test}}
"""


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RunningEdge, RecordingBackend]]:
    async with recording_backend() as be, running_edge(edge_yaml(be.address)) as edge:
        yield edge, be


OK = get_headers(b"edge.test", b"/ok")

BAD_HEADS = [
    ("path without slash", get_headers(b"edge.test", b"hello"), 400),
    ("asterisk path", get_headers(b"edge.test", b"*", b"OPTIONS"), 400),
    ("garbage scheme", [(b":method", b"GET"), (b":scheme", b"http://localhost/?"),
                        (b":authority", b"edge.test"), (b":path", b"/")], 400),
    ("authority with userinfo", get_headers(b"user@edge.test", b"/"), 400),
    ("dot segments above root", get_headers(b"edge.test", b"/../etc/passwd"), 400),
    ("encoded slash", get_headers(b"edge.test", b"/a%2Fb"), 400),
    ("method not a token", get_headers(b"edge.test", b"/", b"GE T"), 400),
    # A CONNECT (RFC 9113 §8.5) for a name no `proxy_mode: connect` route or adhoc rule
    # takes: refused before anything is dialled.
    ("connect without a route", [(b":method", b"CONNECT"), (b":authority", b"edge.test:443")],
     404),
]  # fmt: skip


@pytest.mark.parametrize(("name", "head", "status"), BAD_HEADS, ids=[c[0] for c in BAD_HEADS])
async def test_bad_heads_are_refused_on_their_stream(
    setup: tuple[RunningEdge, RecordingBackend],
    name: str,
    head: list[tuple[bytes, bytes]],
    status: int,
) -> None:
    edge, be = setup
    client = await H2TestClient.connect(edge.port())
    try:
        sid = client.request(head)
        result = await client.wait(sid)
        assert result.status == status, (name, result)
        assert result.header(b"x-kedge-error-type") is not None
        assert be.requests == []
        # The connection still serves well-formed requests.
        ok = await client.wait(client.request(OK))
        assert ok.status == 200
        assert [r.target for r in be.requests] == ["/ok"]
    finally:
        await client.aclose()


H2_REFUSED = [
    ("missing authority and host", [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]),
    ("upper-case name", [*OK, (b"X-Upper", b"1")]),
    ("connection header", [*OK, (b"connection", b"keep-alive")]),
    ("te other than trailers", [*OK, (b"te", b"gzip")]),
    ("host differs from authority", [*OK, (b"host", b"other.test")]),
    ("duplicate :path", [*OK, (b":path", b"/again")]),
    ("transfer-encoding", [*OK, (b"transfer-encoding", b"chunked")]),
]


@pytest.mark.parametrize(("name", "head"), H2_REFUSED, ids=[c[0] for c in H2_REFUSED])
async def test_malformed_blocks_end_the_connection(
    setup: tuple[RunningEdge, RecordingBackend], name: str, head: list[tuple[bytes, bytes]]
) -> None:
    edge, be = setup
    client = await H2TestClient.connect(edge.port())
    try:
        client.request(head)
        await client.wait_closed()
        assert client.goaway is not None, name
        assert client.goaway.error_code == 1  # PROTOCOL_ERROR
        assert be.requests == []
    finally:
        await client.aclose()


async def test_content_length_mismatch_is_not_forwarded(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    client = await H2TestClient.connect(edge.port())
    try:
        head = [*get_headers(b"edge.test", b"/up", b"POST"), (b"content-length", b"10")]
        client.request(head, b"abc")
        await client.wait_closed()
        assert all(r.body != b"abc" or r.target != "/up" for r in be.requests)
    finally:
        await client.aclose()
