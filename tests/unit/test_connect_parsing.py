"""CONNECT without sockets: the request head (table-driven), route config, route choice, idle.

validate_request's CONNECT rules (RFC 9110 §9.3.6, RFC 9112 §3.2.3), the `proxy_mode:
connect` and `allow_connect` config keys, which routes a CONNECT may match (never `any`),
and RawTunnel's idle deadline with an injected clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kedge.core.codec.h1_request import validate_request
from kedge.core.errors import BadRequest, ConfigError
from kedge.core.http.messages import Headers
from kedge.core.net.raw_tunnel import RawTunnel
from kedge.edge.config import ProxyMode, RouteConfig, RouteMatch
from kedge.edge.config_parser import parse_edge_config
from kedge.edge.forwarding.connect_tunnel import connect_routes
from kedge.edge.routing.table import RouteRequest, RouteTable


def connect(target: bytes, headers: Headers | None = None, version: str = "1.1") -> Any:
    return validate_request(
        version=version,
        method="CONNECT",
        target=target,
        headers=[(b"host", target)] if headers is None else headers,
        scheme="http",
        max_body=0,
    )


@pytest.mark.parametrize(
    ("target", "headers", "host", "port"),
    [
        (b"svc.ns.cluster-a.internal:443", None, "svc.ns.cluster-a.internal", 443),
        (b"SVC.Example.test.:8443", None, "svc.example.test", 8443),  # normalised like Host
        (b"[::1]:443", None, "::1", 443),
        (b"[2001:DB8::1]:9", None, "2001:db8::1", 9),
        (b"10.0.0.1:22", None, "10.0.0.1", 22),
        (b"a.test:443", [], "a.test", 443),  # no Host at all is tolerated
        (b"a.test:443", [(b"host", b"a.test")], "a.test", 443),  # a port-less Host agrees
        (b"a.test:443", [(b"host", b"A.TEST:443")], "a.test", 443),
    ],
)
def test_valid_connect_heads(target: bytes, headers: Headers | None, host: str, port: int) -> None:
    valid = connect(target, headers)
    h = valid.head
    assert (h.method, h.host, h.port, h.path, h.query) == ("CONNECT", host, port, "", "")
    assert not h.absolute_form and h.explicit_port
    assert not valid.has_body and not valid.keep_alive and valid.upgrade is None


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"a.test", None),  # no port
        (b"a.test:", None),  # empty port
        (b"[::1]", None),
        (b"a.test:0", None),
        (b"a.test:65536", None),
        (b"a.test:44x", None),
        (b"user@a.test:443", None),  # userinfo
        (b"user:pw@a.test:443", None),
        (b"/a.test:443", None),  # origin-form
        (b"http://a.test:443", None),  # absolute-form
        (b"a.test:443/x", None),
        (b"a_b.test:443", None),
        (b"::1:443", None),  # IPv6 without brackets
        (b"127.1:443", None),  # not a dotted quad
        (b"*", None),
        (b"a.test:443", [(b"host", b"b.test:443")]),  # Host disagrees
        (b"a.test:443", [(b"host", b"a.test:444")]),
        (b"a.test:443", [(b"host", b"a.test:443"), (b"content-length", b"0")]),  # no content
        (b"a.test:443", [(b"host", b"a.test:443"), (b"content-length", b"5")]),
        (b"a.test:443", [(b"host", b"a.test:443"), (b"transfer-encoding", b"chunked")]),
        (b"a.test:443", [(b"host", b"a.test:443"), (b"host", b"a.test:443")]),  # two Hosts
    ],
)
def test_invalid_connect_heads(target: bytes, headers: Headers | None) -> None:
    with pytest.raises(BadRequest):
        connect(target, headers)


def test_http10_connect_is_accepted() -> None:
    assert connect(b"a.test:443", [], version="1.0").head.port == 443


# --- config ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "listeners": [{"name": "http", "address": "127.0.0.1:8080"}],
    "backends": [{"name": "b", "resolver": {"static": {"endpoints": ["127.0.0.1:9000"]}}}],
}


def parse(**over: Any) -> Any:
    return parse_edge_config({**BASE, **over}, "edge.yaml")


def test_connect_route_and_adhoc_keys_parse() -> None:
    match = {"host": "a.test", "port": 443, "proxy_mode": "connect"}
    rule = {"dns_name": "*.x.test", "port": {"default": 443, "allowed": [443]}}
    config = parse(
        routes=[{"backend": "b", "match": match}],
        adhoc=[{**rule, "allow_connect": True}],
        limits={"tunnel_idle_timeout": "90s"},
    )
    assert config.routes[0].match.proxy_mode is ProxyMode.CONNECT
    assert config.adhoc[0].allow_connect is True
    assert config.limits.tunnel_idle_timeout == 90.0
    defaults = parse(adhoc=[{"dns_name": "a.test", "port": {"allowed": [80]}}], routes=[])
    assert defaults.adhoc[0].allow_connect is False
    assert defaults.limits.tunnel_idle_timeout == 3600.0


@pytest.mark.parametrize(
    ("key", "value"),
    [("paths", ["/x"]), ("headers", {"x-a": "b"}), ("grpc_methods", ["*"])],
)
def test_connect_route_refuses_path_header_and_grpc_matchers(key: str, value: Any) -> None:
    match = {"host": "a.test", "proxy_mode": "connect", key: value}
    with pytest.raises(ConfigError) as err:
        parse(routes=[{"backend": "b", "match": match}])
    assert err.value.key_path == f"routes[0].match.{key}"


def test_zero_tunnel_idle_timeout_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse(routes=[], limits={"tunnel_idle_timeout": 0})
    assert err.value.key_path == "limits.tunnel_idle_timeout"


# --- which routes a CONNECT may match -------------------------------------------------------


def route(name: str, mode: ProxyMode, host: str | None = None, port: int | None = None) -> Any:
    return RouteConfig(name, "b", RouteMatch(host=host, port=port, proxy_mode=mode))


ROUTES = (
    route("catch-all", ProxyMode.ANY),
    route("forward", ProxyMode.FORWARD, "a.test"),
    route("a-8443", ProxyMode.CONNECT, "a.test", 8443),
    route("a", ProxyMode.CONNECT, "a.test"),
    route("wild", ProxyMode.CONNECT, "*.cluster-a.internal"),
)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("a.test", 443, "a"),
        ("a.test", 8443, "a-8443"),
        ("svc.ns.cluster-a.internal", 443, "wild"),
        ("other.test", 443, None),  # the `any` catch-all never matches a CONNECT
    ],
)
def test_connect_matches_only_connect_routes(host: str, port: int, expected: str | None) -> None:
    table = RouteTable.compile(connect_routes(ROUTES))
    found = table.match(RouteRequest(host, port, "/", ProxyMode.CONNECT))
    assert (found.name if found else None) == expected


def test_connect_routes_never_match_other_requests() -> None:
    table = RouteTable.compile(ROUTES)
    for mode in (ProxyMode.REVERSE, ProxyMode.FORWARD):
        found = table.match(RouteRequest("a.test", 443, "/", mode))
        assert found is not None and found.match.proxy_mode is not ProxyMode.CONNECT


# --- idle deadline --------------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


class FakePeer:
    def __init__(self) -> None:
        self.written = bytearray()

    def tunnel_write(self, data: bytes) -> None:
        self.written += data

    def tunnel_close(self) -> None: ...
    def tunnel_pause(self) -> None: ...
    def tunnel_resume(self) -> None: ...


async def test_idle_deadline_moves_with_traffic_and_then_aborts() -> None:
    now = [100.0]
    tunnel = RawTunnel(10.0, None, clock=lambda: now[0])
    transport = FakeTransport()
    tunnel.connection_made(transport)  # type: ignore[arg-type]
    assert not transport.reading  # nothing is read before the client's end is attached
    tunnel.attach(FakePeer())
    assert transport.reading
    now[0] = 105.0
    tunnel.tunnel_write(b"x")  # activity at 105
    now[0] = 110.0
    tunnel.on_deadline()  # the first deadline (110) passed, but bytes moved at 105
    assert not transport.aborted and tunnel.deadline == 115.0
    now[0] = 115.0
    tunnel.on_deadline()
    assert transport.aborted and tunnel.idle_expired
    await asyncio.sleep(0)


async def test_bytes_delivered_before_attach_reach_the_peer_first() -> None:
    """A transport may hand over bytes it had already read although reading was paused
    (uvloop does for a just-accepted connection): they are kept and go first on attach."""
    tunnel = RawTunnel()
    tunnel.connection_made(FakeTransport())  # type: ignore[arg-type]
    tunnel.data_received(b"PRI * HTTP/2.0")
    peer = FakePeer()
    tunnel.attach(peer)
    tunnel.data_received(b" more")
    assert bytes(peer.written) == b"PRI * HTTP/2.0 more"
