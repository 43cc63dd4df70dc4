"""Tests for gRPC method routing: method globs, gRPC detection and the compiled table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kedge.core.config_loading import InvalidValue
from kedge.core.errors import ConfigError
from kedge.core.http.grpc_detect import is_grpc_content_type, is_grpc_request
from kedge.edge.config import HeaderMatch, ProxyMode, RouteConfig, RouteMatch
from kedge.edge.routing.rules import compile_grpc_methods, parse_grpc_method
from kedge.edge.routing.table import RouteRequest, RouteTable

REVERSE, FORWARD, ANY = ProxyMode.REVERSE, ProxyMode.FORWARD, ProxyMode.ANY
SAY_HELLO = "/kedge.e2e.Greeter/SayHello"


def route(name: str, **match: object) -> RouteConfig:
    return RouteConfig(name=name, backend=f"be-{name}", match=RouteMatch(**match))  # type: ignore[arg-type]


def call(
    path: str = SAY_HELLO,
    host: str = "g.test",
    *,
    grpc: bool = True,
    port: int = 443,
    mode: ProxyMode = REVERSE,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> RouteRequest:
    return RouteRequest(host, port, path, mode, headers, grpc=grpc)


def name_of(table: RouteTable, request: RouteRequest) -> str | None:
    found = table.match(request)
    return found.name if found is not None else None


# --- detection -----------------------------------------------------------------------------

CONTENT_TYPES = [
    (b"application/grpc", True),
    (b"application/grpc+proto", True),
    (b"application/grpc+json", True),
    (b"application/grpc;charset=utf-8", True),
    (b"application/grpc-web", False),  # gRPC-Web is plain HTTP to the edge, as in kEdge
    (b"application/grpc-web+proto", False),
    (b"application/grpc-web-text", False),
    (b"application/grpcx", False),
    (b"application/grp", False),
    (b"application/json", False),
    (b"", False),
    (b"Application/GRPC", False),  # compared case-sensitively, like the HTTP/2 driver
]


@pytest.mark.parametrize(("value", "expected"), CONTENT_TYPES)
def test_grpc_content_types(value: bytes, expected: bool) -> None:
    assert is_grpc_content_type(value) is expected
    assert is_grpc_request([(b"te", b"trailers"), (b"content-type", value)]) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        ([(b"x-content-type", b"application/grpc")], False),
        ([(b"content-type", b"application/grpc"), (b"content-type", b"text/plain")], True),
        ([(b"content-type", b"text/plain"), (b"content-type", b"application/grpc")], False),
    ],
)
def test_grpc_request_uses_the_first_content_type(
    headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert is_grpc_request(headers) is expected


def test_route_request_is_plain_unless_told() -> None:
    plain = RouteRequest("a.test", 80, "/", REVERSE)
    assert plain.grpc is False
    assert "grpc" not in repr(plain)
    assert repr(call()) == f"RouteRequest(g.test:443{SAY_HELLO} reverse grpc)"


# --- method globs --------------------------------------------------------------------------

GLOBS = [
    ("kedge.e2e.Greeter/SayHello", ("/kedge.e2e.Greeter/SayHello", False)),
    ("kedge.e2e.Greeter/*", ("/kedge.e2e.Greeter/", True)),
    ("kedge.e2e.Greeter", ("/kedge.e2e.Greeter/", True)),  # bare service = Service/*
    ("kedge.*", ("/kedge.", True)),
    ("kedge.e2e.*", ("/kedge.e2e.", True)),
    ("*", ("/", True)),
    ("Greeter/SayHello", ("/Greeter/SayHello", False)),  # a service outside any package
    ("Greeter", ("/Greeter/", True)),
    ("_p.S_1/M_2", ("/_p.S_1/M_2", False)),
]


@pytest.mark.parametrize(("glob", "expected"), GLOBS)
def test_parse_grpc_method(glob: str, expected: tuple[str, bool]) -> None:
    assert parse_grpc_method(glob) == expected


BAD_GLOBS = [
    ("", "is not a service name"),
    ("/kedge.e2e.Greeter/SayHello", "starts with '/'"),
    ("kedge.e2e.Greeter/Say*", "'*' must be the whole method name"),
    ("kedge.e2e.Greeter/*x", "'*' must be the whole method name"),
    ("kedge.e2e.*/SayHello", "'*' is only allowed"),
    ("kedge.e2e.Gree*", "'*' is only allowed"),
    ("*.Greeter", "'*' is only allowed"),
    ("*/SayHello", "'*' is only allowed"),
    ("**", "'*' is only allowed"),
    ("kedge.**", "'*' is only allowed"),
    (".*", "'' is not a package name"),
    ("kedge..e2e.Greeter", "is not a service name"),
    ("kedge.e2e.Greeter.", "is not a service name"),
    ("1kedge.Greeter", "is not a service name"),
    ("kedge-e2e.Greeter", "is not a service name"),
    ("kedge.e2e.Greeter/", "'' is not a method name"),
    ("kedge.e2e.Greeter/Say.Hello", "is not a method name"),
    ("kedge.e2e.Greeter/SayHello/x", "is not a method name"),
    ("kedge.e2e.Greeter/SayHello ", "is not a method name"),
    (" kedge.e2e.Greeter", "is not a service name"),
]


@pytest.mark.parametrize(("glob", "problem"), BAD_GLOBS)
def test_bad_grpc_method_globs(glob: str, problem: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_grpc_method(glob)
    assert problem in info.value.problem
    assert info.value.fix


METHOD_RULES = [
    (["kedge.e2e.Greeter/SayHello"], SAY_HELLO, True),
    (["kedge.e2e.Greeter/SayHello"], "/kedge.e2e.Greeter/SayHelloAgain", False),
    (["kedge.e2e.Greeter/SayHello"], "/kedge.e2e.Greeter/sayhello", False),  # case-sensitive
    (["kedge.e2e.Greeter/SayHello"], "/kedge.e2e.Other/SayHello", False),
    (["kedge.e2e.Greeter/*"], "/kedge.e2e.Greeter/Bidi", True),
    (["kedge.e2e.Greeter/*"], "/kedge.e2e.GreeterV2/Bidi", False),  # service boundary
    (["kedge.e2e.Greeter/*"], "/kedge.e2e.Greeter", False),  # no method: not a call path
    (["kedge.e2e.Greeter"], "/kedge.e2e.Greeter/Bidi", True),
    (["kedge.e2e.Greeter"], "/kedge.e2e.GreeterV2/Bidi", False),
    (["kedge.e2e.Greeter"], "/kedge.e2e.Greeter", False),
    (["kedge.*"], SAY_HELLO, True),
    (["kedge.*"], "/kedge.Top/M", True),
    (["kedge.*"], "/kedgex.Top/M", False),  # package boundary
    (["kedge.*"], "/kedge/M", False),
    (["kedge.e2e.*"], "/kedge.e2e.v1.Greeter/M", True),  # sub-packages too
    (["kedge.e2e.*"], "/kedge.e2ex.Greeter/M", False),
    (["*"], SAY_HELLO, True),
    (["*"], "/", True),
    (["a.B/M", "c.*"], "/c.D/M", True),
    (["a.B/M", "c.*"], "/a.B/M", True),
    (["a.B/M", "c.*"], "/a.B/N", False),
]


@pytest.mark.parametrize(("globs", "path", "expected"), METHOD_RULES)
def test_grpc_method_rules(globs: list[str], path: str, expected: bool) -> None:
    rule = compile_grpc_methods(globs)
    assert rule is not None
    assert rule.matches(path) is expected


@pytest.mark.parametrize(
    ("globs", "services"),
    [
        (["a.B/M", "c.D/*", "E"], frozenset({"a.B", "c.D", "E"})),
        (["a.B/M", "a.B/N"], frozenset({"a.B"})),
        (["a.B/M", "c.*"], None),  # a package prefix ends inside the segment
        (["a.B/M", "*"], None),
    ],
)
def test_grpc_rule_services(globs: list[str], services: frozenset[str] | None) -> None:
    rule = compile_grpc_methods(globs)
    assert rule is not None
    assert rule.services == services


def test_no_grpc_globs_means_no_condition() -> None:
    assert compile_grpc_methods(()) is None


# --- the table: gRPC and plain routes together ---------------------------------------------

MIXED = [
    route("plain-api", host="g.test", paths=("/api/*",)),
    route(
        "hello-canary",
        host="g.test",
        grpc_methods=("kedge.e2e.Greeter/SayHello",),
        headers=(HeaderMatch("x-canary", exact="1"),),
    ),
    route("hello", host="g.test", grpc_methods=("kedge.e2e.Greeter/SayHello",)),
    route("greeter", host="g.test", grpc_methods=("kedge.e2e.Greeter",)),
    route("other-8443", host="g.test", port=8443, grpc_methods=("kedge.e2e.Other/*",)),
    route("forward-grpc", host="g.test", proxy_mode=FORWARD, grpc_methods=("kedge.e2e.Other",)),
    route("kedge-pkg", host="*.test", grpc_methods=("kedge.*",)),
    route("plain-g", host="g.test", paths=("/plain/*",)),
    route("any-grpc", grpc_methods=("*",)),
    route("catch-all"),
]

MIXED_CASES = [
    # each glob form, in file order
    (call(SAY_HELLO), "hello"),
    (call("/kedge.e2e.Greeter/Bidi"), "greeter"),
    (call("/kedge.e2e.GreeterV2/Bidi"), "kedge-pkg"),
    (call("/kedge.v1.Thing/Do"), "kedge-pkg"),
    (call("/other.Service/Do"), "any-grpc"),
    # metadata (headers) ANDed with the method
    (call(SAY_HELLO, headers=[(b"x-canary", b"1")]), "hello-canary"),
    (call(SAY_HELLO, headers=[(b"x-canary", b"0")]), "hello"),
    (call("/kedge.e2e.Greeter/Bidi", headers=[(b"x-canary", b"1")]), "greeter"),
    # port (of :authority) ANDed
    (call("/kedge.e2e.Other/Ping", port=8443), "other-8443"),
    (call("/kedge.e2e.Other/Ping", port=443), "kedge-pkg"),
    # proxy mode ANDed: the gate checks the route's own mode
    (call("/kedge.e2e.Other/Ping", mode=FORWARD), "forward-grpc"),
    (call("/kedge.e2e.Other/Ping", port=8443, mode=FORWARD), "other-8443"),
    # host ANDed: another host only reaches the wildcard and host-less routes
    (call(SAY_HELLO, host="x.test"), "kedge-pkg"),
    (call("/other.Service/Do", host="x.test"), "any-grpc"),
    (call(SAY_HELLO, host="elsewhere.internal"), "any-grpc"),
    # a gRPC request still matches plain routes that come first
    (call("/api/x"), "plain-api"),
    (call("/plain/x"), "plain-g"),  # gRPC globs cannot match "/plain/x"; "*" comes later
    # a plain request never matches a gRPC-only route, whatever its path
    (call(SAY_HELLO, grpc=False), "catch-all"),
    (call(SAY_HELLO, grpc=False, headers=[(b"x-canary", b"1")]), "catch-all"),
    (call("/kedge.e2e.Other/Ping", grpc=False, mode=FORWARD), "catch-all"),
    (call("/api/x", grpc=False), "plain-api"),
    (call("/plain/x", grpc=False), "plain-g"),
]


@pytest.mark.parametrize(("request_", "expected"), MIXED_CASES)
def test_mixed_routes_first_match(request_: RouteRequest, expected: str) -> None:
    assert name_of(RouteTable.compile(MIXED), request_) == expected


def test_grpc_only_table_refuses_plain_requests() -> None:
    table = RouteTable.compile([route("all-grpc", grpc_methods=("*",))])
    assert name_of(table, call("/anything")) == "all-grpc"
    assert table.match(call("/anything", grpc=False)) is None


def test_paths_and_methods_are_anded() -> None:
    table = RouteTable.compile(
        [
            route("both", paths=("/kedge.e2e.Greeter/*",), grpc_methods=("kedge.*",)),
            route("disjoint", paths=("/api/*",), grpc_methods=("kedge.e2e.Greeter",)),
        ]
    )
    assert name_of(table, call(SAY_HELLO)) == "both"
    assert table.match(call("/kedge.e2e.Other/Ping")) is None
    assert table.match(call("/api/x")) is None  # "disjoint" can never match


@pytest.mark.parametrize(
    ("globs", "key_path"),
    [
        (("ok.S", "bad/*/x"), "routes[1].match.grpc_methods[1]"),
        (("/ok.S/M",), "routes[1].match.grpc_methods[0]"),
        (("a.*.b",), "routes[1].match.grpc_methods[0]"),
    ],
)
def test_compile_errors_name_the_glob(globs: tuple[str, ...], key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RouteTable.compile([route("ok"), route("bad", grpc_methods=globs)], source="edge.yaml")
    assert info.value.key_path == key_path
    assert info.value.file == "edge.yaml"
    assert info.value.fix


# --- the path index: many routes on one host -----------------------------------------------


def test_path_index_with_many_grpc_routes_on_one_host() -> None:
    """More than 8 candidates on one host: package globs must not be keyed on a segment."""
    routes = [
        route("early-exact", host="gw.test", grpc_methods=("svc3.S/Special",)),
        route("pkg-early", host="gw.test", grpc_methods=("pkg.*",)),
        *[route(f"svc{i}", host="gw.test", grpc_methods=(f"svc{i}.S",)) for i in range(12)],
        route("svc-wide", host="gw.test", grpc_methods=("svc.*",)),
        route("sub-pkg", host="gw.test", grpc_methods=("svc1.S.*",)),
        route("plain-path", host="gw.test", paths=("/svc5.S/*",)),
        route("meta", host="gw.test", headers=(HeaderMatch("x-debug"),)),
        route("path-and-glob", host="gw.test", paths=("/x/*",), grpc_methods=("svc4.*",)),
        route("grpc-rest", host="gw.test", grpc_methods=("*",)),
        route("plain-rest", host="gw.test"),
    ]
    table = RouteTable.compile(routes)
    cases = [
        (call("/svc3.S/Special", "gw.test"), "early-exact"),
        (call("/svc3.S/Other", "gw.test"), "svc3"),
        (call("/pkg.A/M", "gw.test"), "pkg-early"),  # segment "pkg.A", keyed nowhere
        (call("/pkg.b.C/M", "gw.test"), "pkg-early"),
        (call("/svc11.S/M", "gw.test"), "svc11"),
        (call("/svc11.SS/M", "gw.test"), "grpc-rest"),
        (call("/svc.anything/M", "gw.test"), "svc-wide"),
        (call("/svc1.S.v2/M", "gw.test"), "sub-pkg"),  # not svc1: another segment
        (call("/svc12.S/M", "gw.test"), "grpc-rest"),
        (call("/svc5.S/M", "gw.test"), "svc5"),
        (call("/svc5.S/M", "gw.test", grpc=False), "plain-path"),
        (call("/svc5.S/M", "gw.test", grpc=False, headers=[(b"x-debug", b"")]), "plain-path"),
        (call("/svc7.S/M", "gw.test", grpc=False, headers=[(b"x-debug", b"")]), "meta"),
        (call("/svc7.S/M", "gw.test", grpc=False), "plain-rest"),
        (call("/x/y", "gw.test"), "grpc-rest"),  # "svc4.*" is ANDed with "/x/*": never
        (call("/", "gw.test"), "grpc-rest"),
        (call("/", "gw.test", grpc=False), "plain-rest"),
    ]
    for request, expected in cases:
        assert name_of(table, request) == expected, request
    # The same routes without a host: the host-less group is indexed the same way.
    hostless = RouteTable.compile(
        [dataclasses.replace(r, match=dataclasses.replace(r.match, host=None)) for r in routes]
    )
    for request, expected in cases:
        assert name_of(hostless, request) == expected, request


# --- property: the compiled table equals a brute-force linear first match ----------------


def glob_matches(glob: str, path: str) -> bool:
    """The documented glob semantics, written independently of kedge.edge.routing.rules."""
    if glob == "*":
        return True
    target = path[1:]
    service, slash, method = target.partition("/")
    if glob.endswith(".*") and "/" not in glob:
        return target.startswith(glob[:-1])
    want_service, _, want_method = glob.partition("/")
    if not slash or service != want_service:
        return False
    return want_method in ("", "*") or method == want_method


def brute_force(routes: Sequence[RouteConfig], r: RouteRequest) -> RouteConfig | None:
    for candidate in routes:
        m = candidate.match
        wildcard_hit = m.host is not None and m.host[:2] == "*." and r.host.endswith(m.host[1:])
        if m.host is not None and m.host != r.host and not wildcard_hit:
            continue
        if m.port is not None and m.port != r.port:
            continue
        if m.proxy_mode is not ANY and m.proxy_mode is not r.mode:
            continue
        if m.paths and not any(
            p == "/*"
            or p == r.path
            or (p.endswith("/*") and (r.path == p[:-2] or r.path.startswith(p[:-1])))
            for p in m.paths
        ):
            continue
        if m.grpc_methods and not (r.grpc and any(glob_matches(g, r.path) for g in m.grpc_methods)):
            continue
        if not all(
            any(
                n == h.name.encode() and (h.exact is None or v == h.exact.encode())
                for n, v in r.headers
            )
            for h in m.headers
        ):
            continue
        return candidate
    return None


GLOB_POOL = [
    "*",
    "a.S/M",
    "a.S/*",
    "a.S",
    "a.*",
    "a.S.*",
    "b.S/M",
    "b.T",
    "b.*",
    "S",
    "S/M",
]
GRPC_PATHS = [
    "/a.S/M",
    "/a.S/N",
    "/a.S",
    "/a.SS/M",
    "/a.S.x/M",
    "/a.T/M",
    "/b.S/M",
    "/b.T/M",
    "/bb.T/M",
    "/S/M",
    "/S/N",
    "/Sx/M",
    "/api/x",
    "/api",
    "/",
]
PATH_RULES = ["/api/*", "/a.S/*", "/a.S/M", "/*", "/S/*", "/b.T/M", "/"]
HEADERS = [HeaderMatch("x-env", exact="prod"), HeaderMatch("x-flag")]
HEADER_VALUES = [(b"x-env", b"prod"), (b"x-env", b"dev"), (b"x-flag", b"")]

_matches = st.builds(
    lambda host, port, paths, headers, mode, globs: RouteMatch(
        host, port, paths, headers, mode, globs
    ),
    st.sampled_from([None, "gw.test", "*.test", "x.gw.test"]),
    st.sampled_from([None, None, 8443]),
    st.lists(st.sampled_from(PATH_RULES), max_size=2, unique=True).map(tuple),
    st.lists(st.sampled_from(HEADERS), max_size=1).map(tuple),
    st.sampled_from([ANY, ANY, ANY, REVERSE, FORWARD]),
    st.one_of(st.just(()), st.lists(st.sampled_from(GLOB_POOL), min_size=1, max_size=3).map(tuple)),
)
_calls = st.builds(
    lambda path, host, grpc, port, mode, headers: call(
        path, host, grpc=grpc, port=port, mode=mode, headers=headers
    ),
    st.sampled_from(GRPC_PATHS),
    st.sampled_from(["gw.test", "x.gw.test", "other.test", "elsewhere.internal"]),
    st.booleans(),
    st.sampled_from([443, 8443]),
    st.sampled_from([REVERSE, FORWARD]),
    st.lists(st.sampled_from(HEADER_VALUES), max_size=2),
)


def _as_routes(matches: list[RouteMatch]) -> list[RouteConfig]:
    return [RouteConfig(name=f"r{i}", backend="b", match=m) for i, m in enumerate(matches)]


@settings(max_examples=100)
@given(st.lists(_matches, max_size=24), st.lists(_calls, min_size=1, max_size=10))
def test_table_with_grpc_routes_equals_brute_force(
    matches: list[RouteMatch], requests: list[RouteRequest]
) -> None:
    routes = _as_routes(matches)
    table = RouteTable.compile(routes)
    for r in requests:
        assert table.match(r) is brute_force(routes, r)


@settings(max_examples=60)
@given(
    st.lists(_matches, min_size=9, max_size=30),
    st.lists(_calls, min_size=1, max_size=10),
)
def test_path_index_with_grpc_routes_equals_brute_force(
    matches: list[RouteMatch], requests: list[RouteRequest]
) -> None:
    """More than 8 routes on one host, and more than 32 host-less ones: the indexed lookups."""
    one_host = [dataclasses.replace(m, host="gw.test") for m in matches]
    hostless = [dataclasses.replace(m, host=None) for m in matches]
    for group in (one_host, hostless, one_host + hostless * 4):
        routes = _as_routes(group)
        table = RouteTable.compile(routes)
        for r in requests:
            assert table.match(r) is brute_force(routes, r)
