"""Route discovery's generator: labelled Services to routes and backends (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kedge.edge.config import (
    BackendTlsConfig,
    DiscoveryConfig,
    K8sResolverConfig,
    ProxyMode,
    RouteAuth,
    RouteConfig,
    RouteMatch,
    UpstreamProtocol,
)
from kedge.edge.discovery.kubernetes.services import generate

CFG = DiscoveryConfig("cluster-a.internal")


def svc(
    name: str,
    ns: str = "apps",
    ports: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
        "spec": {"ports": ports if ports is not None else [{"name": "http", "port": 80}]},
    }


def test_an_http_port_becomes_a_route_and_a_backend() -> None:
    g = generate([svc("api")], CFG, (), has_auth=False)
    (route,) = g.routes
    (backend,) = g.backends
    assert route.name == "discovered:apps/api:http"
    assert route.match == RouteMatch(host="api.apps.cluster-a.internal", port=80)
    assert route.backend == backend.name == "k8s:apps/api:http"
    assert backend.resolver == K8sResolverConfig("apps", "api", "http")
    assert backend.protocol is UpstreamProtocol.HTTP1 and backend.tls is None
    assert (g.services, g.problems) == (1, ())


@pytest.mark.parametrize(
    ("port_name", "protocol", "tls", "grpc"),
    [
        ("http", UpstreamProtocol.HTTP1, False, False),
        ("http-admin", UpstreamProtocol.HTTP1, False, False),
        ("https", UpstreamProtocol.HTTP1, True, False),
        ("httptls-x", UpstreamProtocol.HTTP1, True, False),
        ("grpc", UpstreamProtocol.H2C, False, True),
        ("grpc-api", UpstreamProtocol.H2C, False, True),
        ("grpctls", UpstreamProtocol.H2, True, True),
    ],
)
def test_port_names_choose_the_protocol(
    port_name: str, protocol: UpstreamProtocol, tls: bool, grpc: bool
) -> None:
    g = generate([svc("api", ports=[{"name": port_name, "port": 9000}])], CFG, (), has_auth=False)
    (route,) = g.routes
    (backend,) = g.backends
    assert backend.protocol is protocol
    assert backend.tls == (BackendTlsConfig(insecure_skip_verify=True) if tls else None)
    assert route.match.grpc_methods == (("*",) if grpc else ())


def test_other_ports_are_skipped_and_a_service_without_any_is_reported() -> None:
    ports = [{"name": "metrics", "port": 9100}, {"name": "http", "port": 80, "protocol": "UDP"}]
    g = generate([svc("api", ports=ports), svc("web")], CFG, (), has_auth=False)
    assert [r.name for r in g.routes] == ["discovered:apps/web:http"]
    (problem,) = g.problems
    assert (problem.service, problem.kind) == ("apps/api", "invalid")
    assert "no port is named" in problem.message


def test_order_is_stable_and_after_hand_written_routes() -> None:
    services = [svc("b", "z"), svc("a", "z"), svc("c", "a")]
    one = generate(services, CFG, (), has_auth=False)
    two = generate(list(reversed(services)), CFG, (), has_auth=False)
    assert (
        [r.name for r in one.routes]
        == [r.name for r in two.routes]
        == [
            "discovered:a/c:http",
            "discovered:z/a:http",
            "discovered:z/b:http",
        ]
    )


def test_annotations() -> None:
    notes = {
        "kedge.io/host": "Payments.Example.Test",
        "kedge.io/grpc-methods": "pay.Api/*, pay.Admin/Get",
        "kedge.io/permissions": "pay.read, pay.admin",
    }
    ports = [{"name": "grpc", "port": 9090}, {"name": "http", "port": 8080}]
    g = generate([svc("pay", ports=ports, annotations=notes)], CFG, (), has_auth=True)
    grpc, http = g.routes
    assert grpc.match == RouteMatch(
        host="payments.example.test", port=9090, grpc_methods=("pay.Api/*", "pay.Admin/Get")
    )
    assert http.match == RouteMatch(host="payments.example.test", port=8080)
    assert grpc.auth == http.auth == RouteAuth(permissions=("pay.read", "pay.admin"))
    anonymous = generate(
        [svc("open", annotations={"kedge.io/anonymous": "true"})], CFG, (), has_auth=True
    )
    assert anonymous.routes[0].auth == RouteAuth(anonymous=True)


@pytest.mark.parametrize(
    ("annotations", "has_auth", "problem"),
    [
        ({"kedge.io/host": "bad_host.test"}, False, "not a DNS name"),
        ({"kedge.io/grpc-methods": "/pkg.Svc/*"}, False, "grpc-methods"),
        ({"kedge.io/permissions": "a,,b"}, True, "empty entry"),
        ({"kedge.io/anonymous": "yes"}, True, "true or false"),
        ({"kedge.io/anonymous": "true", "kedge.io/permissions": "a"}, True, "exclude"),
        ({"kedge.io/permissions": "a"}, False, "need the edge's `auth:` section"),
    ],
)
def test_a_bad_service_is_reported_and_never_holds_up_the_others(
    annotations: dict[str, str], has_auth: bool, problem: str
) -> None:
    ports = [{"name": "grpc", "port": 9090}]
    services = [svc("bad", ports=ports, annotations=annotations), svc("good")]
    g = generate(services, CFG, (), has_auth=has_auth)
    assert [r.name for r in g.routes] == ["discovered:apps/good:http"]
    (p,) = g.problems
    assert p.service == "apps/bad" and p.kind == "invalid" and problem in p.message


def test_conflicts_with_hand_written_routes_and_between_services() -> None:
    hand = RouteConfig("api", "b", RouteMatch(host="api.apps.cluster-a.internal", port=80))
    clash = svc("other", annotations={"kedge.io/host": "web.apps.cluster-a.internal"})
    g = generate([svc("api"), svc("web"), clash], CFG, (hand,), has_auth=False)
    # Services go in (namespace, name) order: "other" claims web's host before "web".
    assert [r.name for r in g.routes] == ["discovered:apps/other:http"]
    assert [(p.service, p.kind) for p in g.problems] == [
        ("apps/api", "conflict"),
        ("apps/web", "conflict"),
    ]
    assert "route 'api'" in g.problems[0].message


GRPC_PORT = [{"name": "grpc", "port": 9090}]
SHADOWING: list[tuple[str, RouteMatch, list[dict[str, Any]] | None, bool]] = [
    # (id, the hand-written route's match, the Service's ports, reported as shadowed)
    ("a wildcard over the domain", RouteMatch(host="*.cluster-a.internal"), None, True),
    ("a wildcard over the namespace", RouteMatch(host="*.apps.cluster-a.internal"), None, True),
    ("a wildcard on that port", RouteMatch(host="*.cluster-a.internal", port=80), None, True),
    ("a wildcard on another port", RouteMatch(host="*.cluster-a.internal", port=81), None, False),
    ("a wildcard over another domain", RouteMatch(host="*.cluster-b.internal"), None, False),
    ("a catch-all route", RouteMatch(), None, True),
    ("a catch-all on another port", RouteMatch(port=8080), None, False),
    ("a catch-all with a path", RouteMatch(paths=("/admin/*",)), None, False),
    (
        "a forward-proxy-only wildcard",
        RouteMatch(host="*.cluster-a.internal", proxy_mode=ProxyMode.FORWARD),
        None,
        False,
    ),
    (
        "a CONNECT route on the same host",
        RouteMatch(host="api.apps.cluster-a.internal", proxy_mode=ProxyMode.CONNECT),
        None,
        False,
    ),
    (
        "a gRPC-only wildcard over a plain port",
        RouteMatch(host="*.cluster-a.internal", grpc_methods=("*",)),
        None,
        False,
    ),
    (
        "a gRPC-only wildcard over a gRPC port",
        RouteMatch(host="*.cluster-a.internal", grpc_methods=("*",)),
        GRPC_PORT,
        True,
    ),
    ("a plain wildcard over a gRPC port", RouteMatch(host="*.cluster-a.internal"), GRPC_PORT, True),
]


@pytest.mark.parametrize(
    ("match", "ports", "shadowed"), [c[1:] for c in SHADOWING], ids=[c[0] for c in SHADOWING]
)
def test_wildcard_and_catch_all_routes_shadow_generated_ones(
    match: RouteMatch, ports: list[dict[str, Any]] | None, shadowed: bool
) -> None:
    hand = RouteConfig("hand", "b", match)
    g = generate([svc("api", ports=ports)], CFG, (hand,), has_auth=False)
    if shadowed:
        assert g.routes == ()
        (p,) = g.problems
        assert p.kind == "conflict" and "route 'hand'" in p.message
    else:
        assert len(g.routes) == 1 and g.problems == ()


def test_label_prefix_applies_to_annotations() -> None:
    cfg = DiscoveryConfig("c.internal", label_prefix="example.com/")
    notes = {"example.com/host": "x.test", "kedge.io/host": "ignored.test"}
    g = generate([svc("api", annotations=notes)], cfg, (), has_auth=False)
    assert g.routes[0].match.host == "x.test"


def test_junk_objects_are_reported_not_raised() -> None:
    junk: list[dict[str, Any]] = [
        {"metadata": {}},
        {"metadata": {"name": "x", "namespace": "y"}, "spec": {"ports": "nope"}},
    ]
    g = generate(junk, CFG, (), has_auth=False)
    assert g.routes == () and len(g.problems) == 2
