"""Tests for kedge.edge.routing (rules and the compiled table): first match in file order."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kedge.core.errors import BadRequest, ConfigError
from kedge.core.http.paths import canonical_path
from kedge.edge.config import HeaderMatch, ProxyMode, RouteConfig, RouteMatch
from kedge.edge.routing.rules import (
    HostKind,
    compile_header_match,
    compile_host_pattern,
    compile_path_rules,
    mode_matches,
)
from kedge.edge.routing.table import RouteRequest, RouteTable

REVERSE, FORWARD, ANY = ProxyMode.REVERSE, ProxyMode.FORWARD, ProxyMode.ANY


def route(name: str, **match: object) -> RouteConfig:
    return RouteConfig(name=name, backend=f"be-{name}", match=RouteMatch(**match))  # type: ignore[arg-type]


def req(
    host: str = "a.test",
    path: str = "/",
    port: int = 80,
    mode: ProxyMode = REVERSE,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> RouteRequest:
    return RouteRequest(host=host, port=port, path=path, mode=mode, headers=headers)


def name_of(table: RouteTable, request: RouteRequest) -> str | None:
    found = table.match(request)
    return found.name if found is not None else None


# --- rules -------------------------------------------------------------------------------

PATH_RULES = [
    (("/api/*",), "/api", True),
    (("/api/*",), "/api/", True),
    (("/api/*",), "/api/x/y", True),
    (("/api/*",), "/apiv2/secret", False),  # P10: segment boundary
    (("/api/*",), "/api;x", False),  # P7: ';' does not end a segment
    (("/api/*",), "/ap", False),
    (("/api",), "/api", True),
    (("/api",), "/api/", False),
    (("/api",), "/api/x", False),
    (("/api/",), "/api/", True),
    (("/*",), "/anything/at/all", True),
    (("/*",), "/", True),
    (("/admin/*",), "/ADMIN/x", False),  # P9: case-sensitive
    (("/a/b/*", "/c"), "/a/b/c", True),
    (("/a/b/*", "/c"), "/c", True),
    (("/a/b/*", "/c"), "/a/bc", False),
    (("/a/b/*", "/c"), "/c/d", False),
]


@pytest.mark.parametrize(("rules", "path", "expected"), PATH_RULES)
def test_path_rules(rules: tuple[str, ...], path: str, expected: bool) -> None:
    compiled = compile_path_rules(rules)
    assert compiled is not None
    assert compiled.matches(path) is expected


def test_no_path_rules_means_any() -> None:
    assert compile_path_rules(()) is None


@pytest.mark.parametrize("rule", ["api", "/a/*/b", "/a*", "*", "/a/**"])
def test_bad_path_rules(rule: str) -> None:
    with pytest.raises(ValueError, match="path rule"):
        compile_path_rules((rule,))


HOST_PATTERNS = [
    ("a.test", "a.test", True),
    ("a.test", "b.a.test", False),
    ("A.Test.", "a.test", True),  # pattern normalised like a request host
    ("*.a.test", "b.a.test", True),
    ("*.a.test", "c.b.a.test", True),  # any depth
    ("*.a.test", "a.test", False),  # the bare suffix is not covered
    ("*.a.test", "ba.test", False),  # label boundary
    ("*.a.test", "xa.test", False),
]


@pytest.mark.parametrize(("pattern", "host", "expected"), HOST_PATTERNS)
def test_host_patterns(pattern: str, host: str, expected: bool) -> None:
    assert compile_host_pattern(pattern).matches(host) is expected


def test_host_pattern_kinds() -> None:
    assert compile_host_pattern("*.a.test").kind is HostKind.SUFFIX
    assert compile_host_pattern("*.a.test").value == "a.test"
    assert compile_host_pattern("a.test").kind is HostKind.EXACT


@pytest.mark.parametrize("pattern", ["", "*", "*.", "a.*.test", "**.a.test", "*a.test", "*..a"])
def test_bad_host_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="host pattern"):
        compile_host_pattern(pattern)


HEADERS = [
    (HeaderMatch("x-env", exact="prod"), [(b"x-env", b"prod")], True),
    (HeaderMatch("x-env", exact="prod"), [(b"x-env", b"production")], False),
    (HeaderMatch("x-env", exact="prod"), [(b"x-other", b"prod")], False),
    (HeaderMatch("x-env", exact="prod"), [], False),
    # a header present several times matches if any value matches
    (HeaderMatch("x-env", exact="prod"), [(b"x-env", b"dev"), (b"x-env", b"prod")], True),
    (HeaderMatch("X-Env", exact="prod"), [(b"x-env", b"prod")], True),
    # regex is a full match, not a search
    (HeaderMatch("x-env", regex="pr.d"), [(b"x-env", b"prod")], True),
    (HeaderMatch("x-env", regex="pr.d"), [(b"x-env", b"prod2")], False),
    (HeaderMatch("x-env", regex="pr.d"), [(b"x-env", b"xprod")], False),
    (HeaderMatch("x-env", regex="a|b"), [(b"x-env", b"ab")], False),
    (HeaderMatch("x-env", regex="canary-[0-9]+"), [(b"x-env", b"canary-12")], True),
    # no value condition: presence
    (HeaderMatch("x-flag"), [(b"x-flag", b"")], True),
    (HeaderMatch("x-flag"), [(b"x-flags", b"1")], False),
    # UTF-8 values compare as raw bytes
    (HeaderMatch("x-user", exact="zoë"), [(b"x-user", "zoë".encode())], True),
]


@pytest.mark.parametrize(("match", "headers", "expected"), HEADERS)
def test_header_rules(
    match: HeaderMatch, headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert compile_header_match(match).matches(headers) is expected


def test_bad_header_regex() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        compile_header_match(HeaderMatch("x", regex="("))


@pytest.mark.parametrize(
    ("rule", "mode", "expected"),
    [
        (ANY, REVERSE, True),
        (ANY, FORWARD, True),
        (REVERSE, REVERSE, True),
        (REVERSE, FORWARD, False),
        (FORWARD, FORWARD, True),
        (FORWARD, REVERSE, False),
    ],
)
def test_mode_matches(rule: ProxyMode, mode: ProxyMode, expected: bool) -> None:
    assert mode_matches(rule, mode) is expected


# --- table semantics ---------------------------------------------------------------------

ORDERED = [
    route("star-first", host="*.a.test", paths=("/x/*",)),
    route("exact", host="b.a.test"),
    route("hostless-api", paths=("/api/*",)),
    route("c-exact-8080", host="c.a.test", port=8080),
    route("deep-star", host="*.b.a.test"),
    route("forward-only", host="fwd.test", proxy_mode=FORWARD),
    route("canary", host="svc.test", headers=(HeaderMatch("x-canary", exact="1"),)),
    route("svc", host="svc.test"),
    route("catch-all"),
]

TABLE_CASES = [
    (req("b.a.test", "/x/1"), "star-first"),  # an earlier wildcard beats a later exact host
    (req("b.a.test", "/y"), "exact"),
    (req("b.a.test", "/api/v1"), "exact"),  # exact host comes before the host-less route
    (req("q.a.test", "/api/v1"), "hostless-api"),
    (req("q.a.test", "/x"), "star-first"),
    (req("q.a.test", "/y"), "catch-all"),
    (req("a.test", "/x/1"), "catch-all"),  # *.a.test does not cover a.test
    (req("c.a.test", "/y", port=8080), "c-exact-8080"),
    (req("c.a.test", "/y", port=80), "catch-all"),
    (req("z.b.a.test", "/x/1"), "star-first"),  # both wildcards match: file order wins
    (req("z.b.a.test", "/y"), "deep-star"),
    (req("z.b.a.test", "/api"), "hostless-api"),
    (req("fwd.test", "/", mode=FORWARD), "forward-only"),
    (req("fwd.test", "/", mode=REVERSE), "catch-all"),
    (req("svc.test", "/", headers=[(b"x-canary", b"1")]), "canary"),
    (req("svc.test", "/", headers=[(b"x-canary", b"0")]), "svc"),
    (req("unknown.internal", "/"), "catch-all"),
    (req("::1", "/"), "catch-all"),
]


@pytest.mark.parametrize(("request_", "expected"), TABLE_CASES)
def test_table_first_match(request_: RouteRequest, expected: str) -> None:
    assert name_of(RouteTable.compile(ORDERED), request_) == expected


def test_table_without_catch_all_returns_none() -> None:
    table = RouteTable.compile(ORDERED[:-1])
    assert table.match(req("unknown.internal", "/")) is None
    assert table.match(req("q.a.test", "/y")) is None
    assert len(table) == len(ORDERED) - 1
    assert table.routes == tuple(ORDERED[:-1])


def test_empty_table() -> None:
    assert RouteTable.compile([]).match(req()) is None


def test_many_hostless_routes_keep_file_order() -> None:
    """Past the merge limit host-less routes are merged at match time; order must hold."""
    filler = [route(f"filler-{i}", port=1) for i in range(40)]
    routes = [
        *filler[:20],
        route("hostless-early", paths=("/early/*",)),
        route("exact", host="a.test"),
        *filler[20:],
        route("star", host="*.test", paths=("/late",)),
        route("hostless-late", paths=("/late",)),
    ]
    table = RouteTable.compile(routes)
    assert name_of(table, req("a.test", "/early/x")) == "hostless-early"
    assert name_of(table, req("a.test", "/late")) == "exact"
    assert name_of(table, req("b.test", "/late")) == "star"
    assert name_of(table, req("other", "/late")) == "hostless-late"
    assert name_of(table, req("other", "/nothing")) is None


@pytest.mark.parametrize(
    ("routes", "key_path"),
    [
        ([route("ok"), route("bad", host="a.*.test")], "routes[1].match.host"),
        ([route("bad", paths=("api",))], "routes[0].match.paths"),
        (
            [route("ok"), route("x", headers=(HeaderMatch("h"), HeaderMatch("h", regex="[")))],
            "routes[1].match.headers[1]",
        ),
    ],
)
def test_compile_errors_name_the_key_path(routes: list[RouteConfig], key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RouteTable.compile(routes, source="edge.yaml")
    assert info.value.key_path == key_path
    assert info.value.file == "edge.yaml"


# --- hardening P1-P13 through canonical_path and the table -------------------------------

HARDENED = RouteTable.compile(
    [
        route("admin", paths=("/admin/*",)),  # requires permission `admin` in the real config
        route("api", paths=("/api/*",)),
        route("public", paths=("/*",)),
    ]
)


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        ("/api/../admin/x", "admin"),  # P1
        ("/api/%2e%2e/admin/x", "admin"),  # P2
        ("/api/.%2e/admin", "admin"),  # P2
        ("/api/%2E%2E/admin", "admin"),  # P2
        ("/api/%252e%252e%252fadmin", "api"),  # P4: decoded once, stays under /api
        ("//admin/x", "admin"),  # P5
        ("/api//x", "api"),  # P5
        ("/./admin", "admin"),  # P5
        ("/api;x=1/../admin", "admin"),  # P7
        ("/admin;/x", "public"),  # P7: "/admin;" is not the segment "/admin"
        ("/ADMIN/x", "public"),  # P9: exact-case match
        ("/apiv2/secret", "public"),  # P10
        ("/a%3fadmin", "public"),  # P13
    ],
)
def test_hardening_paths_route_by_canonical_path(raw_path: str, expected: str) -> None:
    assert name_of(HARDENED, req("a.test", canonical_path(raw_path))) == expected


@pytest.mark.parametrize(
    "raw_path",
    [
        "/api/..%2fadmin/x",  # P3
        "/api\\..\\admin",  # P6
        "/api/..%5cadmin",  # P6
        "/api/\x00",  # P8
        "/api/%c0%ae%c0%ae/admin",  # P8
        "/api/a b",  # P8
        "*",  # P12
    ],
)
def test_hardening_paths_refused(raw_path: str) -> None:
    with pytest.raises(BadRequest):
        canonical_path(raw_path)


# --- property: the compiled table equals a brute-force linear first match ----------------

ROUTE_HOSTS = [
    None,
    "a.test",
    "b.a.test",
    "c.b.a.test",
    "*.a.test",
    "*.b.a.test",
    "*.test",
    "x.internal",
    "*.internal",
]
REQUEST_HOSTS = [
    "a.test",
    "b.a.test",
    "c.b.a.test",
    "d.c.b.a.test",
    "e.b.a.test",
    "test",
    "other.test",
    "x.internal",
    "y.x.internal",
    "internal",
    "::1",
]
PATHS = ["/", "/api", "/api/", "/api/v1", "/api/v1/x", "/apiv2", "/admin", "/admin/x"]
RULES = ["/api/*", "/api", "/api/v1/*", "/*", "/admin", "/admin/*", "/"]
HEADER_MATCHES = [
    HeaderMatch("x-env", exact="prod"),
    HeaderMatch("x-env", regex="pr.*"),
    HeaderMatch("x-flag"),
]
HEADER_VALUES = [(b"x-env", b"prod"), (b"x-env", b"dev"), (b"x-env", b"preview"), (b"x-flag", b"")]

_routes = st.builds(
    lambda host, port, paths, headers, mode: RouteMatch(host, port, paths, headers, mode),
    st.sampled_from(ROUTE_HOSTS),
    st.sampled_from([None, 80, 8080]),
    st.lists(st.sampled_from(RULES), max_size=2, unique=True).map(tuple),
    st.lists(st.sampled_from(HEADER_MATCHES), max_size=2).map(tuple),
    st.sampled_from([ANY, ANY, REVERSE, FORWARD]),
)
_requests = st.builds(
    req,
    st.sampled_from(REQUEST_HOSTS),
    st.sampled_from(PATHS),
    st.sampled_from([80, 8080]),
    st.sampled_from([REVERSE, FORWARD]),
    st.lists(st.sampled_from(HEADER_VALUES), max_size=3),
)


def brute_force(routes: Sequence[RouteConfig], r: RouteRequest) -> RouteConfig | None:
    """The specification, written independently of kedge.edge.routing.rules."""
    for candidate in routes:
        m = candidate.match
        if m.host is not None:
            if m.host.startswith("*."):
                if not r.host.endswith(m.host[1:]):
                    continue
            elif m.host != r.host:
                continue
        if m.port is not None and m.port != r.port:
            continue
        if m.paths and not any(
            p == "/*"
            or p == r.path
            or (p.endswith("/*") and (r.path == p[:-2] or r.path.startswith(p[:-1])))
            for p in m.paths
        ):
            continue
        if not all(
            any(
                n == h.name.encode()
                and (h.exact is None or v == h.exact.encode())
                and (h.regex is None or re.fullmatch(h.regex, v.decode()) is not None)
                for n, v in r.headers
            )
            for h in m.headers
        ):
            continue
        if m.proxy_mode is not ANY and m.proxy_mode is not r.mode:
            continue
        return candidate
    return None


def _as_routes(matches: list[RouteMatch]) -> list[RouteConfig]:
    return [RouteConfig(name=f"r{i}", backend="b", match=m) for i, m in enumerate(matches)]


@settings(max_examples=300)
@given(st.lists(_routes, max_size=20), st.lists(_requests, min_size=1, max_size=8))
def test_table_equals_brute_force(matches: list[RouteMatch], requests: list[RouteRequest]) -> None:
    routes = _as_routes(matches)
    table = RouteTable.compile(routes)
    for r in requests:
        assert table.match(r) is brute_force(routes, r)


@settings(max_examples=100)
@given(
    st.lists(_routes, max_size=8),
    st.lists(
        _routes.map(lambda m: RouteMatch(None, m.port, m.paths, m.headers)),
        min_size=33,
        max_size=40,
    ),
    st.lists(_requests, min_size=1, max_size=8),
)
def test_table_equals_brute_force_with_many_hostless(
    head: list[RouteMatch], hostless: list[RouteMatch], requests: list[RouteRequest]
) -> None:
    """Enough host-less routes to cross the merge limit: the match-time merge path."""
    routes = _as_routes(head + hostless + head)
    table = RouteTable.compile(routes)
    for r in requests:
        assert table.match(r) is brute_force(routes, r)


def test_many_paths_on_one_host() -> None:
    """A gateway host with many path routes: the first-segment index keeps file order."""
    routes = [
        route("v1-exact", host="gw.test", paths=("/svc3/v1",)),
        *[route(f"svc{i}", host="gw.test", paths=(f"/svc{i}/*",)) for i in range(30)],
        route("root", host="gw.test", paths=("/",)),
        route("header-any-path", host="gw.test", headers=(HeaderMatch("x-debug"),)),
        route("deep", host="gw.test", paths=("/svc40/a/b/*",)),
        route("fallback", host="gw.test", paths=("/*",)),
    ]
    table = RouteTable.compile(routes)
    assert name_of(table, req("gw.test", "/svc3/v1")) == "v1-exact"
    assert name_of(table, req("gw.test", "/svc3/v2")) == "svc3"
    assert name_of(table, req("gw.test", "/svc3")) == "svc3"
    assert name_of(table, req("gw.test", "/svc29/x/y")) == "svc29"
    assert name_of(table, req("gw.test", "/svc30/x")) == "fallback"
    assert name_of(table, req("gw.test", "/")) == "root"
    assert name_of(table, req("gw.test", "/svc40/a/b")) == "deep"
    assert name_of(table, req("gw.test", "/svc40/a")) == "fallback"
    assert (
        name_of(table, req("gw.test", "/nope", headers=[(b"x-debug", b"1")])) == "header-any-path"
    )
    assert name_of(table, req("gw.test", "/svc5/x", headers=[(b"x-debug", b"1")])) == "svc5"


_gateway_routes = st.builds(
    lambda port, paths, headers: RouteMatch("gw.test", port, paths, headers),
    st.sampled_from([None, None, 8080]),
    st.lists(st.sampled_from([*RULES, "/b/*", "/b", "/c/d/*", "/c/d", "/e/*"]), max_size=2).map(
        tuple
    ),
    st.lists(st.sampled_from(HEADER_MATCHES), max_size=1).map(tuple),
)
_gateway_requests = st.builds(
    req,
    st.just("gw.test"),
    st.sampled_from([*PATHS, "/b", "/b/x", "/bx", "/c", "/c/d", "/c/d/e", "/c/e", "/e", "/f"]),
    st.sampled_from([80, 8080]),
    st.just(REVERSE),
    st.lists(st.sampled_from(HEADER_VALUES), max_size=2),
)


@settings(max_examples=200)
@given(
    st.lists(_gateway_routes, min_size=9, max_size=30),
    st.lists(_gateway_requests, min_size=1, max_size=10),
)
def test_path_index_equals_brute_force(
    matches: list[RouteMatch], requests: list[RouteRequest]
) -> None:
    """More than 8 routes on one host (and as many host-less ones): the indexed lookups."""
    hostless = [RouteMatch(None, m.port, m.paths, m.headers) for m in matches]
    for routes in (_as_routes(matches), _as_routes(hostless), _as_routes(matches + hostless)):
        table = RouteTable.compile(routes)
        for r in requests:
            assert table.match(r) is brute_force(routes, r)
