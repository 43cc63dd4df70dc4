"""Hostile HTTP/1.1 input against a real edge: framing, smuggling, hop-by-hop abuse, request IDs.

Each case sends exact bytes over a raw socket (reference/hardening.md §2.1-2.4) and asserts
the status, `X-Kedge-Error-Type`, that the connection is closed, and that the recording
backend received nothing (no request and, where the edge can know before connecting, no
connection). A hypothesis test throws byte soup at the edge and checks it stays well-behaved.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import orjson
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.raw_client import RawResponse, parse_head, raw_connection, raw_exchange

HOST = b"app.test"


def edge_yaml(backend: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
limits:
  max_request_body_bytes: 1000
timeouts:
  request_header: 2s
  request_body_idle: 2s
  keepalive_idle: 5s
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


@asynccontextmanager
async def stack() -> AsyncIterator[tuple[RunningEdge, RecordingBackend]]:
    async with recording_backend() as be, running_edge(edge_yaml(be.address)) as edge:
        yield edge, be


def assert_error(resp: RawResponse, status: int, kind: str) -> None:
    """The documented error shape: status, one-line reason, kind, request ID, text body."""
    assert resp.status == status, (resp.status, resp.header("x-kedge-error"))
    assert resp.header("x-kedge-error-type") == kind
    reason = resp.header("x-kedge-error")
    assert reason, "X-Kedge-Error missing or empty"
    # The raw parser already refused CR/LF inside the head; the value is printable ASCII.
    assert re.fullmatch(r"[ -~]+", reason), reason
    assert len(resp.header_all("x-kedge-error")) == 1
    rid = resp.header("x-request-id")
    assert rid and re.fullmatch(r"[A-Za-z0-9._:+=/-]{1,128}", rid)
    assert (resp.header("content-type") or "").startswith("text/plain")
    assert resp.header("x-content-type-options") == "nosniff"
    assert resp.body and resp.body.startswith(str(status).encode())
    assert b"Traceback" not in resp.body and b'File "' not in resp.body


def request_lines(edge: RunningEdge) -> list[dict[str, object]]:
    """Access-log lines for requests (not events such as "edge started")."""
    lines = [orjson.loads(line) for line in edge.log_lines()]
    return [line for line in lines if "status" in line]


def req(*lines: bytes, body: bytes = b"") -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def post(*headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return req(b"POST / HTTP/" + version, b"Host: app.test", *headers, body=body)


def get(*headers: bytes, target: bytes = b"/") -> bytes:
    return req(b"GET " + target + b" HTTP/1.1", b"Host: app.test", *headers)


CHUNKED = b"Transfer-Encoding: chunked"

# Every one of these must be answered 400 bad-request, the connection closed, and nothing
# (not even a connection) reach the backend.
MALFORMED_400 = [
    # S1: Content-Length together with Transfer-Encoding, in both orders.
    pytest.param(post(b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nG"), id="cl-with-te"),
    pytest.param(post(CHUNKED, b"Content-Length: 6", body=b"0\r\n\r\nG"), id="te-with-cl"),
    # S7/S8: duplicate Content-Length, same and different values.
    pytest.param(post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), id="dup-cl-same"),
    pytest.param(post(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"), id="dup-cl-diff"),
    # S8/S9: invalid Content-Length values.
    pytest.param(post(b"Content-Length: +3", body=b"abc"), id="cl-plus"),
    pytest.param(post(b"Content-Length: -1", body=b"abc"), id="cl-negative"),
    pytest.param(post(b"Content-Length: 0x3", body=b"abc"), id="cl-hex"),
    pytest.param(post(b"Content-Length: 3, 3", body=b"abc"), id="cl-list"),
    pytest.param(post(b"Content-Length: 3a", body=b"abc"), id="cl-trailing-garbage"),
    pytest.param(post(b"Content-Length: 99999999999999999999999", body=b"abc"), id="cl-overflow"),
    # S10/S11: invalid chunk sizes and chunk framing.
    pytest.param(
        post(CHUNKED, body=b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n"), id="chunk-overflow"
    ),
    pytest.param(post(CHUNKED, body=b"0x3\r\nabc\r\n0\r\n\r\n"), id="chunk-0x"),
    pytest.param(post(CHUNKED, body=b"3 \r\nabc\r\n0\r\n\r\n"), id="chunk-trailing-space"),
    pytest.param(post(CHUNKED, body=b"-3\r\nabc\r\n0\r\n\r\n"), id="chunk-negative"),
    pytest.param(post(CHUNKED, body=b"3\r\nabcXX0\r\n\r\n"), id="chunk-data-no-crlf"),
    pytest.param(post(CHUNKED, body=b"3\nabc\r\n0\r\n\r\n"), id="chunk-size-bare-lf"),
    # S12: bare LF line endings (request line, and one header line).
    pytest.param(b"GET / HTTP/1.1\nHost: app.test\n\n", id="bare-lf"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: app.test\nX: y\r\n\r\n", id="bare-lf-in-header"),
    # S14: obs-fold.
    pytest.param(get(b"X-A: a", b" folded"), id="obs-fold"),
    pytest.param(get(b"X-A: a", b"\tfolded"), id="obs-fold-tab"),
    # S16: HTTP/0.9 and malformed request lines.
    pytest.param(b"GET /\r\n", id="http-0.9"),
    pytest.param(b"GET /\r\nHost: app.test\r\n\r\n", id="http-0.9-with-headers"),
    pytest.param(req(b"GET / HTTP/1.2", b"Host: app.test"), id="http-1.2"),
    pytest.param(req(b"GET /a b HTTP/1.1", b"Host: app.test"), id="space-in-target"),
    pytest.param(req(b"get / HTTP/1.1", b"Host: app.test"), id="lower-case-method"),
    pytest.param(req(b"G@T / HTTP/1.1", b"Host: app.test"), id="bad-method-char"),
    # S15: invalid header names, space before the colon.
    pytest.param(get(b"X Y: z"), id="space-in-name"),
    pytest.param(get(b": z"), id="empty-name"),
    pytest.param(get(b"X-A : z"), id="space-before-colon"),
    pytest.param(get(b"X(A): z"), id="non-token-name"),
    pytest.param(post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), id="te-space-colon"),
    # S13: CR, NUL and DEL inside values.
    pytest.param(get(b"X-A: a\rb"), id="cr-in-value"),
    pytest.param(get(b"X-A: a\x00b"), id="nul-in-value"),
    pytest.param(get(b"X-A: a\x7fb"), id="del-in-value"),
    # S6: Transfer-Encoding on HTTP/1.0.
    pytest.param(post(CHUNKED, body=b"0\r\n\r\n", version=b"1.0"), id="te-on-http-1.0"),
    pytest.param(post(CHUNKED, CHUNKED, body=b"0\r\n\r\n"), id="te-twice"),
    # RFC 9112 §6.3: chunked not the final coding, so the length is unknowable: 400.
    pytest.param(post(b"Transfer-Encoding: gzip", body=b"abc"), id="te-gzip-only"),
    pytest.param(post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), id="te-xchunked"),
    pytest.param(post(b"Transfer-Encoding: identity", body=b"abc"), id="te-identity"),
    pytest.param(post(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), id="te-gzip-last"),
    # A2/A1: two Host headers, missing Host.
    pytest.param(req(b"GET / HTTP/1.1", b"Host: app.test", b"Host: app.test"), id="two-hosts"),
    pytest.param(
        req(b"GET / HTTP/1.1", b"Host: app.test", b"Host: evil.test"), id="two-hosts-diff"
    ),
    pytest.param(req(b"GET / HTTP/1.1"), id="missing-host"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host:"), id="empty-host"),
    # P11: absolute-form target whose authority differs from Host.
    pytest.param(req(b"GET http://evil.test/ HTTP/1.1", b"Host: app.test"), id="abs-form-mismatch"),
    pytest.param(
        req(b"GET http://app.test:8080/ HTTP/1.1", b"Host: app.test"), id="abs-form-port-mismatch"
    ),
    # P3/P6/P1: encoded slash, backslash, dot-segments above the root.
    pytest.param(get(target=b"/a%2Fb"), id="encoded-slash"),
    pytest.param(get(target=b"/a%2fb"), id="encoded-slash-lower"),
    pytest.param(get(target=b"/a\\b"), id="backslash"),
    pytest.param(get(target=b"/a%5Cb"), id="encoded-backslash"),
    pytest.param(get(target=b"/../etc/passwd"), id="dotdot-above-root"),
    pytest.param(get(target=b"/a/../../x"), id="dotdot-above-root-deep"),
    pytest.param(get(target=b"/%2e%2e/x"), id="encoded-dotdot-above-root"),
    pytest.param(get(target=b"/%c0%ae%c0%ae/x"), id="overlong-utf8-dot"),
    pytest.param(get(target=b"/a%0d%0aX-Injected:%201"), id="encoded-crlf-in-path"),
    pytest.param(get(target=b"/a#frag"), id="fragment"),
    pytest.param(get(target=b"/caf\xc3\xa9"), id="raw-non-ascii-path"),
    # A3: userinfo and other garbage in Host.
    pytest.param(req(b"GET / HTTP/1.1", b"Host: user@app.test"), id="host-userinfo"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: app.test:80:80"), id="host-two-ports"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: app.test/x"), id="host-with-path"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: app_test"), id="host-underscore"),
    pytest.param(req(b"GET http://u@app.test/ HTTP/1.1", b"Host: u@app.test"), id="abs-userinfo"),
]


@pytest.mark.parametrize("raw", MALFORMED_400)
async def test_malformed_request_gets_400_closes_and_never_reaches_backend(raw: bytes) -> None:
    async with stack() as (edge, be):
        resp, closed, extra = await raw_exchange(edge.port(), raw)
        assert_error(resp, 400, "bad-request")
        assert resp.header("connection") == "close"
        assert closed, "the edge must close after a framing error"
        assert extra == b"", "nothing may follow the error response"
        assert be.requests == []
        assert be.connections == 0
        # The refusal is logged like any request, with the same request ID.
        lines = request_lines(edge)
        assert [(x["status"], x["error_kind"]) for x in lines] == [(400, "bad-request")]
        assert lines[0]["request_id"] == resp.header("x-request-id")


async def test_http2_request_line_gets_505() -> None:
    # An HTTP/1 request line naming 2.0 is a version the connection does not speak
    # (RFC 9110 §15.6.6); HTTP/1.2 and other unknown minors are a 400 (see MALFORMED_400).
    async with stack() as (edge, be):
        resp, closed, _ = await raw_exchange(edge.port(), req(b"GET / HTTP/2.0", b"Host: app.test"))
        assert_error(resp, 505, "version-not-supported")
        assert closed
        assert be.requests == [] and be.connections == 0


@pytest.mark.parametrize(
    "te", [b"gzip, chunked", b"identity, chunked", b"x, chunked"], ids=["gzip", "identity", "x"]
)
async def test_unsupported_transfer_coding_gets_501(te: bytes) -> None:
    # Chunked is final, so the framing is sound, but the edge decodes no other coding:
    # RFC 9112 §6.1 says 501 (nginx answers 501 too). Forwarding the still-coded body
    # without its Transfer-Encoding would change the message.
    raw = post(b"Transfer-Encoding: " + te, body=b"3\r\nabc\r\n0\r\n\r\n")
    async with stack() as (edge, be):
        resp, closed, _ = await raw_exchange(edge.port(), raw)
        assert_error(resp, 501, "not-implemented")
        assert closed
        assert be.requests == [] and be.connections == 0


@pytest.mark.parametrize(
    "te",
    [b"chunked", b"Chunked", b"CHUNKED", b"\tchunked"],
    ids=["lower", "title", "upper", "htab"],
)
async def test_valid_chunked_spellings_are_accepted(te: bytes) -> None:
    # S5: HTAB is legal OWS; transfer-coding names are case-insensitive (RFC 9112 §7).
    raw = post(
        b"Transfer-Encoding:" + (te if te.startswith(b"\t") else b" " + te),
        body=b"3\r\nabc\r\n0\r\n\r\n",
    )
    async with stack() as (edge, be):
        resp, _, _ = await raw_exchange(edge.port(), raw)
        assert resp.status == 200
        assert len(be.requests) == 1 and be.requests[0].body == b"abc"


# -- smuggling end to end -------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SMUGGLING = [
    # CL.TE: a front end using CL forwards all; a back end using TE sees /smuggled.
    pytest.param(
        post(b"Content-Length: %d" % (5 + len(SMUGGLED)), CHUNKED, body=b"0\r\n\r\n" + SMUGGLED),
        id="cl-te",
    ),
    # TE.CL: the reverse.
    pytest.param(
        post(CHUNKED, b"Content-Length: 4", body=_chunk(b"x" + SMUGGLED) + b"0\r\n\r\n"),
        id="te-cl",
    ),
    # TE obfuscations that some parsers ignore (then CL wins at one hop, TE at another).
    pytest.param(
        post(
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: x",
            body=b"0\r\n\r\n" + SMUGGLED,
        ),
        id="te-te-obfuscated",
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Transfer-Encoding:\x0bchunked", body=b"0\r\n\r\n" + SMUGGLED),
        id="te-vertical-tab",
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Transfer-Encoding : chunked", body=b"0\r\n\r\n" + SMUGGLED),
        id="te-space-colon",
    ),
    pytest.param(
        post(
            b"Content-Length: 5",
            b"Content-Length: %d" % (5 + len(SMUGGLED)),
            body=b"0\r\n\r\n" + SMUGGLED,
        ),
        id="cl-cl",
    ),
    # A bare-LF request whose strict reading hides a second request.
    pytest.param(
        b"GET /a HTTP/1.1\r\nHost: app.test\r\nX: y\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        id="bare-lf-hidden-cl",
    ),
]


@pytest.mark.parametrize("raw", SMUGGLING)
async def test_smuggled_request_never_reaches_backend(raw: bytes) -> None:
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        resp = await conn.read_response()
        assert_error(resp, 400, "bad-request")
        assert await conn.wait_closed() == b""
        assert [r.target for r in be.requests] == []
        assert be.connections == 0


async def test_smuggling_after_a_valid_pipelined_request() -> None:
    # The first request is fine and is answered; the second is CL.TE with a smuggled third.
    # Answers come in order, then the connection closes; the backend sees only the first.
    first = get(target=b"/first")
    second = post(
        b"Content-Length: %d" % (5 + len(SMUGGLED)), CHUNKED, body=b"0\r\n\r\n" + SMUGGLED
    )
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(first + second)
        r1 = await conn.read_response()
        assert r1.status == 200 and r1.body == b"hello from backend"
        r2 = await conn.read_response()
        assert_error(r2, 400, "bad-request")
        assert await conn.wait_closed() == b""
        assert [r.target for r in be.requests] == ["/first"]


async def test_request_shaped_body_is_framed_once() -> None:
    # S17: a body that looks like a request is only a body; the next real request follows.
    body = SMUGGLED
    raw = post(b"Content-Length: %d" % len(body), body=body) + get(target=b"/second")
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        assert (await conn.read_response()).status == 200
        assert (await conn.read_response()).status == 200
        assert [(r.method, r.target) for r in be.requests] == [("POST", "/"), ("GET", "/second")]
        assert be.requests[0].body == SMUGGLED


# -- hop-by-hop abuse and the edge's own headers --------------------------------------------


async def _forward_one(raw: bytes) -> tuple[RawResponse, RecordingBackend]:
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        resp = await conn.read_response()
        assert resp.status == 200, resp
        assert len(be.requests) == 1
        return resp, be


async def test_connection_nominations_cannot_remove_edge_headers() -> None:
    _, be = await _forward_one(
        get(b"Connection: X-Forwarded-For, Via, X-Request-Id, X-Forwarded-Proto, Forwarded")
    )
    r = be.requests[0]
    assert r.header_all("x-forwarded-for") == ["127.0.0.1"]
    assert r.header_all("via") == ["1.1 kedge"]
    assert r.header_all("x-forwarded-proto") == ["http"]
    assert r.header_all("forwarded") == ["for=127.0.0.1;proto=http;host=app.test"]
    rid = r.header("x-request-id")
    assert rid and re.fullmatch(r"[A-Za-z0-9._:+=/-]+", rid)
    assert r.header("connection") is None


async def test_connection_nomination_of_a_client_header_removes_it() -> None:
    _, be = await _forward_one(get(b"Connection: X-Secret-Hop", b"X-Secret-Hop: 1", b"X-Kept: 2"))
    r = be.requests[0]
    assert r.header("x-secret-hop") is None
    assert r.header("x-kept") == "2"


async def test_connection_nomination_of_host_and_content_length_is_ignored() -> None:
    raw = post(b"Connection: Host, Content-Length", b"Content-Length: 5", body=b"hello")
    _, be = await _forward_one(raw)
    r = be.requests[0]
    assert r.header("host") == "app.test"
    assert r.header("content-length") == "5"
    assert r.body == b"hello"


async def test_hop_by_hop_and_proxy_credentials_never_reach_backend() -> None:
    raw = get(
        b"Connection: Upgrade, HTTP2-Settings, Keep-Alive, TE",
        b"Upgrade: h2c",
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        b"Proxy-Authorization: Basic dXNlcjpwYXNz",
        b"Proxy-Connection: keep-alive",
        b"Keep-Alive: timeout=5",
        b"TE: trailers",
        b"X-Kept: yes",
    )
    resp, be = await _forward_one(raw)
    r = be.requests[0]
    names = {n for n, _ in r.headers}
    for hop in (
        "proxy-authorization",
        "keep-alive",
        "te",
        "upgrade",
        "http2-settings",
        "proxy-connection",
        "connection",
    ):
        assert hop not in names, hop
    assert b"dXNlcjpwYXNz" not in r.raw
    assert r.header("x-kept") == "yes"
    # The h2c upgrade is not performed either: the client gets a plain HTTP/1.1 answer.
    assert resp.header("upgrade") is None


async def test_h2c_upgrade_without_connection_token_is_not_forwarded() -> None:
    _, be = await _forward_one(get(b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABk"))
    names = {n for n, _ in be.requests[0].headers}
    assert "upgrade" not in names and "http2-settings" not in names


async def test_client_forwarding_headers_replaced_or_appended() -> None:
    raw = get(
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: evil.test",
        b"X-Forwarded-For: 203.0.113.7",
        b"Forwarded: for=203.0.113.7;host=evil.test",
        b"Via: 1.0 upstream-proxy",
    )
    _, be = await _forward_one(raw)
    r = be.requests[0]
    assert r.header_all("x-forwarded-proto") == ["http"]
    assert r.header_all("x-forwarded-host") == ["app.test"]
    assert r.header_all("x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert r.header_all("forwarded") == [
        "for=203.0.113.7;host=evil.test, for=127.0.0.1;proto=http;host=app.test"
    ]
    assert r.header_all("via") == ["1.0 upstream-proxy, 1.1 kedge"]


async def test_spoofed_identity_headers_are_stripped() -> None:
    _, be = await _forward_one(
        get(
            b"X-Kedge-Principal: admin",
            b"X_Kedge_Principal: admin",
            b"X-Forwarded-Client-Cert: Hash=evil",
        )
    )
    names = {n for n, _ in be.requests[0].headers}
    assert not names & {"x-kedge-principal", "x_kedge_principal", "x-forwarded-client-cert"}


# -- request IDs ------------------------------------------------------------------------------


async def test_valid_client_request_id_is_kept_everywhere() -> None:
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(get(b"X-Request-Id: client-id_1.2:3"))
        resp = await conn.read_response()
        assert resp.status == 200
        assert be.requests[0].header_all("x-request-id") == ["client-id_1.2:3"]
        assert resp.header_all("x-request-id") == ["client-id_1.2:3"]
        assert [x["request_id"] for x in request_lines(edge)] == ["client-id_1.2:3"]


@pytest.mark.parametrize(
    "bad",
    [b"x" * 200, b"has space", b"semi;colon", b'quote"d', b"<script>", b"caf\xc3\xa9", b""],
    ids=["too-long", "space", "semicolon", "quote", "angle", "non-ascii", "empty"],
)
async def test_invalid_client_request_id_is_replaced(bad: bytes) -> None:
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(get(b"X-Request-Id: " + bad))
        resp = await conn.read_response()
        assert resp.status == 200
        upstream = be.requests[0].header_all("x-request-id")
        assert len(upstream) == 1
        generated = upstream[0]
        assert generated.encode() != bad.strip()
        assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", generated)
        assert resp.header_all("x-request-id") == [generated]
        assert [x["request_id"] for x in request_lines(edge)] == [generated]


async def test_absent_request_id_is_generated_and_unique() -> None:
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(get() + get())
        r1 = await conn.read_response()
        r2 = await conn.read_response()
        ids = [r.header("x-request-id") for r in be.requests]
        assert ids == [r1.header("x-request-id"), r2.header("x-request-id")]
        assert ids[0] and ids[1] and ids[0] != ids[1]


async def test_every_access_log_line_has_a_request_id() -> None:
    async with stack() as (edge, be):
        await raw_exchange(edge.port(), get())
        assert len(be.requests) == 1
        await raw_exchange(edge.port(), req(b"GET / HTTP/1.1", b"Host: nowhere.test"))
        await raw_exchange(edge.port(), post(b"Content-Length: 1", CHUNKED, body=b"x"))
        await raw_exchange(edge.port(), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # TLS
        await raw_exchange(edge.port(), post(b"Content-Length: 5000"))
        lines = request_lines(edge)
        assert sorted(int(str(x["status"])) for x in lines) == [200, 400, 400, 404, 413]
        ids = [x["request_id"] for x in lines]
        assert all(isinstance(i, str) and i for i in ids), lines
        assert len(set(ids)) == len(ids)


# -- the shape of error responses ---------------------------------------------------------------


async def test_error_reason_with_client_input_stays_one_safe_line() -> None:
    # The no-route reason quotes the client's host and path; it must stay one header line.
    target = b"/x'$(id)*!;a=1/%C3%A9"
    async with stack() as (edge, be):
        resp, _, _ = await raw_exchange(
            edge.port(), req(b"GET " + target + b" HTTP/1.1", b"Host: nowhere.test")
        )
        assert_error(resp, 404, "no-route")
        assert "nowhere.test" in (resp.header("x-kedge-error") or "")
        assert be.requests == []


async def test_error_response_on_keep_alive_connection_keeps_working() -> None:
    # A 404 is not a framing error: the connection stays usable and the next request works.
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(req(b"GET /a HTTP/1.1", b"Host: nowhere.test") + get(target=b"/b"))
        r1 = await conn.read_response()
        assert_error(r1, 404, "no-route")
        r2 = await conn.read_response()
        assert r2.status == 200
        assert [r.target for r in be.requests] == ["/b"]


# -- byte soup ------------------------------------------------------------------------------------


class _EdgeThread:
    """An edge and a backend on their own uvloop loop in a thread, for synchronous tests."""

    def __init__(self) -> None:
        self.port = 0
        self.loop_errors: list[dict[str, object]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._failure: BaseException | None = None

    def _main(self) -> None:
        try:
            uvloop.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self._loop = loop
        self._stop = asyncio.Event()
        async with recording_backend() as be, running_edge(edge_yaml(be.address)) as edge:
            self.port = edge.port()
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "edge did not start"
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def threaded_edge() -> Iterator[_EdgeThread]:
    edge = _EdgeThread()
    edge.start()
    try:
        yield edge
    finally:
        edge.stop()


_FRAGMENTS = [
    b"GET ",
    b"POST ",
    b"get ",
    b"CONNECT ",
    b"/",
    b"/a",
    b"/%2F",
    b"/..",
    b"*",
    b"http://app.test/",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/0.9",
    b" HTTP/2.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"Host: app.test",
    b"Host: ",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"chunked",
    b"0",
    b"3",
    b"-1",
    b"FFFFFFFFFFFFFFFFFFFF",
    b"abc",
    b"Connection: ",
    b"close",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
    b"\xff\xfe",
    b"\x7f",
]
_SOUP = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=8)), max_size=40).map(
        b"".join
    ),
)


def _soup_exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and read until the edge closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the edge already closed on us: allowed
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return got
            except TimeoutError:
                raise AssertionError(f"edge neither answered nor closed for {data!r}") from None
            if not chunk:
                return got
            got += chunk


def test_byte_soup_gets_a_valid_answer_or_a_close(threaded_edge: _EdgeThread) -> None:
    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(_SOUP)
    def check(data: bytes) -> None:
        got = _soup_exchange(threaded_edge.port, data)
        if got:
            assert b"\r\n\r\n" in got, got
            head = got.split(b"\r\n\r\n", 1)[0]
            status, _, _ = parse_head(head)  # raises on an invalid status line
            assert 100 <= status <= 599
            assert b"Traceback" not in got

    check()
    # The edge is still alive and serving.
    with socket.create_connection(("127.0.0.1", threaded_edge.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got
    assert got.endswith(b"hello from backend")
    assert threaded_edge.loop_errors == []
