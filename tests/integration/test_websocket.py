"""WebSocket pass-through: a real `websockets` client and server with the edge between them.

The edge turns a connection into a raw tunnel only after the backend answered a WebSocket
upgrade with a real 101 naming the protocol that was asked for. Any other answer is an
ordinary response, and the bytes after the upgrade request never reach the backend raw.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request

from tests.support.edge import RunningEdge, running_edge
from tests.support.h1_wire import Message, parse_responses, raw_client, read_message
from tests.support.scripted_backend import BackendConn, http_response, scripted_backend, serve

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3's example key, accepted


def edge_yaml(endpoint: str) -> str:
    return yaml.safe_dump(
        {
            "listeners": [{"name": "http", "address": "127.0.0.1:0"}],
            "admin": {"address": "127.0.0.1:0"},
            "backends": [{"name": "ws", "resolver": {"static": {"endpoints": [endpoint]}}}],
            "routes": [{"name": "all", "backend": "ws"}],  # any host: clients send 127.0.0.1
        }
    )


class EchoServer:
    """A websockets server: greets, echoes every message, records the handshake and close."""

    def __init__(self) -> None:
        self.port = 0
        self.handshakes: list[Headers] = []
        self.close_codes: list[int | None] = []
        self.close_reasons: list[str | None] = []
        self.closed = asyncio.Event()

    def on_request(self, conn: ServerConnection, request: Request) -> None:
        self.handshakes.append(request.headers)

    async def handler(self, ws: ServerConnection) -> None:
        await ws.send("hello from backend")
        try:
            async for message in ws:
                if message == "close-from-server":
                    await ws.close(4000, "server done")
                    break
                await ws.send(message)
        finally:
            await ws.wait_closed()
            self.close_codes.append(ws.close_code)
            self.close_reasons.append(ws.close_reason)
            self.closed.set()


@asynccontextmanager
async def echo_server() -> AsyncIterator[EchoServer]:
    state = EchoServer()
    async with ws_serve(
        state.handler, "127.0.0.1", 0, process_request=state.on_request, max_size=4 << 20
    ) as server:
        state.port = int(next(iter(server.sockets)).getsockname()[1])
        yield state


def ws_url(edge: RunningEdge, path: str = "/chat") -> str:
    return f"ws://127.0.0.1:{edge.port()}{path}"


async def test_websocket_echo_text_and_binary_and_client_close() -> None:
    async with echo_server() as be, running_edge(edge_yaml(f"127.0.0.1:{be.port}")) as edge:
        async with asyncio.timeout(10):
            async with connect(ws_url(edge), proxy=None, max_size=4 << 20) as ws:
                assert await ws.recv() == "hello from backend"  # backend -> client unprompted
                await ws.send("text ü message")
                assert await ws.recv() == "text ü message"
                blob = os.urandom(3 << 20)  # bigger than any edge buffer: backpressure works
                await ws.send(blob)
                assert await ws.recv() == blob
                for i in range(50):
                    await ws.send(f"m{i}")
                assert [await ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]
                await ws.close(1000, "client bye")
            await be.closed.wait()
        assert be.close_codes == [1000] and be.close_reasons == ["client bye"]
        (headers,) = be.handshakes
        assert headers["Upgrade"].lower() == "websocket"
        assert "upgrade" in headers["Connection"].lower()
        assert headers["Via"] == "1.1 kedge"
        assert headers["X-Forwarded-For"] == "127.0.0.1"


async def test_websocket_close_from_server() -> None:
    async with echo_server() as be, running_edge(edge_yaml(f"127.0.0.1:{be.port}")) as edge:
        async with asyncio.timeout(10), connect(ws_url(edge), proxy=None) as ws:
            assert await ws.recv() == "hello from backend"
            await ws.send("close-from-server")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 4000 and info.value.rcvd.reason == "server done"
            await be.closed.wait()
        assert be.close_codes == [4000]


async def test_raw_tunnel_carries_bytes_both_ways_including_early_ones() -> None:
    got: list[bytes] = []

    async def script(conn: BackendConn) -> None:
        await conn.read_request()
        # The 101 and the first server bytes in one write: both must reach the client.
        await conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\nserver-first"
        )
        got.append(await conn.reader.readexactly(len(b"client-early" + b"client-later")))
        await conn.send(b"server-later")
        await conn.wait_closed_by_peer()

    async with scripted_backend(script) as be, running_edge(edge_yaml(be.address)) as edge:
        async with raw_client(edge.port()) as c:
            await c.send(UPGRADE + b"client-early")  # sent before the 101 came back
            head = await read_message(c.reader)
            assert head is not None and head.status == 101
            assert head.header("sec-websocket-accept") == ACCEPT.decode()
            async with asyncio.timeout(5):
                assert await c.reader.readexactly(12) == b"server-first"
                await c.send(b"client-later")
                assert await c.reader.readexactly(12) == b"server-later"
        async with asyncio.timeout(5):
            await be.closed[0].wait()  # the client's close reached the backend
        assert got == [b"client-earlyclient-later"]


@pytest.mark.parametrize(
    ("status", "extra_headers"),
    [(200, []), (404, []), (426, [("Upgrade", "websocket"), ("Connection", "Upgrade")])],
)
async def test_non_101_answer_is_a_plain_response_and_no_tunnel(
    status: int, extra_headers: list[tuple[str, str]]
) -> None:
    async def respond(req: Message, conn: BackendConn) -> None:
        # Every request gets the same answer; raw bytes passed through would show up here
        # as a garbled request (without the edge's Via), so they would be caught below.
        await conn.send(http_response(status, b"no tunnel here", extra_headers))

    smuggled = (
        b"\x81\x85\x00\x00\x00\x00hello" + b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    async with scripted_backend(serve(respond)) as be:
        async with running_edge(edge_yaml(be.address)) as edge:
            async with raw_client(edge.port()) as c:
                await c.send(UPGRADE + smuggled)
                resp = await c.response()
                assert resp.status == status and resp.body == b"no tunnel here"
                # The connection is not a tunnel: more bytes get no raw pass-through.
                try:
                    await c.send(b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n" + smuggled)
                    rest = await c.read_to_eof()
                except ConnectionError:
                    rest = b""
                for r in await parse_responses(rest):
                    assert r.status != 101
            # websockets' own client sees the status as a failed handshake.
            with pytest.raises(InvalidStatus) as info:
                async with asyncio.timeout(5), connect(ws_url(edge), proxy=None):
                    pass
            assert info.value.response.status_code == status
        # The edge has stopped (its pools closed), so every backend connection has ended.
        async with asyncio.timeout(5):
            for closed in be.closed:
                await closed.wait()
    targets = [r.target for r in be.requests]
    assert targets[0] == "/ws" and "/smuggled" not in targets
    for r in be.requests:
        assert r.header("via") == "1.1 kedge"  # only requests the edge itself forwarded


def _switching(upgrade: bytes) -> Any:
    async def script(conn: BackendConn) -> None:
        if await conn.read_request() is not None:
            await conn.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + upgrade + b"\r\n"
                b"Connection: Upgrade\r\n\r\nraw-bytes"
            )
            await conn.wait_closed_by_peer()

    return script


async def test_101_to_another_protocol_is_502() -> None:
    async with (
        scripted_backend(_switching(b"h2c")) as be,
        running_edge(edge_yaml(be.address)) as edge,
        raw_client(edge.port()) as c,
    ):
        resp = await c.request(UPGRADE)
        assert resp.status == 502
        assert resp.header("x-kedge-error-type") == "upstream-protocol"
        assert b"raw-bytes" not in resp.body


async def test_101_nobody_asked_for_is_502() -> None:
    async with (
        scripted_backend(_switching(b"websocket")) as be,
        running_edge(edge_yaml(be.address)) as edge,
        raw_client(edge.port()) as c,
    ):
        resp: Message = await c.request(b"GET /plain HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert resp.status == 502
        assert resp.header("x-kedge-error-type") == "upstream-protocol"
