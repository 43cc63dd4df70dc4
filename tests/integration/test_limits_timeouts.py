"""Size limits and client timeouts of a real edge (reference/hardening.md §2.5, Z1-Z5, Z9).

Limits are configured small in the YAML so oversize requests stay cheap: 414 for the
request target, 431 for header bytes and count, 413 for bodies (global and per route, by
Content-Length, with Expect: 100-continue, and chunked), and 408 / close for the header,
body-idle and keep-alive timeouts. The deadline sweeper ticks every 0.25 s, so timing
assertions allow that much slack on top of the configured timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, one_route_yaml, running_edge
from tests.support.raw_client import RawConnection, RawResponse, raw_connection, raw_exchange

MAX_URI = 256
MAX_HEADER_BYTES = 2048
MAX_HEADER_COUNT = 20
MAX_BODY = 1000
SWEEP_SLACK = 0.25 + 0.4  # sweeper interval plus scheduling noise on a busy CI machine


def edge_yaml(
    backend: str,
    *,
    request_header: str = "10s",
    request_body_idle: str = "10s",
    keepalive_idle: str = "10s",
) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
limits:
  max_uri_bytes: {MAX_URI}
  max_header_bytes: {MAX_HEADER_BYTES}
  max_header_count: {MAX_HEADER_COUNT}
  max_request_body_bytes: {MAX_BODY}
timeouts:
  request_header: {request_header}
  request_body_idle: {request_body_idle}
  keepalive_idle: {keepalive_idle}
backends:
  - name: b
    resolver:
      static:
        endpoints: ["{backend}"]
routes:
  - name: small
    backend: b
    max_request_body_bytes: 10
    match:
      host: app.test
      paths: ["/small/*"]
  - name: big
    backend: b
    max_request_body_bytes: 5000
    match:
      host: app.test
      paths: ["/big/*"]
  - name: default
    backend: b
    match:
      host: app.test
"""


@asynccontextmanager
async def stack(**timeouts: str) -> AsyncIterator[tuple[RunningEdge, RecordingBackend]]:
    async with recording_backend() as be, running_edge(edge_yaml(be.address, **timeouts)) as edge:
        yield edge, be


def assert_error(resp: RawResponse, status: int, kind: str) -> None:
    assert resp.status == status, (resp.status, resp.header("x-kedge-error"))
    assert resp.header("x-kedge-error-type") == kind
    assert resp.header("x-kedge-error")
    assert resp.header("x-request-id")
    assert resp.header("connection") == "close"
    assert resp.body.startswith(str(status).encode())
    assert b"Traceback" not in resp.body


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition the test cannot await directly (e.g. the backend saw a connection)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def head(method: bytes, target: bytes, *headers: bytes) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: app.test", *headers]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


async def fetch(edge: RunningEdge, raw: bytes) -> RawResponse:
    """One request on a new connection that is expected to stay open."""
    async with raw_connection(edge.port()) as conn:
        await conn.send(raw)
        return await conn.read_response()


async def expect_refused(edge: RunningEdge, raw: bytes, status: int, kind: str) -> RawResponse:
    resp, closed, extra = await raw_exchange(edge.port(), raw)
    assert_error(resp, status, kind)
    assert closed and extra == b""
    return resp


# -- 414 / 431 ---------------------------------------------------------------------------------


async def test_uri_over_limit_gets_414() -> None:
    async with stack() as (edge, be):
        await expect_refused(edge, head(b"GET", b"/" + b"a" * MAX_URI), 414, "uri-too-long")
        assert be.requests == [] and be.connections == 0


async def test_uri_at_limit_is_accepted() -> None:
    async with stack() as (edge, be):
        target = b"/" + b"a" * (MAX_URI - 1)
        resp = await fetch(edge, head(b"GET", target))
        assert resp.status == 200
        assert [r.target for r in be.requests] == [target.decode()]


async def test_uri_over_limit_trickled_gets_414_before_the_line_ends() -> None:
    # The bound applies while bytes arrive: the edge need not wait for the end of the line.
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(b"GET /")
        for _ in range(MAX_URI // 64 + 2):
            await conn.send(b"a" * 64)
        resp = await conn.read_response()
        assert_error(resp, 414, "uri-too-long")
        assert be.requests == [] and be.connections == 0


def _filler_headers(total: int) -> list[bytes]:
    """Header lines whose field block ("name: value" CRLF each) totals exactly `total` bytes."""
    lines = []
    remaining = total - len(b"Host: app.test\r\n")
    while remaining > 0:
        size = min(remaining, 1000)
        name = b"X-F%d" % len(lines)
        value_len = size - len(name) - 4
        assert value_len >= 1
        lines.append(name + b": " + b"v" * value_len)
        remaining -= size
    return lines


@pytest.mark.parametrize("trickle", [False, True], ids=["one-write", "trickled"])
async def test_header_block_over_limit_gets_431(trickle: bool) -> None:
    raw = head(b"GET", b"/", *_filler_headers(MAX_HEADER_BYTES + 100))
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        if trickle:
            for i in range(0, len(raw), 100):
                await conn.send(raw[i : i + 100])
                if conn.reader.at_eof():
                    break
        else:
            await conn.send(raw)
        resp = await conn.read_response()
        assert_error(resp, 431, "header-too-large")
        assert await conn.wait_closed() == b""
        assert be.requests == [] and be.connections == 0


async def test_header_block_at_limit_is_accepted() -> None:
    raw = head(b"GET", b"/", *_filler_headers(MAX_HEADER_BYTES))
    async with stack() as (edge, be):
        resp = await fetch(edge, raw)
        assert resp.status == 200
        assert len(be.requests) == 1


async def test_single_huge_header_value_gets_431_without_buffering_it_all() -> None:
    # Z2: the edge answers while the value is still arriving (it never ends here).
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: ")
        sent = 0
        while sent < 64 * MAX_HEADER_BYTES and not conn.reader.at_eof():
            try:
                await conn.send(b"v" * 1024)
            except ConnectionError:
                break
            sent += 1024
            if sent > 2 * (MAX_URI + MAX_HEADER_BYTES):
                break
        resp = await conn.read_response()
        assert_error(resp, 431, "header-too-large")
        assert be.requests == [] and be.connections == 0


async def test_too_many_header_fields_gets_431() -> None:
    headers = [b"X-N%d: v" % i for i in range(MAX_HEADER_COUNT)]  # plus Host: one too many
    async with stack() as (edge, be):
        await expect_refused(edge, head(b"GET", b"/", *headers), 431, "header-too-large")
        assert be.requests == [] and be.connections == 0


async def test_header_count_at_limit_is_accepted() -> None:
    headers = [b"X-N%d: v" % i for i in range(MAX_HEADER_COUNT - 1)]
    async with stack() as (edge, be):
        resp = await fetch(edge, head(b"GET", b"/", *headers))
        assert resp.status == 200
        assert len(be.requests) == 1


# -- 413 ---------------------------------------------------------------------------------------


async def test_content_length_over_limit_gets_413_before_the_body() -> None:
    # Z4: refused on the head alone; the client has not sent (and need not send) the body.
    raw = head(b"POST", b"/", b"Content-Length: 10737418240")
    async with stack() as (edge, be):
        await expect_refused(edge, raw, 413, "body-too-large")
        assert be.requests == [] and be.connections == 0


async def test_content_length_over_limit_with_expect_gets_413_and_no_100() -> None:
    raw = head(b"POST", b"/", b"Content-Length: %d" % (MAX_BODY + 1), b"Expect: 100-continue")
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        resp = await conn.read_response()  # the first response must be the final one
        assert_error(resp, 413, "body-too-large")
        assert await conn.wait_closed() == b""
        assert be.requests == [] and be.connections == 0


async def test_expect_100_continue_within_limit_gets_100_then_200() -> None:
    # The control case for the test above: within the limit the edge does send 100.
    body = b"x" * MAX_BODY
    raw = head(b"POST", b"/", b"Content-Length: %d" % len(body), b"Expect: 100-continue")
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        interim = await conn.read_response()
        assert interim.status == 100
        await conn.send(body)
        final = await conn.read_response()
        assert final.status == 200
        assert be.requests[0].body == body
        assert be.requests[0].header("expect") is None


def _chunked(body: bytes, size: int = 100) -> bytes:
    out = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    )
    return out + b"0\r\n\r\n"


async def test_chunked_body_over_limit_in_one_write_gets_413_and_nothing_forwarded() -> None:
    raw = head(b"POST", b"/", b"Transfer-Encoding: chunked") + _chunked(b"x" * (MAX_BODY + 1))
    async with stack() as (edge, be):
        await expect_refused(edge, raw, 413, "body-too-large")
        assert be.requests == [] and be.connections == 0


async def test_chunked_body_over_limit_while_streaming_gets_413() -> None:
    # Z5: the head and a first chunk went upstream already; the limit is crossed later.
    # The client still gets a clean 413 (no response head was sent yet), the upstream
    # request is aborted, so the backend never sees a complete request.
    async with stack() as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(head(b"POST", b"/", b"Transfer-Encoding: chunked") + b"64\r\n" + b"x" * 100)
        await conn.send(b"\r\n")
        await wait_until(lambda: be.connections == 1)
        await conn.send(_chunked(b"y" * MAX_BODY))
        resp = await conn.read_response()
        assert_error(resp, 413, "body-too-large")
        assert await conn.wait_closed() == b""
        assert be.requests == []


async def test_body_within_limit_passes_through() -> None:
    body = b"z" * MAX_BODY
    async with stack() as (edge, be):
        for framing in (b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"):
            payload = body if framing.startswith(b"Content") else _chunked(body)
            resp = await fetch(edge, head(b"POST", b"/", framing) + payload)
            assert resp.status == 200
        assert [r.body for r in be.requests] == [body, body]


@pytest.mark.parametrize(
    ("target", "size", "status"),
    [
        (b"/small/x", 10, 200),
        (b"/small/x", 11, 413),
        (b"/big/x", 3000, 200),  # above the global limit, within the route's
        (b"/big/x", 5001, 413),
        (b"/x", 3000, 413),  # the global limit applies to routes without their own
    ],
    ids=["small-ok", "small-over", "big-ok", "big-over", "default-over"],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_route_body_limit_overrides_global(
    target: bytes, size: int, status: int, framing: str
) -> None:
    body = b"b" * size
    if framing == "chunked":
        raw = head(b"POST", target, b"Transfer-Encoding: chunked") + _chunked(body)
    else:
        raw = head(b"POST", target, b"Content-Length: %d" % size) + body
    async with stack() as (edge, be):
        if status == 200:
            resp = await fetch(edge, raw)
            assert resp.status == 200
            assert [r.body for r in be.requests] == [body]
        else:
            resp = await expect_refused(edge, raw, 413, "body-too-large")
            assert be.requests == []
            assert be.connections == 0  # refused before any connection


# -- 408 and idle timeouts ------------------------------------------------------------------------


async def _trickle(conn: RawConnection, data: bytes, interval: float) -> None:
    for i in range(len(data)):
        try:
            await conn.send(data[i : i + 1])
        except ConnectionError:
            return
        await asyncio.sleep(interval)  # the attack itself: one byte every `interval`


async def test_slowloris_is_cut_after_the_total_header_timeout() -> None:
    # Z9: one header byte every 200 ms keeps every read fresh; the header timeout is
    # total (first byte to end of headers), so the edge cuts the request after ~1 s.
    raw = head(b"GET", b"/", b"X-Slow: " + b"s" * 100)
    async with stack(request_header="1s") as (edge, be), raw_connection(edge.port()) as conn:
        started = time.monotonic()
        sender = asyncio.create_task(_trickle(conn, raw, 0.2))
        try:
            resp = await conn.read_response(timeout=5)
        finally:
            sender.cancel()
        elapsed = time.monotonic() - started
        assert_error(resp, 408, "request-timeout")
        assert await conn.wait_closed() == b""
        assert 1.0 <= elapsed <= 1.0 + SWEEP_SLACK, elapsed
        assert be.requests == [] and be.connections == 0


async def test_empty_lines_do_not_extend_the_header_timeout() -> None:
    # RFC 9112 §2.2 lets a server skip empty lines before a request line; a client that
    # sends nothing else must still be cut once the header timeout has passed.
    async with (
        stack(request_header="1s", keepalive_idle="10s") as (edge, be),
        raw_connection(edge.port()) as conn,
    ):
        started = time.monotonic()
        sender = asyncio.create_task(_trickle(conn, b"\r\n" * 50, 0.1))
        try:
            extra = await conn.wait_closed(timeout=5)
        finally:
            sender.cancel()
        elapsed = time.monotonic() - started
        assert elapsed <= 1.0 + SWEEP_SLACK, elapsed
        assert extra == b"" or extra.startswith(b"HTTP/1.1 408 ")
        assert be.connections == 0


async def test_headers_that_complete_in_time_are_served() -> None:
    # The control case: trickled bytes that finish before the timeout are fine.
    raw = head(b"GET", b"/slow-but-ok")
    async with stack(request_header="3s") as (edge, be), raw_connection(edge.port()) as conn:
        await _trickle(conn, raw, 1.0 / len(raw))
        resp = await conn.read_response()
        assert resp.status == 200
        assert [r.target for r in be.requests] == ["/slow-but-ok"]


async def test_idle_keepalive_connection_is_closed_after_keepalive_idle() -> None:
    async with stack(keepalive_idle="1s") as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(head(b"GET", b"/one"))
        assert (await conn.read_response()).status == 200
        idle_from = time.monotonic()
        # Still open (and usable) well before the timeout: a request now resets the clock.
        assert await conn.is_open_after(0.5)
        await conn.send(head(b"GET", b"/two"))
        assert (await conn.read_response()).status == 200
        idle_from = time.monotonic()
        extra = await conn.wait_closed(timeout=5)
        elapsed = time.monotonic() - idle_from
        assert extra == b"", "an idle close is silent (no 408 on a connection between requests)"
        assert 1.0 - 0.05 <= elapsed <= 1.0 + SWEEP_SLACK, elapsed
        assert [r.target for r in be.requests] == ["/one", "/two"]


async def test_silent_new_connection_is_closed() -> None:
    # A connection that never sends a byte is closed too (keep-alive idle applies from accept).
    async with stack(keepalive_idle="1s") as (edge, be), raw_connection(edge.port()) as conn:
        started = time.monotonic()
        assert await conn.wait_closed(timeout=5) == b""
        assert time.monotonic() - started <= 1.0 + SWEEP_SLACK
        assert be.connections == 0


async def test_body_that_stops_midway_gets_408_after_body_idle() -> None:
    raw = head(b"POST", b"/", b"Content-Length: 100") + b"x" * 10
    async with stack(request_body_idle="1s") as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        started = time.monotonic()
        resp = await conn.read_response(timeout=5)
        elapsed = time.monotonic() - started
        assert_error(resp, 408, "request-timeout")
        assert await conn.wait_closed() == b""
        assert 1.0 - 0.05 <= elapsed <= 1.0 + SWEEP_SLACK, elapsed
        assert be.requests == []  # the upstream request was aborted, never completed
        lines = [orjson.loads(x) for x in edge.log_lines()]
        statuses = [(x["status"], x["error_kind"]) for x in lines if "status" in x]
        assert statuses == [(408, "request-timeout")]


async def test_chunked_body_that_stops_midway_gets_408() -> None:
    raw = head(b"POST", b"/", b"Transfer-Encoding: chunked") + b"a\r\n0123456789\r\n"
    async with stack(request_body_idle="1s") as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(raw)
        resp = await conn.read_response(timeout=5)
        assert_error(resp, 408, "request-timeout")
        assert be.requests == []


async def test_slow_body_that_keeps_moving_is_not_cut() -> None:
    # Body idle is between reads, not total: 10 bytes every 300 ms for ~1.5 s is fine.
    body = b"k" * 50
    async with stack(request_body_idle="1s") as (edge, be), raw_connection(edge.port()) as conn:
        await conn.send(head(b"POST", b"/", b"Content-Length: %d" % len(body)))
        for i in range(0, len(body), 10):
            await asyncio.sleep(0.3)  # the slow client under test
            await conn.send(body[i : i + 10])
        resp = await conn.read_response()
        assert resp.status == 200
        assert be.requests[0].body == body


async def test_connections_over_max_connections_are_closed_and_counted() -> None:
    """limits.max_connections: the connection beyond the cap is closed at once, existing
    ones keep working, and a slot frees up when one closes (hardening Z7)."""

    async with (
        recording_backend() as be,
        running_edge(one_route_yaml(be.address, top="limits: {max_connections: 2}")) as edge,
    ):
        get = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"
        held = [await asyncio.open_connection("127.0.0.1", edge.port()) for _ in range(2)]
        await asyncio.sleep(0.05)
        r3, w3 = await asyncio.open_connection("127.0.0.1", edge.port())
        w3.write(get)
        assert await asyncio.wait_for(r3.read(), 5) == b""  # closed, nothing answered
        w3.close()
        r1, w1 = held[0]
        w1.write(get)
        head = await asyncio.wait_for(r1.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert edge.app.metrics.connections_rejected.labels("http").value == 1
        held[1][1].close()
        await asyncio.sleep(0.1)
        r4, w4 = await asyncio.open_connection("127.0.0.1", edge.port())
        w4.write(get)
        head = await asyncio.wait_for(r4.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        for _, w in (held[0], (r4, w4)):
            w.close()
