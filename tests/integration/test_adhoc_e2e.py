"""Adhoc rules end to end: a host no route lists is forwarded to itself if a rule allows it.

Names are made resolvable without DNS through the rule's `replace`: `127.0.0.1.pods.internal`
with `{pattern: .pods.internal, substitution: ""}` looks up the IP literal `127.0.0.1`
(`localhost.pods.internal` the name `localhost`, from /etc/hosts). The recording backend
listens on 127.0.0.1, so reaching it needs `allow_loopback`; the same name under a rule
without it must get 403 without any connection being made.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import orjson
import psutil
import pytest

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.ops_client import CurlResult, curl


def edge_yaml(port: int, public_port: int | None = None) -> str:
    extra = ""
    if public_port is not None:
        extra = f"""
  - dns_name: "*.public.internal"
    replace: {{pattern: .public.internal, substitution: ""}}
    port: {{default: {public_port}, allowed: [{public_port}]}}
"""
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: routed
    resolver: {{static: {{endpoints: ["127.0.0.1:1"]}}}}
routes:
  - name: routed
    backend: routed
    match: {{host: routed.pods.internal}}
adhoc:
  - dns_name: "*.pods.internal"
    replace: {{pattern: .pods.internal, substitution: ""}}
    allow_loopback: true
    port:
      default: {port}
      allowed: [1]
      allowed_ranges: [{{from: {port}, to: {port}}}]
  - dns_name: "*.strict.internal"
    replace: {{pattern: .strict.internal, substitution: ""}}
    connect_timeout: 10s
    port: {{default: {port}, allowed: [{port}]}}
  - dns_name: "*.deny.internal"
{extra}"""


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RunningEdge, RecordingBackend]]:
    async with recording_backend() as be, running_edge(edge_yaml(be.port)) as edge:
        yield edge, be


def access_lines(edge: RunningEdge) -> list[dict[str, object]]:
    lines = [orjson.loads(x) for x in edge.log_lines()]
    return [x for x in lines if "status" in x]


def assert_forbidden(res: CurlResult) -> None:
    assert res.status == 403, (res.status, res.body)
    assert res.header("x-kedge-error-type") == "forbidden"
    assert res.header("x-kedge-error")


async def test_allowed_name_and_port_reaches_the_backend(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    host = f"127.0.0.1.pods.internal:{be.port}"
    res = await curl("-H", f"Host: {host}", f"{edge.url}/adhoc?x=1")
    assert res.status == 200, (res.status, res.body)
    assert res.body == b"hello from backend"
    assert len(be.requests) == 1
    req = be.requests[0]
    assert req.target == "/adhoc?x=1"
    assert req.header("host") == host  # the name as the client wrote it, not the lookup name
    line = access_lines(edge)[-1]
    assert (line["route"], line["backend"], line["endpoint"]) == (
        "adhoc",
        "adhoc",
        f"127.0.0.1:{be.port}",
    )


async def test_forward_proxy_form_with_a_resolved_name(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    res = await curl("-x", edge.url, f"http://localhost.pods.internal:{be.port}/via-dns")
    assert res.status == 200, (res.status, res.body)
    assert [r.target for r in be.requests] == ["/via-dns"]


async def test_default_port_is_used_when_the_request_names_none(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    res = await curl("-H", "Host: 127.0.0.1.pods.internal", f"{edge.url}/d")
    assert res.status == 200, (res.status, res.body)
    assert [r.target for r in be.requests] == ["/d"]


async def test_routes_are_tried_before_adhoc_rules(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    # routed.pods.internal has a route (to a dead endpoint): the adhoc rule is not used.
    res = await curl("-H", "Host: routed.pods.internal", f"{edge.url}/")
    assert res.status == 502
    assert res.header("x-kedge-error-type") == "upstream-connect"
    assert be.connections == 0


async def test_disallowed_port_is_403_and_nothing_is_sent(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    res = await curl("-H", f"Host: 127.0.0.1.pods.internal:{be.port + 1}", f"{edge.url}/")
    assert_forbidden(res)
    res = await curl("-x", edge.url, "http://127.0.0.1.pods.internal:8080/")
    assert_forbidden(res)
    assert be.connections == 0


async def test_deny_rule_without_ports_refuses_everything(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    res = await curl("-H", f"Host: x.deny.internal:{be.port}", f"{edge.url}/")
    assert_forbidden(res)
    assert be.connections == 0


@pytest.mark.parametrize(
    "name",
    [
        "127.0.0.1",  # loopback
        "localhost",  # a name that resolves to loopback
        "127.1.2.3",  # anywhere in 127/8
        "0.0.0.0",  # the unspecified address reaches this host too
        "169.254.169.254",  # link-local: the cloud metadata service
        "169.254.0.1",
    ],
)
async def test_loopback_and_link_local_are_denied_by_default(
    setup: tuple[RunningEdge, RecordingBackend], name: str
) -> None:
    edge, be = setup
    started = time.monotonic()
    res = await curl("-H", f"Host: {name}.strict.internal:{be.port}", f"{edge.url}/meta")
    elapsed = time.monotonic() - started
    assert_forbidden(res)
    assert be.connections == 0
    # No connection was attempted: the refusal comes before any connect (whose timeout is
    # 10 s for this rule), and the access log names no endpoint.
    assert elapsed < 5.0
    line = access_lines(edge)[-1]
    assert line["status"] == 403 and line["error_kind"] == "forbidden"
    assert line.get("endpoint") is None


async def test_no_matching_rule_is_404(setup: tuple[RunningEdge, RecordingBackend]) -> None:
    edge, be = setup
    res = await curl("-H", f"Host: pods.internal:{be.port}", f"{edge.url}/")
    assert res.status == 404
    assert res.header("x-kedge-error-type") == "no-route"
    assert be.connections == 0


def _non_loopback_ipv4() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith(("127.", "169.254.")):
                return str(a.address)
    return None


async def test_default_rule_reaches_a_non_loopback_address() -> None:
    """With no allow_* keys, a private or public address of this host is allowed."""
    ip = _non_loopback_ipv4()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address to listen on")
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npublic")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, ip, 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        async with recording_backend() as be, running_edge(edge_yaml(be.port, port)) as edge:
            res = await curl("-H", f"Host: {ip}.public.internal:{port}", f"{edge.url}/p")
            assert res.status == 200, (res.status, res.body)
            assert res.body == b"public"
            assert len(received) == 1 and received[0].startswith(b"GET /p HTTP/1.1\r\n")
    finally:
        server.close()
        await server.wait_closed()
