"""Tests for kedge.dialer.mapping: first-match routes, host normalisation, regexp substitution."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kedge.core.config_loading import InvalidValue, is_dns_name
from kedge.dialer.config import (
    DialerConfig,
    DirectRule,
    EdgeTls,
    MapRoute,
    RegexpRule,
    RouteProtocol,
    SuffixRule,
)
from kedge.dialer.config_parser import parse_dialer_config_text
from kedge.dialer.mapping import (
    EdgeTarget,
    EdgeUrl,
    Mapper,
    is_ip_like,
    normalize_host,
    parse_edge_url,
)

CONFIG = r"""
edge_tls: {server_name: edge.default.test}
routes:
  - name: grpc-only
    suffix: "*.grpc.internal"
    edge: https://edge-grpc.test:9443
    protocol: grpc
  - name: http-only
    suffix: "*.grpc.internal"
    edge: https://edge-http.test:9443
    protocol: http
  - name: kube-b
    direct: kubernetes.cluster-b.internal:443
    edge: https://edge.cluster-b.test:8443
    tls: {server_name: other.test}
  - name: any-port
    direct: exact.internal
    edge: http://127.0.0.1:8080
  - name: cluster-a
    suffix: "*.cluster-a.internal"
    ports: [80, 443]
    edge: https://edge.cluster-a.test:8443
  - name: wide
    regexp: '(?P<svc>[a-z0-9-]+)\.(?P<cluster>[a-z0-9-]+)\.internal:(?P<port>[0-9]+)'
    edge: https://edge.${cluster}.test:8443
  - name: greedy
    regexp: '(?P<anything>.+)\.greedy\.test:443'
    edge: https://${anything}.edges.test
  - name: by-port
    regexp: 'svc\.ports\.test:(?P<p>[0-9]+)'
    edge: https://edge.ports.test:${p}
  - name: v6-edge
    direct: six.test
    edge: https://[::1]:8443/
"""


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    return Mapper(parse_dialer_config_text(CONFIG))


DEFAULT_TLS = EdgeTls(server_name="edge.default.test")


@pytest.mark.parametrize(
    ("host", "port", "grpc", "route", "edge_key", "authority"),
    [
        # protocol: a gRPC request skips http-only routes and the other way round
        ("svc.grpc.internal", 443, True, "grpc-only", "https://edge-grpc.test:9443", None),
        ("svc.grpc.internal", 443, False, "http-only", "https://edge-http.test:9443", None),
        # direct with a port: only that port; falls through to the regexp otherwise
        (
            "kubernetes.cluster-b.internal",
            443,
            False,
            "kube-b",
            "https://edge.cluster-b.test:8443",
            None,
        ),
        (
            "kubernetes.cluster-b.internal",
            6443,
            False,
            "wide",
            "https://edge.cluster-b.test:8443",
            None,
        ),
        # case and one trailing dot are normalised, and the authority uses the normal form
        (
            "KUBERNETES.Cluster-B.internal.",
            443,
            False,
            "kube-b",
            "https://edge.cluster-b.test:8443",
            "kubernetes.cluster-b.internal:443",
        ),
        # direct without a port: any port
        ("exact.internal", 1, False, "any-port", "http://127.0.0.1:8080", None),
        ("exact.internal", 65535, True, "any-port", "http://127.0.0.1:8080", None),
        # suffix with ports
        ("a.cluster-a.internal", 80, False, "cluster-a", "https://edge.cluster-a.test:8443", None),
        (
            "a.b.cluster-a.internal",
            443,
            True,
            "cluster-a",
            "https://edge.cluster-a.test:8443",
            None,
        ),
        # a port the suffix route does not list: the regexp catches it (first match wins)
        ("a.cluster-a.internal", 8080, False, "wide", "https://edge.cluster-a.test:8443", None),
        # regexp with substitution
        ("svc.zone-1.internal", 8080, False, "wide", "https://edge.zone-1.test:8443", None),
        ("api.greedy.test", 443, False, "greedy", "https://api.edges.test:443", None),
        ("a.b.greedy.test", 443, False, "greedy", "https://a.b.edges.test:443", None),
        ("svc.ports.test", 9000, False, "by-port", "https://edge.ports.test:9000", None),
        ("six.test", 80, False, "v6-edge", "https://[::1]:8443", None),
    ],
)
def test_maps(
    mapper: Mapper,
    host: str,
    port: int,
    grpc: bool,
    route: str,
    edge_key: str,
    authority: str | None,
) -> None:
    mapped = mapper.map(host, port, grpc=grpc)
    assert mapped is not None
    assert mapped.route.name == route
    assert mapped.edge.key == edge_key
    assert mapped.authority == (authority or f"{host}:{port}")


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("cluster-a.internal", 443),  # the bare suffix does not match (nor the 3-label regexp)
        ("x.cluster-a.internal.evil.test", 443),  # suffix must be at the end
        ("evilcluster-a.internal", 443),  # not on a label boundary, and not 3 labels
        ("other.test", 443),
        ("10.0.0.1", 443),  # IP literals never map
        ("[::1]", 443),
        ("::1", 443),
        ("127.1", 443),  # numeric last label: read as an address by resolvers
        ("a.b.1", 443),
        ("", 443),
        (".", 443),
        ("a..cluster-a.internal", 443),
        ("a.cluster-a.internal..", 443),
        ("a_b c.cluster-a.internal", 443),
        ("\u212aube.cluster-a.internal", 443),  # Kelvin sign lower-cases to "k": refused
        ("svc.ports.test", 0),  # invalid ports
        ("svc.ports.test", 65536),
        ("exact.internal", -1),
        ("x" * 64 + ".cluster-a.internal", 443),  # label too long
        ("svc.ports.test", 70000),
    ],
)
def test_does_not_map(mapper: Mapper, host: str, port: int) -> None:
    assert mapper.map(host, port) is None
    assert mapper.map(host, port, grpc=True) is None


def test_substituted_host_must_be_a_dns_name() -> None:
    # `.+` can capture ':' and '@' from a crafted request; such a request is no match for the
    # route (the next route may still map it) rather than steering credentials elsewhere.
    config = parse_dialer_config_text(
        r"""
routes:
  - regexp: '(?P<x>.+):443'
    edge: https://${x}.edges.test
  - regexp: '(?P<everything>.+)'
    edge: https://${everything}.edges.test
  - regexp: '(?P<cluster>[a-z]*)\.empty\.test:80'
    edge: https://edge.${cluster}.test
  - regexp: 'p(?P<port>[0-9]+)\.test:80'
    edge: https://edge.test:${port}
  - suffix: "*.test"
    edge: https://fallback.test
"""
    )
    mapper = Mapper(config)

    def edge_key(host: str, port: int) -> str | None:
        mapped = mapper.map(host, port)
        return None if mapped is None else mapped.edge.key

    assert edge_key("ok.test", 443) == "https://ok.test.edges.test:443"
    # `everything` holds "ok.test:8443": no DNS name, so the fallback route maps it
    assert edge_key("ok.test", 8443) == "https://fallback.test:443"
    # an empty group leaves an empty label: not a name either
    assert edge_key(".empty.test", 80) is None  # (and not a valid request host at all)
    assert edge_key("zz.empty.test", 80) == "https://edge.zz.test:443"
    assert edge_key("p8443.test", 80) == "https://edge.test:8443"
    assert edge_key("p0.test", 80) == "https://fallback.test:443"  # port 0: no edge
    assert edge_key("p99999.test", 80) == "https://fallback.test:443"
    assert edge_key("p00443.test", 80) == "https://edge.test:443"


def test_an_optional_group_that_did_not_take_part_is_empty() -> None:
    config = parse_dialer_config_text(
        r"""
routes:
  - regexp: '(?:(?P<c>[a-z]+)\.)?opt\.test:443'
    edge: https://edge.${c}.test
"""
    )
    mapper = Mapper(config)
    mapped = mapper.map("a.opt.test", 443)
    assert mapped is not None and mapped.edge.host == "edge.a.test"
    assert mapper.map("opt.test", 443) is None  # "edge..test"


def test_map_copies_route_and_tls(mapper: Mapper) -> None:
    mapped = mapper.map("kubernetes.cluster-b.internal", 443)
    assert mapped is not None
    assert mapped.edge == EdgeTarget(
        "https", "edge.cluster-b.test", 8443, EdgeTls(server_name="other.test")
    )
    assert mapped.route.rule == DirectRule("kubernetes.cluster-b.internal", 443)
    other = mapper.map("a.cluster-a.internal", 443)
    assert other is not None and other.edge.tls == DEFAULT_TLS


def test_empty_routes_map_nothing() -> None:
    mapper = Mapper(DialerConfig("<t>", (), {}))
    assert mapper.map("a.cluster-a.internal", 443) is None
    assert not mapper.is_mapped("a.cluster-a.internal")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.cluster-a.internal", True),
        ("A.Cluster-A.Internal.", True),
        ("cluster-a.internal", False),
        ("exact.internal", True),
        ("kubernetes.cluster-b.internal", True),
        ("svc.zone.internal", True),  # regexp: tried with common ports
        ("svc.ports.test", True),
        ("a.greedy.test", True),
        ("svc.grpc.internal", True),
        ("nothing.test", False),
        ("10.1.2.3", False),
        ("[::1]", False),
    ],
)
def test_is_mapped(mapper: Mapper, host: str, expected: bool) -> None:
    assert mapper.is_mapped(host) is expected


def test_is_mapped_tries_ports_the_pattern_spells_out() -> None:
    config = DialerConfig(
        "<t>",
        (MapRoute("odd", RegexpRule(re.compile(r"odd\.test:(7001|7002)")), "https://e.test"),),
        {},
    )
    assert Mapper(config).is_mapped("odd.test")
    assert not Mapper(config).is_mapped("even.test")


def test_routes_built_in_code_work_too() -> None:
    routes = (
        MapRoute("s", SuffixRule(".x.test"), "https://e.test:1", protocol=RouteProtocol.HTTP),
    )
    mapper = Mapper(DialerConfig("<t>", routes, {}, edge_tls=EdgeTls(ca_file="/ca.pem")))
    mapped = mapper.map("a.x.test", 80)
    assert mapped is not None
    assert mapped.edge == EdgeTarget("https", "e.test", 1, EdgeTls(ca_file="/ca.pem"))
    assert mapper.map("a.x.test", 80, grpc=True) is None


# --- parse_edge_url --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://edge.test", EdgeUrl("https", "edge.test", "443", frozenset())),
        ("http://edge.test", EdgeUrl("http", "edge.test", "80", frozenset())),
        ("HTTPS://Edge.Test:08443/", EdgeUrl("https", "edge.test", "8443", frozenset())),
        ("https://127.0.0.1:9", EdgeUrl("https", "127.0.0.1", "9", frozenset())),
        ("https://[::1]", EdgeUrl("https", "::1", "443", frozenset())),
        ("https://[0::1]:1", EdgeUrl("https", "::1", "1", frozenset())),
        (
            "https://edge.${c}.test:${p}",
            EdgeUrl("https", "edge.${c}.test", "${p}", frozenset({"c", "p"})),
        ),
        ("https://${a}-${b}.test", EdgeUrl("https", "${a}-${b}.test", "443", frozenset("ab"))),
        ("https://${x}/", EdgeUrl("https", "${x}", "443", frozenset("x"))),
    ],
)
def test_parse_edge_url(url: str, expected: EdgeUrl) -> None:
    assert parse_edge_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("edge.test:443", "not an https:// or http://"),
        ("ftp://edge.test", "not an https:// or http://"),
        ("https://", "no host"),
        ("https://user:pw@edge.test", "user info"),
        ("https://edge.test/path", "a path"),
        ("https://edge.test?x=1", "a query"),
        ("https://edge.test#f", "a fragment"),
        ("https://edge.test:", "empty port"),
        ("https://edge.test:0", "invalid port"),
        ("https://edge.test:65536", "invalid port"),
        ("https://edge.test:8a", "invalid port"),
        ("https://edge.test:\u0661", "invalid port"),  # Arabic-Indic digit one
        ("https://[::1", "malformed IPv6"),
        ("https://[::1]x", "malformed IPv6"),
        ("https://[zz]:1", "not an IPv6"),
        ("https://edge_test!.x", "neither a DNS name"),
        ("https://127.1", "neither a DNS name"),
        ("https://edge.${x.test", "malformed placeholder"),
        ("https://edge.$x.test", "malformed placeholder"),
        ("https://${a}.${b}..test", "not a DNS name around"),
    ],
)
def test_parse_edge_url_refuses(url: str, problem: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(problem)):
        parse_edge_url(url)


def test_edge_target_key_brackets_ipv6() -> None:
    assert EdgeTarget("https", "::1", 8443, EdgeTls()).key == "https://[::1]:8443"
    assert EdgeTarget("http", "e.test", 80, EdgeTls()).key == "http://e.test:80"


# --- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Svc.Internal", "svc.internal"),
        ("svc.internal.", "svc.internal"),
        ("svc.internal..", None),
        ("1.2.3.4", None),
        ("[::ffff:127.0.0.1]", None),
        ("2130706433", None),
        ("0x7f.1", None),
        ("localhost", "localhost"),
        ("a_b.test", "a_b.test"),
        ("-a.test", None),
        ("a.test-", None),
    ],
)
def test_normalize_host(host: str, expected: str | None) -> None:
    assert normalize_host(host) == expected


# --- properties ------------------------------------------------------------------------

ALWAYS = r"""
routes:
  - suffix: "*.internal"
    edge: https://edge.test
  - regexp: '(?P<a>.*):(?P<p>[0-9]+)'
    edge: https://${a}.edges.test:${p}
  - regexp: '(?P<all>.*)'
    edge: https://${all}
"""


@given(st.ip_addresses(), st.integers(1, 65535), st.booleans(), st.booleans())
def test_never_maps_an_ip_literal(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, bracket: bool, grpc: bool
) -> None:
    mapper = Mapper(parse_dialer_config_text(ALWAYS))
    host = f"[{ip}]" if bracket and ip.version == 6 else str(ip)
    assert mapper.map(host, port, grpc=grpc) is None
    assert not mapper.is_mapped(host)


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_NAMEISH = st.one_of(
    st.text(alphabet="abc.-_:@/[]%0123456789 \n\u2028K\u212a", max_size=30),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
)


@settings(max_examples=300)
@given(_NAMEISH, st.integers(-5, 70000), st.booleans())
def test_a_mapped_edge_host_is_always_a_dns_name_or_fixed(host: str, port: int, grpc: bool) -> None:
    mapper = Mapper(parse_dialer_config_text(ALWAYS))
    mapped = mapper.map(host, port, grpc=grpc)
    if mapped is None:
        return
    assert is_dns_name(mapped.edge.host) and not is_ip_like(mapped.edge.host)
    assert mapped.edge.host == mapped.edge.host.lower()
    assert 1 <= mapped.edge.port <= 65535
    assert 1 <= port <= 65535
    name, _, port_text = mapped.authority.rpartition(":")
    assert port_text == str(port) and normalize_host(host) == name
