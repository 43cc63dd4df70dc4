"""Routing end to end: curl -> edge -> the backend its first matching route names.

Every route points at its own recording backend, which answers with its name, so each case
asserts both the body curl got and which backend (and only which) received the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from tests.support.backend import (
    RecordedRequest,
    RecordingBackend,
    recording_backend,
    simple_response,
)
from tests.support.edge import RunningEdge, one_route_yaml, running_edge
from tests.support.ops_client import curl

# (route name, backend name, match block as YAML flow mapping), in file order.
ROUTES: list[tuple[str, str, str]] = [
    ("exact", "exact", "{host: Exact.Test.}"),
    ("port-8443", "port8443", "{host: port.test, port: 8443}"),
    ("port-80", "port80", "{host: port.test, port: 80}"),
    ("wild", "wild", "{host: '*.wild.test'}"),
    ("paths", "paths", "{host: paths.test, paths: ['/api/*', '/exact']}"),
    ("hdr-exact", "hdrexact", "{host: hdr.test, headers: {x-env: prod}}"),
    (
        "hdr-regex",
        "hdrregex",
        "{host: hdr.test, headers: [{name: user-agent, regex: 'curl/[0-9.]+'}]}",
    ),
    ("mode-fwd", "fwd", "{host: mode.test, proxy_mode: forward}"),
    ("mode-rev", "rev", "{host: mode.test, proxy_mode: reverse}"),
    ("mode-any", "any", "{host: anymode.test, proxy_mode: any}"),
    # First match in file order: the wildcard comes first and wins over the exact host
    # listed after it, and a path-less route shadows a later one with paths.
    ("order-wild", "orderwild", "{host: '*.order.test'}"),
    ("order-exact", "orderexact", "{host: x.order.test}"),
    ("first-all", "firstall", "{host: first.test}"),
    ("first-paths", "firstpaths", "{host: first.test, paths: ['/only/*']}"),
]
BACKENDS = sorted({b for _, b, _ in ROUTES})


def edge_yaml(addresses: dict[str, str]) -> str:
    lines = [
        "listeners:",
        "  - name: http",
        "    address: 127.0.0.1:0",
        "admin:",
        "  address: 127.0.0.1:0",
        "backends:",
    ]
    for name in BACKENDS:
        lines += [
            f"  - name: {name}",
            "    resolver:",
            f"      static: {{endpoints: ['{addresses[name]}']}}",
        ]
    lines.append("routes:")
    for route, backend, match in ROUTES:
        lines += [f"  - name: {route}", f"    backend: {backend}", f"    match: {match}"]
    return "\n".join(lines) + "\n"


def _namer(name: str) -> Callable[[RecordedRequest, asyncio.StreamWriter], Awaitable[None]]:
    async def respond(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
        w.write(simple_response(200, name.encode()))

    return respond


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RunningEdge, dict[str, RecordingBackend]]]:
    async with AsyncExitStack() as stack:
        backends = {
            name: await stack.enter_async_context(recording_backend(_namer(name)))
            for name in BACKENDS
        }
        edge = await stack.enter_async_context(
            running_edge(edge_yaml({n: b.address for n, b in backends.items()}))
        )
        yield edge, backends


def received(backends: dict[str, RecordingBackend]) -> dict[str, int]:
    return {n: len(b.requests) for n, b in backends.items() if b.requests}


def reverse(edge: RunningEdge, host: str, path: str = "/", *extra: str) -> tuple[str, ...]:
    return ("-H", f"Host: {host}", *extra, f"{edge.url}{path}")


def forward(edge: RunningEdge, url: str, *extra: str) -> tuple[str, ...]:
    return ("-x", edge.url, *extra, url)


# (case id, how to call curl, backend that must get it or None for 404 no-route)
CASES = [
    ("exact-lower", lambda e: reverse(e, "exact.test"), "exact"),
    ("exact-upper", lambda e: reverse(e, "EXACT.TEST"), "exact"),
    ("exact-trailing-dot", lambda e: reverse(e, "Exact.Test."), "exact"),
    ("exact-other-host", lambda e: reverse(e, "exact.test.other"), None),
    ("exact-subdomain", lambda e: reverse(e, "a.exact.test"), None),
    ("port-explicit", lambda e: reverse(e, "port.test:8443"), "port8443"),
    ("port-default-80", lambda e: reverse(e, "port.test"), "port80"),
    ("port-explicit-80", lambda e: reverse(e, "port.test:80"), "port80"),
    ("port-other", lambda e: reverse(e, "port.test:8080"), None),
    ("port-forward-form", lambda e: forward(e, "http://port.test:8443/"), "port8443"),
    ("wild-one-label", lambda e: reverse(e, "a.wild.test"), "wild"),
    ("wild-two-labels", lambda e: reverse(e, "A.b.Wild.test"), "wild"),
    ("wild-bare-suffix", lambda e: reverse(e, "wild.test"), None),
    ("wild-not-suffix", lambda e: reverse(e, "awild.test"), None),
    ("path-prefix-itself", lambda e: reverse(e, "paths.test", "/api"), "paths"),
    ("path-prefix-slash", lambda e: reverse(e, "paths.test", "/api/"), "paths"),
    ("path-prefix-child", lambda e: reverse(e, "paths.test", "/api/x/y?q=1"), "paths"),
    ("path-prefix-not-segment", lambda e: reverse(e, "paths.test", "/apix"), None),
    ("path-prefix-not-v2", lambda e: reverse(e, "paths.test", "/apiv2/x"), None),
    ("path-exact", lambda e: reverse(e, "paths.test", "/exact"), "paths"),
    ("path-exact-slash", lambda e: reverse(e, "paths.test", "/exact/"), None),
    ("path-exact-child", lambda e: reverse(e, "paths.test", "/exact/x"), None),
    (
        "path-canonical-dotdot",
        lambda e: reverse(e, "paths.test", "/x/../api/z", "--path-as-is"),
        "paths",
    ),
    ("path-root", lambda e: reverse(e, "paths.test", "/"), None),
    ("header-exact", lambda e: reverse(e, "hdr.test", "/", "-H", "X-Env: prod"), "hdrexact"),
    ("header-exact-case", lambda e: reverse(e, "hdr.test", "/", "-H", "X-Env: Prod"), "hdrregex"),
    ("header-regex", lambda e: reverse(e, "hdr.test"), "hdrregex"),
    ("header-regex-fullmatch", lambda e: reverse(e, "hdr.test", "/", "-A", "curl/8.0 x"), None),
    ("header-none", lambda e: reverse(e, "hdr.test", "/", "-A", "wget"), None),
    ("mode-origin-form", lambda e: reverse(e, "mode.test"), "rev"),
    ("mode-absolute-form", lambda e: forward(e, "http://mode.test/"), "fwd"),
    ("mode-any-origin", lambda e: reverse(e, "anymode.test"), "any"),
    ("mode-any-absolute", lambda e: forward(e, "http://anymode.test/p"), "any"),
    ("order-wild-first", lambda e: reverse(e, "x.order.test"), "orderwild"),
    ("order-path-less-first", lambda e: reverse(e, "first.test", "/only/x"), "firstall"),
    ("no-route", lambda e: reverse(e, "nothing.test"), None),
    ("no-route-forward", lambda e: forward(e, "http://nothing.test/"), None),
]


@pytest.mark.parametrize(("case", "args", "expect"), CASES, ids=[c[0] for c in CASES])
async def test_route(
    setup: tuple[RunningEdge, dict[str, RecordingBackend]],
    case: str,
    args: Callable[[RunningEdge], tuple[str, ...]],
    expect: str | None,
) -> None:
    edge, backends = setup
    res = await curl(*args(edge))
    assert res.returncode == 0, res.stderr
    if expect is None:
        assert res.status == 404, (res.status, res.body)
        assert res.header("x-kedge-error-type") == "no-route"
        assert res.header("x-kedge-error")
        assert received(backends) == {}
    else:
        assert res.status == 200, (res.status, res.body)
        assert res.body == expect.encode()
        assert received(backends) == {expect: 1}


async def test_forward_form_reaches_backend_in_origin_form(
    setup: tuple[RunningEdge, dict[str, RecordingBackend]],
) -> None:
    """An absolute-form request is forwarded as origin-form with the Host of its URI."""
    edge, backends = setup
    res = await curl("-x", edge.url, "http://Mode.Test/a/b?c=d")
    assert res.status == 200 and res.body == b"fwd"
    req = backends["fwd"].requests[0]
    assert req.target == "/a/b?c=d"
    assert (req.header("host") or "").lower() == "mode.test"


async def test_access_log_names_route_and_backend(
    setup: tuple[RunningEdge, dict[str, RecordingBackend]],
) -> None:
    import orjson

    edge, _ = setup
    await curl(*reverse(edge, "a.wild.test", "/p"))
    await curl(*reverse(edge, "nothing.test", "/q"))
    lines = [orjson.loads(x) for x in edge.log_lines()]
    reqs = [x for x in lines if "status" in x]
    assert [(x["path"], x["status"], x.get("route"), x.get("backend")) for x in reqs] == [
        ("/p", 200, "wild", "wild"),
        ("/q", 404, None, None),
    ]
    assert reqs[1]["error_kind"] == "no-route"


async def test_forwarded_proto_is_how_the_client_reached_the_edge() -> None:
    """An absolute-form https:// target sent over the plaintext listener: the backend is
    told the client used http (X-Forwarded-Proto and Forwarded proto=)."""

    async with (
        recording_backend() as be,
        running_edge(one_route_yaml(be.address, route_match_extra="proxy_mode: forward")) as edge,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port())
        writer.write(b"GET https://app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200"), head
        req = be.requests[0]
        assert req.header("x-forwarded-proto") == "http"
        assert "proto=http;" in (req.header("forwarded") or "")
        assert req.header("host") == "app.test"  # https default port omitted
