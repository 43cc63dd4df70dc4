"""HTTP/2 stream lifecycles through the edge: resets both ways, streaming, graceful GOAWAY.

A client RST_STREAM cancels the request upstream (the HTTP/1.1 backend connection is
closed); an endpoint that dies before answering gives 502 on the stream, and one that
dies mid-body gives a reset; a draining edge sends GOAWAY and finishes the streams it
already accepted.
"""

from __future__ import annotations

import asyncio

from tests.support.edge import running_edge
from tests.support.h2_client import H2TestClient, get_headers
from tests.support.scripted_backend import BackendConn, http_response, scripted_backend


def edge_yaml(backend: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
timeouts:
  drain: 5s
backends:
  - name: app
    resolver: {{static: {{endpoints: ["{backend}"]}}}}
    retries: {{attempts: 1}}
routes:
  - backend: app
    match: {{host: edge.test}}
"""


HEAD = get_headers(b"edge.test", b"/slow")


async def test_client_reset_cancels_the_upstream_request() -> None:
    arrived = asyncio.Event()
    closed_by_edge = asyncio.Event()

    async def script(conn: BackendConn) -> None:
        req = await conn.read_request()
        if conn.index > 0:  # later connections answer at once
            await conn.send(http_response(200, b"fine"))
            return
        assert req is not None
        arrived.set()
        await conn.wait_closed_by_peer()  # never answers; returns when the edge gives up
        closed_by_edge.set()

    async with scripted_backend(script) as be, running_edge(edge_yaml(be.address)) as edge:
        client = await H2TestClient.connect(edge.port())
        try:
            sid = client.request(HEAD)
            await asyncio.wait_for(arrived.wait(), 5)
            client.conn.reset_stream(sid, 8)  # CANCEL
            client.flush()
            await asyncio.wait_for(closed_by_edge.wait(), 5)
            # The connection itself is fine.
            ok = await client.wait(client.request(get_headers(b"edge.test", b"/after")))
            assert ok.status == 200 and ok.body == b"fine"
        finally:
            await client.aclose()


async def test_upstream_dying_before_the_head_gives_502() -> None:
    async def script(conn: BackendConn) -> None:
        await conn.read_request()
        conn.reset()

    async with scripted_backend(script) as be, running_edge(edge_yaml(be.address)) as edge:
        client = await H2TestClient.connect(edge.port())
        try:
            result = await client.wait(client.request(HEAD))
            assert result.status == 502
            assert result.header(b"x-kedge-error-type") == b"upstream-reset"
        finally:
            await client.aclose()


async def test_upstream_dying_mid_body_resets_the_stream() -> None:
    async def script(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.send(http_response(200, b"x" * 100, [("Content-Length", "100000")]))
        conn.reset()

    async with scripted_backend(script) as be, running_edge(edge_yaml(be.address)) as edge:
        client = await H2TestClient.connect(edge.port())
        try:
            result = await client.wait(client.request(HEAD))
            assert result.status == 200
            assert result.reset_code is not None and result.reset_code != 0
            assert not result.ended
        finally:
            await client.aclose()


async def test_drain_sends_goaway_and_finishes_open_streams() -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def script(conn: BackendConn) -> None:
        while (req := await conn.read_request()) is not None:
            arrived.set()
            await release.wait()
            await conn.send(http_response(200, f"done {req.target}".encode()))

    async with scripted_backend(script) as be, running_edge(edge_yaml(be.address)) as edge:
        client = await H2TestClient.connect(edge.port())
        try:
            sid = client.request(HEAD)
            await asyncio.wait_for(arrived.wait(), 5)
            drain = asyncio.get_running_loop().create_task(edge.app.drain())
            for _ in range(100):
                if client.goaway is not None:
                    break
                await asyncio.sleep(0.01)
            assert client.goaway is not None
            assert client.goaway.error_code == 0
            assert client.goaway.last_stream_id == sid
            release.set()
            result = await client.wait(sid)
            assert result.status == 200 and result.body == b"done /slow"
            await asyncio.wait_for(drain, 5)
            await client.wait_closed()
        finally:
            await client.aclose()


async def test_a_client_that_stops_reading_stops_the_backend() -> None:
    """Backpressure end to end: the client grants no window, so the edge stops reading
    the backend, whose writes then block; nothing near the body's size is buffered."""
    total = 64 * 1024 * 1024
    written = 0
    chunk = b"z" * 65536

    async def script(conn: BackendConn) -> None:
        nonlocal written
        await conn.read_request()
        conn.writer.write(http_response(200, b"", [("Content-Length", str(total))]))
        while written < total:
            conn.writer.write(chunk)
            written += len(chunk)
            await conn.writer.drain()

    async with scripted_backend(script) as be, running_edge(edge_yaml(be.address)) as edge:
        client = await H2TestClient.connect(edge.port())
        client.acknowledge = False  # never send WINDOW_UPDATE: the edge may send 64 KiB
        try:
            sid = client.request(HEAD)
            await asyncio.sleep(1.5)
            assert client.streams[sid].status == 200
            assert len(client.streams[sid].body) <= 65535
            # Socket buffers on both hops plus the edge's body high-water mark (256 KiB):
            # a few MiB at most, never the 64 MiB body.
            assert written < 16 * 1024 * 1024, written
        finally:
            await client.aclose()
