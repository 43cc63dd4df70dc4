"""Framing, streaming, keep-alive, pipelining and backend-failure semantics through a real edge.

Every test runs a real edge (tests/support/edge.py) in front of a scripted raw backend
(tests/support/scripted_backend.py) and talks to it with curl or a raw socket, then asserts
what the client got and what the backend received, byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.backend import recording_backend, simple_response
from tests.support.dns_server import DnsTestServer
from tests.support.edge import one_route_yaml, running_edge
from tests.support.h1_wire import (
    Message,
    closed_port,
    curl,
    parse_responses,
    raw_client,
    read_body,
    read_message,
)
from tests.support.scripted_backend import BackendConn, http_response, scripted_backend, serve

HOST = "app.test"


def edge_yaml(
    endpoints: list[str] | None = None,
    *,
    limits: dict[str, Any] | None = None,
    backend: dict[str, Any] | None = None,
    resolver: dict[str, Any] | None = None,
) -> str:
    cfg: dict[str, Any] = {
        "listeners": [{"name": "http", "address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0"},
        "backends": [
            {
                "name": "b",
                "resolver": resolver or {"static": {"endpoints": endpoints or []}},
                **(backend or {}),
            }
        ],
        "routes": [{"name": "r", "backend": "b", "match": {"host": HOST}}],
    }
    if limits:
        cfg["limits"] = limits
    return yaml.safe_dump(cfg)


def get(target: str = "/", *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", f"Host: {HOST}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_curl_output(out: bytes) -> tuple[bytes, bytes]:
    """`curl -i` output -> (final head, body); 1xx heads before it are skipped."""
    head, _, body = out.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):
        head, _, body = body.partition(b"\r\n\r\n")
    return head, body


async def echo_body(req: Message, conn: BackendConn) -> None:
    """Answer with the body's length and SHA-256, so the client can check what arrived."""
    digest = hashlib.sha256(req.body).hexdigest()
    conn.writer.write(http_response(200, f"{len(req.body)} {digest}".encode()))


# -- chunked and Content-Length framing ------------------------------------------------------


async def test_chunked_request_from_curl_is_rechunked_to_backend(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "body").write_bytes(data)
    async with (
        scripted_backend(serve(echo_body)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        r = await curl(
            "-H", f"Host: {HOST}", "-H", "Transfer-Encoding: chunked", "-H", "Expect:",
            "--data-binary", f"@{tmp_path / 'body'}", f"{edge.url}/upload",
        )  # fmt: skip
        assert r.rc == 0, r.err
        assert r.out == f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
        (req,) = be.requests
        assert req.chunked and req.header("transfer-encoding") == "chunked"
        assert not req.has_header("content-length")
        assert req.body == data


async def test_streamed_chunked_request_trailers_reach_backend() -> None:
    head_seen = asyncio.Event()
    got: list[Message] = []

    async def script(conn: BackendConn) -> None:
        msg = await read_message(conn.reader)
        assert msg is not None
        head_seen.set()  # the edge forwarded the head before the body was complete
        await read_body(conn.reader, msg, is_response=False)
        got.append(msg)
        await conn.send(http_response(200, b"done"))
        await conn.wait_closed_by_peer()

    async with scripted_backend(script) as be, running_edge(edge_yaml([be.address])) as edge:
        async with raw_client(edge.port()) as c:
            await c.send(
                get("/t", "Transfer-Encoding: chunked", "Trailer: x-checksum", method="POST")
                + b"5\r\nhello\r\n"
            )
            async with asyncio.timeout(5):
                await head_seen.wait()
            await c.send(b"6;ext=1\r\n world\r\n0\r\nX-Checksum: abc123\r\nX-Other: 1\r\n\r\n")
            resp = await c.response()
        assert resp.status == 200 and resp.body == b"done"
        (msg,) = got
        assert msg.complete and msg.chunked
        assert msg.body == b"hello world"
        assert msg.trailer("x-checksum") == "abc123"
        assert msg.trailer("x-other") == "1"


async def test_small_chunked_request_with_trailers_in_one_write() -> None:
    async with scripted_backend() as be, running_edge(edge_yaml([be.address])) as edge:
        async with raw_client(edge.port()) as c:
            resp = await c.request(
                get("/t", "Transfer-Encoding: chunked", method="POST")
                + b"3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n"
            )
        assert resp.status == 200
        (req,) = be.requests
        assert req.body == b"abc" and req.trailer("x-sum") == "9"


async def chunked_response(req: Message, conn: BackendConn) -> None:
    await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(5):
        part = f"part-{i};".encode() * 1000
        await conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    await conn.send(b"0\r\nX-Checksum: sum-1\r\nX-Count: 5\r\n\r\n")


CHUNKED_BODY = b"".join(f"part-{i};".encode() * 1000 for i in range(5))


async def test_chunked_response_reaches_curl_and_raw_client() -> None:
    async with (
        scripted_backend(serve(chunked_response)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        r = await curl("-H", f"Host: {HOST}", f"{edge.url}/c")
        assert r.rc == 0, r.err
        assert r.out == CHUNKED_BODY
        async with raw_client(edge.port()) as c:
            resp = await c.request(get("/c", "TE: trailers"))
            assert resp.status == 200
            assert resp.chunked and resp.complete
            assert not resp.has_header("content-length")
            assert resp.body == CHUNKED_BODY
            # Trailers pass through (RFC 9110 §6.5).
            assert resp.trailer("x-checksum") == "sum-1"
            assert resp.trailer("x-count") == "5"
            # The connection is still usable after a chunked response.
            again = await c.request(get("/c"))
            assert again.body == CHUNKED_BODY


async def test_content_length_bodies_both_directions(tmp_path: Path) -> None:
    up = os.urandom(200_000)
    down = os.urandom(150_000)
    (tmp_path / "up").write_bytes(up)

    async def respond(req: Message, conn: BackendConn) -> None:
        assert req.body == up
        conn.writer.write(http_response(200, down))

    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        r = await curl(
            "-i", "-H", f"Host: {HOST}", "-H", "Expect:",
            "--data-binary", f"@{tmp_path / 'up'}", f"{edge.url}/cl",
        )  # fmt: skip
        assert r.rc == 0, r.err
        head, body = split_curl_output(r.out)
        assert head.startswith(b"HTTP/1.1 200")
        assert f"content-length: {len(down)}".encode() in head.lower()
        assert b"transfer-encoding" not in head.lower()
        assert body == down
        (req,) = be.requests
        assert req.header("content-length") == str(len(up))
        assert not req.has_header("transfer-encoding")
        assert req.body == up


async def close_delimited(req: Message, conn: BackendConn) -> None:
    await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 70_000)
    conn.writer.close()  # the body ends with the connection (RFC 9112 §6.3 rule 8)


async def test_close_delimited_response_is_chunked_for_http11_client() -> None:
    async with (
        scripted_backend(serve(close_delimited)) as be,
        running_edge(edge_yaml([be.address])) as edge,
        raw_client(edge.port()) as c,
    ):
        resp = await c.request(get("/a"))
        assert resp.status == 200
        assert resp.chunked and resp.complete and not resp.close_delimited
        assert resp.body == b"x" * 70_000
        # Re-chunked, the client connection survives the backend's close.
        again = await c.request(get("/b"))
        assert again.status == 200 and again.body == b"x" * 70_000
        assert be.connections == 2


@pytest.mark.parametrize("framing", ["close-delimited", "chunked", "content-length"])
async def test_http10_client_gets_close_delimited_or_content_length(framing: str) -> None:
    body = b"y" * 50_000

    async def respond(req: Message, conn: BackendConn) -> None:
        if framing == "close-delimited":
            await close_delimited(req, conn)
        elif framing == "chunked":
            await conn.send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            )
        else:
            await conn.send(http_response(200, body))

    expected = b"x" * 70_000 if framing == "close-delimited" else body
    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        async with raw_client(edge.port()) as c:
            await c.send(get("/old", version="1.0"))
            raw = await c.read_to_eof()
        (resp,) = await parse_responses(raw)
        assert resp.status == 200
        assert resp.header("connection") == "close"
        assert not resp.has_header("transfer-encoding")  # an HTTP/1.0 client cannot read it
        assert resp.body == expected and resp.complete
        if framing == "content-length":
            assert resp.header("content-length") == str(len(body))
        else:
            assert resp.close_delimited


# -- Expect: 100-continue --------------------------------------------------------------------


async def test_expect_continue_with_curl(tmp_path: Path) -> None:
    # curl 7.88+ adds `Expect: 100-continue` on its own for bodies over 1 MiB (1 KiB before).
    data = os.urandom(3 * 1024 * 1024 // 2)
    (tmp_path / "body").write_bytes(data)
    async with (
        scripted_backend(serve(echo_body)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        r = await curl(
            "-v", "-i", "-H", f"Host: {HOST}", "--data-binary", f"@{tmp_path / 'body'}",
            f"{edge.url}/e",
        )  # fmt: skip
        assert r.rc == 0, r.err
        assert b"> Expect: 100-continue" in r.err
        assert r.out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
        _, body = split_curl_output(r.out)
        assert body == f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
        (req,) = be.requests
        assert not req.has_header("expect")
        assert req.body == data


async def test_expect_continue_raw_client_waits_for_100() -> None:
    body = b"z" * 5000
    async with (
        scripted_backend(serve(echo_body)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        async with raw_client(edge.port()) as c:
            await c.send(
                get("/e", f"Content-Length: {len(body)}", "Expect: 100-continue", method="POST")
            )
            async with asyncio.timeout(5):
                interim = await read_message(c.reader)  # before sending a byte of body
            assert interim is not None and interim.status == 100
            await c.send(body)
            resp = await c.response("POST")
        assert resp.status == 200
        assert resp.body == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        (req,) = be.requests
        assert not req.has_header("expect") and req.body == body


async def test_expect_continue_not_sent_when_edge_refuses() -> None:
    async with scripted_backend() as be, running_edge(edge_yaml([be.address])) as edge:
        async with raw_client(edge.port()) as c:
            await c.send(
                b"POST /x HTTP/1.1\r\nHost: other.test\r\nContent-Length: 10\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            resp = await c.response("POST")
        assert resp.status == 404 and resp.interim == []  # no 100 for a body never read
        assert resp.header("x-kedge-error-type") == "no-route"
        assert be.requests == []


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"


async def test_interim_103_passes_through_before_the_response() -> None:
    async def respond(req: Message, conn: BackendConn) -> None:
        await conn.send(EARLY_HINTS)
        await conn.send(http_response(200, b"final"))

    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
        raw_client(edge.port()) as c,
    ):
        resp = await c.request(get("/h"))
        assert resp.interim == [103] and resp.status == 200 and resp.body == b"final"


async def test_endless_interim_responses_are_502_without_waiting_for_the_timeout() -> None:
    async def respond(req: Message, conn: BackendConn) -> None:
        await conn.send(EARLY_HINTS * 50)
        await conn.wait_closed_by_peer()

    async with scripted_backend(serve(respond)) as be:
        config = edge_yaml([be.address], backend={"timeouts": {"response_header": "30s"}})
        async with running_edge(config) as edge, raw_client(edge.port()) as c:
            resp = await c.request(get("/h"), timeout=3)
        assert resp.status == 502
        assert resp.header("x-kedge-error-type") == "upstream-protocol"


# -- responses without a body ----------------------------------------------------------------


async def test_head_204_304_have_no_body_and_connection_stays_usable() -> None:
    async def respond(req: Message, conn: BackendConn) -> None:
        if req.method == "HEAD" and req.target == "/chunked":
            conn.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        elif req.method == "HEAD":
            conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        elif req.target == "/204":
            conn.writer.write(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
        elif req.target == "/304":
            conn.writer.write(
                b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 99\r\n\r\n'
            )
        else:
            conn.writer.write(http_response(200, f"{req.method} {req.target}".encode()))

    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
        raw_client(edge.port()) as c,
    ):
        head = await c.request(get("/h", method="HEAD"), "HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("content-length") == "1234"  # kept: it describes the GET body
        nxt = await c.request(get("/after-head"))
        assert nxt.body == b"GET /after-head"

        head2 = await c.request(get("/chunked", method="HEAD"), "HEAD")
        assert head2.status == 200 and head2.body == b""
        nxt = await c.request(get("/after-head2"))
        assert nxt.body == b"GET /after-head2"

        r204 = await c.request(get("/204"))
        assert r204.status == 204 and r204.header("x-a") == "1"
        assert not r204.has_header("transfer-encoding")
        nxt = await c.request(get("/after-204"))
        assert nxt.body == b"GET /after-204"

        r304 = await c.request(get("/304", 'If-None-Match: "v1"'))
        assert r304.status == 304 and r304.header("etag") == '"v1"'
        assert not r304.has_header("transfer-encoding")
        nxt = await c.request(get("/after-304"))
        assert nxt.body == b"GET /after-304"
        # Nothing but the next response arrived on the connection: a stray body would have
        # been parsed as the start of the next response above.
        assert [r.target for r in be.requests] == [
            "/h", "/after-head", "/chunked", "/after-head2", "/204", "/after-204", "/304",
            "/after-304",
        ]  # fmt: skip


# -- pipelining --------------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order() -> None:
    async def respond(req: Message, conn: BackendConn) -> None:
        if req.target == "/1":
            await asyncio.sleep(0.05)  # a slow first answer must not let /2 or /3 overtake it
        conn.writer.write(http_response(200, f"{req.method} {req.target} {req.body!r}".encode()))

    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
        raw_client(edge.port()) as c,
    ):
        await c.send(
            get("/1")
            + get("/2", "Content-Length: 5", method="POST")
            + b"hello"
            + get("/3", "Connection: close")
        )
        raw = await c.read_to_eof()
    responses = await parse_responses(raw)
    assert [r.body for r in responses] == [b"GET /1 b''", b"POST /2 b'hello'", b"GET /3 b''"]
    assert [r.target for r in be.requests] == ["/1", "/2", "/3"]
    assert be.connections == 1


async def test_pipelining_beyond_the_cap_answers_up_to_it_then_closes() -> None:
    cap = 2
    async with (
        scripted_backend() as be,
        running_edge(edge_yaml([be.address], limits={"max_pipelined_requests": cap})) as edge,
        raw_client(edge.port()) as c,
    ):
        await c.send(b"".join(get(f"/{i}") for i in range(1, 9)))
        raw = await c.read_to_eof()  # a clean close: a reset would fail here
    responses = await parse_responses(raw)
    # One in flight plus `cap` queued behind it; never more, and nothing lost or reordered.
    assert cap <= len(responses) <= cap + 1, raw
    assert [r.body for r in responses] == [
        f"GET /{i}".encode() for i in range(1, len(responses) + 1)
    ]
    assert all(r.status == 200 and r.complete for r in responses)
    assert responses[-1].header("connection") == "close"
    # The backend got exactly the requests that were answered.
    assert [r.target for r in be.requests] == [f"/{i}" for i in range(1, len(responses) + 1)]


async def test_pipelining_cap_with_a_body_in_the_refused_request() -> None:
    async with (
        scripted_backend(serve(echo_body)) as be,
        running_edge(edge_yaml([be.address], limits={"max_pipelined_requests": 1})) as edge,
        raw_client(edge.port()) as c,
    ):
        post = get("/p", "Content-Length: 4", method="POST") + b"data"
        await c.send(post * 4)
        raw = await c.read_to_eof(timeout=5)  # not after the body idle timeout
    responses = await parse_responses(raw, ["POST"] * 4)
    assert 1 <= len(responses) <= 2
    assert all(r.status == 200 and r.body.startswith(b"4 ") for r in responses)
    assert responses[-1].header("connection") == "close"
    assert len(be.requests) == len(responses)


async def test_no_pipelining_allowed_still_keeps_connections_alive() -> None:
    async with (
        scripted_backend() as be,
        running_edge(edge_yaml([be.address], limits={"max_pipelined_requests": 0})) as edge,
        raw_client(edge.port()) as c,
    ):
        for i in range(3):  # sequential requests are not pipelined
            resp = await c.request(get(f"/s{i}"))
            assert resp.status == 200 and resp.header("connection") is None
        await c.send(get("/p1") + get("/p2"))  # the second waits behind the first: refused
        (resp,) = await parse_responses(await c.read_to_eof())
        assert resp.body == b"GET /p1" and resp.header("connection") == "close"
        assert [r.target for r in be.requests] == ["/s0", "/s1", "/s2", "/p1"]


# -- keep-alive --------------------------------------------------------------------------------


async def test_keepalive_reuses_one_upstream_connection() -> None:
    async with (
        scripted_backend() as be,
        running_edge(edge_yaml([be.address])) as edge,
        raw_client(edge.port()) as c,
    ):
        for i in range(20):
            resp = await c.request(get(f"/k{i}"))
            assert resp.status == 200 and resp.body == f"GET /k{i}".encode()
            assert resp.header("connection") is None
        assert be.connections == 1
        assert len(be.requests) == 20


async def test_keepalive_with_curl_reuses_connections() -> None:
    async with scripted_backend() as be, running_edge(edge_yaml([be.address])) as edge:
        urls = [f"{edge.url}/c{i}" for i in range(5)]
        r = await curl("-v", "-H", f"Host: {HOST}", *urls)
        assert r.rc == 0, r.err
        assert r.out == b"".join(f"GET /c{i}".encode() for i in range(5))
        assert r.err.count(b"Re-using existing connection") == 4
        assert be.connections == 1


async def test_connection_close_from_client() -> None:
    async with scripted_backend() as be, running_edge(edge_yaml([be.address])) as edge:
        async with raw_client(edge.port()) as c:
            await c.send(get("/bye", "Connection: close"))
            (resp,) = await parse_responses(await c.read_to_eof())
        assert resp.status == 200 and resp.header("connection") == "close"
        # Connection is hop-by-hop: the backend's connection stays pooled and is reused.
        assert not be.requests[0].has_header("connection")
        async with raw_client(edge.port()) as c:
            assert (await c.request(get("/again"))).status == 200
        assert be.connections == 1


async def test_http10_defaults_to_close_and_honours_keep_alive() -> None:
    async with scripted_backend() as be, running_edge(edge_yaml([be.address])) as edge:
        async with raw_client(edge.port()) as c:
            await c.send(get("/a", version="1.0"))
            (resp,) = await parse_responses(await c.read_to_eof())
        assert resp.start_line.startswith("HTTP/1.1 200")
        assert resp.header("connection") == "close" and resp.body == b"GET /a"
        async with raw_client(edge.port()) as c:
            resp = await c.request(get("/b", "Connection: keep-alive", version="1.0"))
            assert resp.header("connection") == "keep-alive" and resp.body == b"GET /b"
            resp = await c.request(get("/c", "Connection: keep-alive", version="1.0"))
            assert resp.body == b"GET /c"
        assert [r.target for r in be.requests] == ["/a", "/b", "/c"]


# -- backend failures --------------------------------------------------------------------------


async def test_backend_closing_mid_content_length_body_truncates_response() -> None:
    sent = os.urandom(50_000)

    async def respond(req: Message, conn: BackendConn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + sent)
        conn.writer.close()

    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        r = await curl("-H", f"Host: {HOST}", f"{edge.url}/t")
        assert r.rc == 18, (r.rc, r.err)  # CURLE_PARTIAL_FILE: closed before Content-Length
        async with raw_client(edge.port()) as c:
            await c.send(get("/t"))
            (resp,) = await parse_responses(await c.read_to_eof())
        assert resp.header("content-length") == "100000"
        assert not resp.complete
        assert resp.body == sent  # everything the backend sent arrived before the close


async def test_backend_closing_mid_chunked_body_truncates_response() -> None:
    async def respond(req: Message, conn: BackendConn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await conn.send(b"6\r\n world\r\n")
        conn.writer.close()

    async with (
        scripted_backend(serve(respond)) as be,
        running_edge(edge_yaml([be.address])) as edge,
    ):
        r = await curl("-H", f"Host: {HOST}", f"{edge.url}/t")
        assert r.rc == 18, (r.rc, r.err)
        async with raw_client(edge.port()) as c:
            await c.send(get("/t"))
            raw = await c.read_to_eof()
        assert not raw.endswith(b"0\r\n\r\n")
        (resp,) = await parse_responses(raw)
        assert resp.chunked and not resp.complete and resp.trailers == []
        assert resp.body == b"hello world"


INVALID_RESPONSES = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "bad-status-line": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "huge-headers": b"HTTP/1.1 200 OK\r\nX-Big: "
    + b"a" * 8000
    + b"\r\nContent-Length: 2\r\n\r\nok",
    "huge-headers-split": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(80))
    + b"Content-Length: 2\r\n\r\nok",
    "duplicate-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\nok",
}


@pytest.mark.parametrize("case", sorted(INVALID_RESPONSES))
async def test_invalid_backend_response_is_502_and_connection_not_reused(case: str) -> None:
    async def script(conn: BackendConn) -> None:
        while await conn.read_request() is not None:
            if len(conn.backend.requests) == 1:
                await conn.send(INVALID_RESPONSES[case])
                await conn.wait_closed_by_peer()  # the edge must drop this connection
                return
            await conn.send(http_response(200, b"fine"))

    async with scripted_backend(script) as be:
        config = edge_yaml([be.address], limits={"max_response_header_bytes": 4096})
        async with running_edge(config) as edge, raw_client(edge.port()) as c:
            resp = await c.request(get("/bad"))
            assert resp.status == 502
            assert resp.header("x-kedge-error-type") == "upstream-protocol"
            resp = await c.request(get("/good"))
            assert resp.status == 200 and resp.body == b"fine"
            assert be.connections == 2


async def test_backend_that_never_answers_times_out_with_504() -> None:
    async def script(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.wait_closed_by_peer()

    async with scripted_backend(script) as be:
        config = edge_yaml([be.address], backend={"timeouts": {"response_header": "1s"}})
        async with running_edge(config) as edge, raw_client(edge.port()) as c:
            t0 = time.monotonic()
            resp = await c.request(get("/slow"), timeout=10)
            elapsed = time.monotonic() - t0
            assert resp.status == 504
            assert resp.header("x-kedge-error-type") == "upstream-timeout"
            assert 0.9 <= elapsed < 3.0, elapsed
            async with asyncio.timeout(2):
                await be.closed[0].wait()  # the timed-out connection is closed, not pooled


async def test_connect_refused_is_502_upstream_connect() -> None:
    async with running_edge(edge_yaml([f"127.0.0.1:{closed_port()}"])) as edge:
        r = await curl("-i", "-H", f"Host: {HOST}", f"{edge.url}/x")
        head, _ = split_curl_output(r.out)
        assert head.startswith(b"HTTP/1.1 502")
        assert b"x-kedge-error-type: upstream-connect" in head.lower()


async def test_no_endpoints_is_503() -> None:
    async with DnsTestServer() as dns:
        dns.set_aaaa("empty.test", ["::1"])  # NODATA for A: resolved, and empty
        resolver = {
            "dns": {
                "name": "empty.test",
                "port": 80,
                "families": ["A"],
                "nameservers": [str(dns.address)],
            }
        }
        async with running_edge(edge_yaml(resolver=resolver)) as edge:
            r = await curl("-i", "-H", f"Host: {HOST}", f"{edge.url}/x")
        head, _ = split_curl_output(r.out)
        assert head.startswith(b"HTTP/1.1 503")
        assert b"x-kedge-error-type: no-endpoints" in head.lower()


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_connect_failure_is_retried_on_the_next_endpoint(method: str) -> None:
    # A refused connect proves nothing was sent, so even a POST may go elsewhere.
    async with scripted_backend(serve(echo_body)) as be:
        config = edge_yaml([f"127.0.0.1:{closed_port()}", be.address])
        async with running_edge(config) as edge, raw_client(edge.port()) as c:
            body = b"payload"
            extra = [f"Content-Length: {len(body)}"] if method == "POST" else []
            # Round robin: over two requests the refusing endpoint is tried first once.
            for _ in range(2):
                resp = await c.request(
                    get("/r", *extra, method=method) + (body if method == "POST" else b""),
                    method,
                )
                assert resp.status == 200
            expected = body if method == "POST" else b""
            assert [r.body for r in be.requests] == [expected, expected]  # once per request


async def test_post_reset_after_receipt_is_not_retried() -> None:
    async def resetter(conn: BackendConn) -> None:
        if await conn.read_request() is not None:
            conn.reset()  # the request arrived: retrying elsewhere could apply it twice

    async with scripted_backend(resetter) as bad, scripted_backend(serve(echo_body)) as good:
        async with running_edge(edge_yaml([bad.address, good.address])) as edge:
            statuses = []
            for _ in range(2):  # round robin: each endpoint is first once
                async with raw_client(edge.port()) as c:
                    resp = await c.request(
                        get("/p", "Content-Length: 4", method="POST") + b"data", "POST"
                    )
                statuses.append(resp.status)
                if resp.status == 502:
                    assert resp.header("x-kedge-error-type") == "upstream-reset"
        assert sorted(statuses) == [200, 502]
        assert len(bad.requests) == 1 and len(good.requests) == 1


def stale_after_first(fresh_resets: bool) -> Any:
    """Connection 0 answers its first request, then resets on the next (a stale keep-alive)."""

    async def script(conn: BackendConn) -> None:
        while (req := await conn.read_request()) is not None:
            if conn.requests > 1 or (conn.index > 0 and fresh_resets):
                conn.reset()
                return
            await conn.send(http_response(200, f"{req.method} {req.target}".encode()))

    return script


async def test_get_on_stale_pooled_connection_is_retried_once_on_a_fresh_one() -> None:
    async with scripted_backend(stale_after_first(False)) as be:
        async with running_edge(edge_yaml([be.address])) as edge, raw_client(edge.port()) as c:
            assert (await c.request(get("/1"))).status == 200
            resp = await c.request(get("/2"))
            assert resp.status == 200 and resp.body == b"GET /2"
        assert be.connections == 2
        assert [r.target for r in be.requests] == ["/1", "/2", "/2"]


async def test_stale_retry_happens_only_once() -> None:
    async with scripted_backend(stale_after_first(True)) as be:
        async with running_edge(edge_yaml([be.address])) as edge, raw_client(edge.port()) as c:
            assert (await c.request(get("/1"))).status == 200
            resp = await c.request(get("/2"))
            assert resp.status == 502
            assert resp.header("x-kedge-error-type") == "upstream-reset"
        assert be.connections == 2
        assert [r.target for r in be.requests] == ["/1", "/2", "/2"]


async def test_post_on_stale_pooled_connection_is_not_retried() -> None:
    async with scripted_backend(stale_after_first(False)) as be:
        async with running_edge(edge_yaml([be.address])) as edge, raw_client(edge.port()) as c:
            assert (await c.request(get("/1"))).status == 200
            resp = await c.request(get("/2", "Content-Length: 2", method="POST") + b"hi", "POST")
            assert resp.status == 502
            assert resp.header("x-kedge-error-type") == "upstream-reset"
        assert be.connections == 1
        assert [r.target for r in be.requests] == ["/1", "/2"]


# -- client disconnects ------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before-head", "mid-body"])
async def test_client_disconnect_closes_backend_connection_promptly(when: str) -> None:
    closed_at: list[float] = []
    streaming = asyncio.Event()

    async def script(conn: BackendConn) -> None:
        await conn.read_request()
        watcher = asyncio.create_task(conn.wait_closed_by_peer())
        try:
            if when == "mid-body":
                await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            streaming.set()
            while not watcher.done():  # a slow stream: one chunk every 20 ms
                if when == "mid-body":
                    conn.writer.write(b"6\r\nchunk\n\r\n")
                await asyncio.wait([watcher], timeout=0.02)
        except ConnectionError:
            pass
        closed_at.append(time.monotonic())
        watcher.cancel()

    async with scripted_backend(script) as be, running_edge(edge_yaml([be.address])) as edge:
        async with raw_client(edge.port()) as c:
            await c.send(get("/stream"))
            async with asyncio.timeout(5):
                await streaming.wait()
                if when == "mid-body":
                    msg = await read_message(c.reader)
                    assert msg is not None and msg.status == 200
                    assert await c.reader.readexactly(22)  # some chunks arrived
            gone = time.monotonic()
        async with asyncio.timeout(2):
            await be.closed[0].wait()
        assert closed_at and closed_at[0] - gone < 1.0, closed_at[0] - gone


async def test_extra_bytes_after_a_response_never_reach_the_next_request() -> None:
    """A backend that sends a second, unsolicited response after the first one must not
    have it served to the next request on the pooled connection (response desync)."""

    async def respond(req, writer):  # type: ignore[no-untyped-def]
        if req.target == "/first":
            writer.write(simple_response(200, b"first") + simple_response(200, b"SMUGGLED"))
        else:
            writer.write(simple_response(200, b"second"))

    async with (
        recording_backend(respond) as be,
        running_edge(one_route_yaml(be.address)) as edge,
    ):
        bodies = []
        for path in ("/first", "/second"):
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.port())
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".encode()
            )
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            bodies.append(data.rsplit(b"\r\n\r\n", 1)[-1])
            await asyncio.sleep(0.05)  # let the unsolicited bytes arrive on the idle connection
        assert bodies == [b"first", b"second"]


async def test_a_slow_upload_is_not_cut_by_the_response_header_timeout() -> None:
    """The response-head timeout (1 s here) starts after the request body is sent: an
    upload that trickles for 2.5 s still gets the backend's answer."""

    async with (
        recording_backend() as be,
        running_edge(
            one_route_yaml(be.address, backend_extra="timeouts: {response_header: 1s}")
        ) as edge,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port())
        writer.write(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\n")
        for chunk in (b"a", b"b", b"c", b"d", b"e"):
            await asyncio.sleep(0.5)
            writer.write(chunk)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200"), head
        assert be.requests[0].body == b"abcde"
