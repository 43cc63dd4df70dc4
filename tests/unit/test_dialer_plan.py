"""The dialer's plans: credential headers (pure), mapping policy, TLS context caching, targets."""

from __future__ import annotations

import pytest

from kedge.core.errors import CredentialUnavailable
from kedge.dialer import Dialer, DialPlan, NotMapped, parse_dialer_config_text
from kedge.dialer.config import MapRoute, SuffixRule
from kedge.dialer.credentials import BearerToken, ClientCertificate, Credential
from kedge.dialer.dialer import H2_ALPN, HTTP1_ALPN, credential_headers
from kedge.dialer.grpc_aio import split_target

ROUTE = MapRoute("r", SuffixRule(".a.internal"), "https://edge.a.test", "p", "b")
TOKEN_P = BearerToken("proxy-tok")
TOKEN_B = BearerToken("backend-tok")
CERT = ClientCertificate(b"cert", b"key")


@pytest.mark.parametrize(
    ("scheme", "proxy", "backend", "headers", "cert"),
    [
        ("https", None, None, (), None),
        ("https", TOKEN_P, None, (("proxy-authorization", "Bearer proxy-tok"),), None),
        ("https", None, TOKEN_B, (("authorization", "Bearer backend-tok"),), None),
        (
            "https",
            TOKEN_P,
            TOKEN_B,
            (("proxy-authorization", "Bearer proxy-tok"), ("authorization", "Bearer backend-tok")),
            None,
        ),
        ("https", CERT, TOKEN_B, (("authorization", "Bearer backend-tok"),), CERT),
        ("https", CERT, None, (), CERT),
        ("http", None, None, (), None),
    ],
)
def test_credential_headers(
    scheme: str,
    proxy: Credential | None,
    backend: Credential | None,
    headers: tuple[tuple[str, str], ...],
    cert: ClientCertificate | None,
) -> None:
    assert credential_headers(ROUTE, scheme, proxy, backend) == (headers, cert)


@pytest.mark.parametrize(
    ("scheme", "proxy", "backend", "says"),
    [
        ("http", TOKEN_P, None, "only sent over TLS"),
        ("http", None, TOKEN_B, "only sent over TLS"),
        ("http", CERT, None, "only sent over TLS"),
        ("https", None, CERT, "cannot be passed through the edge"),
        ("https", TOKEN_P, CERT, "cannot be passed through the edge"),
    ],
)
def test_credential_headers_refusals(
    scheme: str, proxy: Credential | None, backend: Credential | None, says: str
) -> None:
    with pytest.raises(CredentialUnavailable, match=says) as info:
        credential_headers(ROUTE, scheme, proxy, backend)
    assert "-tok" not in info.value.reason  # never a token in an error


CONFIG = """
unmapped: {unmapped}
routes:
  - name: a
    suffix: "*.a.internal"
    edge: https://127.0.0.1:8443
    tls: {{server_name: edge.a.test}}
    proxy_auth: edge
    backend_auth: svc
  - name: plain
    suffix: "*.dev.test"
    edge: http://127.0.0.1:8080
  - name: grpc-only
    suffix: "*.g.internal"
    protocol: grpc
    edge: https://edge.g.test:9443
auth_sources:
  edge: {{token: {{value: edge-secret}}}}
  svc: {{token: {{value: svc-secret}}}}
"""


def dialer(unmapped: str = "refuse") -> Dialer:
    return Dialer(parse_dialer_config_text(CONFIG.format(unmapped=unmapped), "t.yaml"))


@pytest.mark.parametrize(
    ("host", "port", "grpc"),
    [
        ("localhost", 80, False),
        ("127.0.0.1", 8080, False),  # IP literals are never mapped
        ("a.internal", 443, False),  # the bare suffix is no match
        ("svc.g.internal", 443, False),  # a gRPC-only route
    ],
)
async def test_unmapped_policy(host: str, port: int, grpc: bool) -> None:
    d = dialer("refuse")
    with pytest.raises(NotMapped) as info:
        await d.plan(host, port, grpc=grpc)
    assert info.value.kind == "unmapped-host"
    assert info.value.http_status == 403
    assert f"{host}:{port}" in info.value.reason and "t.yaml" in info.value.reason
    assert await dialer("direct").plan(host, port, grpc=grpc) is None


async def test_plan_carries_authority_credentials_and_tls_name() -> None:
    d = dialer()
    plan = await d.plan("Web.NS.a.internal", 8080)
    assert isinstance(plan, DialPlan)
    assert plan.authority == "web.ns.a.internal:8080"
    assert plan.edge_origin == "https://127.0.0.1:8443"
    assert plan.tls_server_name == "edge.a.test"
    assert plan.headers == (
        ("proxy-authorization", "Bearer edge-secret"),
        ("authorization", "Bearer svc-secret"),
    )
    assert plan.client_cert is None
    assert plan.ssl_context is not None
    assert plan.ssl_context.check_hostname
    assert "secret" not in repr(plan)
    grpc_plan = await d.plan("svc.g.internal", 50051, grpc=True)
    assert grpc_plan is not None and grpc_plan.headers == ()
    assert grpc_plan.tls_server_name == "edge.g.test"
    await d.aclose()


async def test_tls_contexts_are_cached_per_tls_identity_and_alpn() -> None:
    d = dialer()
    one = await d.plan("x.a.internal", 80)
    two = await d.plan("y.a.internal", 443)
    h1 = await d.plan("x.a.internal", 80, alpn=HTTP1_ALPN)
    other_edge = await d.plan("svc.g.internal", 443, grpc=True)
    assert one is not None and two is not None and h1 is not None and other_edge is not None
    assert one.ssl_context is two.ssl_context  # same edge TLS, same identity
    assert one.ssl_context is not h1.ssl_context  # ALPN differs: h2 would break aiohttp
    assert one.ssl_context is not other_edge.ssl_context  # another tls block
    assert one.edge.tls != other_edge.edge.tls
    edge = one.edge
    with_cert = d.ssl_context(edge, None, H2_ALPN)
    assert with_cert is one.ssl_context


async def test_http_edge_plans_without_tls() -> None:
    plan = await dialer().plan("app.dev.test", 80)
    assert plan is not None
    assert plan.ssl_context is None and plan.tls_server_name is None
    assert plan.headers == ()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("svc.ns.a.internal:50051", ("svc.ns.a.internal", 50051)),
        ("dns:///svc.ns.a.internal:50051", ("svc.ns.a.internal", 50051)),
        ("svc.ns.a.internal", ("svc.ns.a.internal", 443)),
        ("[::1]:8080", ("::1", 8080)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_split_target(target: str, expected: tuple[str, int]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(
    "target", ["", ":50051", "svc:0", "svc:65536", "svc:http", "[::1", "[::1]x", "a/b:1", "svc:"]
)
def test_split_target_refuses(target: str) -> None:
    with pytest.raises(ValueError):
        split_target(target)
