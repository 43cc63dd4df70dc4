"""winch.request_fields: what winch sends an edge, for requests parsed by the real rules."""

from __future__ import annotations

from kedge.core.codec.h1_request import validate_request
from kedge.core.http.messages import Headers, RequestHead
from winch.request_fields import Injected, edge_request_fields

RID = b"winch-abc-1"


def head(target: str, *headers: tuple[str, str], method: str = "GET") -> RequestHead:
    hs = [(n.lower().encode(), v.encode()) for n, v in headers]
    return validate_request(
        version="1.1", method=method, target=target.encode(), headers=hs, scheme="http", max_body=0
    ).head


def names(fields: Headers) -> list[bytes]:
    return [n for n, _ in fields]


def values(fields: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in fields if n == name]


def test_pseudo_headers_first_and_the_service_authority() -> None:
    h = head(
        "http://svc.ns.cluster-a.internal:8080/a/b?q=1", ("Host", "svc.ns.cluster-a.internal:8080")
    )
    f = edge_request_fields(h, grpc=False, request_id=RID, injected=Injected())
    assert f[:4] == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"svc.ns.cluster-a.internal:8080"),
        (b":path", b"/a/b?q=1"),
    ]
    assert b"host" not in names(f)
    assert values(f, b"x-request-id") == [RID]
    assert values(f, b"via") == [b"1.1 winch"]


def test_hop_by_hop_and_nominated_fields_are_dropped() -> None:
    h = head(
        "http://web.cluster-a.internal/",
        ("Host", "web.cluster-a.internal"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic d2luY2g6c2VjcmV0"),
        ("X-Secret-Hop", "1"),
        ("TE", "gzip"),
        ("X-Request-Id", "client-chosen"),
        ("Accept", "text/html"),
    )
    f = edge_request_fields(h, grpc=False, request_id=RID, injected=Injected())
    for gone in (b"connection", b"keep-alive", b"proxy-connection", b"x-secret-hop", b"te"):
        assert gone not in names(f), gone
    assert values(f, b"proxy-authorization") == []  # winch's own secret never travels on
    assert values(f, b"x-request-id") == [RID]
    assert values(f, b"accept") == [b"text/html"]


def test_injected_credentials_replace_the_clients_and_survive_nomination() -> None:
    h = head(
        "http://web.cluster-a.internal/",
        ("Host", "web.cluster-a.internal"),
        ("Authorization", "Bearer client-own"),
        ("Connection", "Authorization"),  # hardening X6: must not remove the injected one
    )
    f = edge_request_fields(
        h,
        grpc=False,
        request_id=RID,
        injected=Injected(
            proxy_authorization="Bearer edge-token", authorization="Bearer service-token"
        ),
    )
    assert values(f, b"authorization") == [b"Bearer service-token"]
    assert values(f, b"proxy-authorization") == [b"Bearer edge-token"]


def test_client_authorization_passes_when_the_route_injects_none() -> None:
    h = head(
        "http://web.cluster-a.internal/",
        ("Host", "web.cluster-a.internal"),
        ("Authorization", "Bearer client-own"),
    )
    f = edge_request_fields(h, grpc=False, request_id=RID, injected=Injected())
    assert values(f, b"authorization") == [b"Bearer client-own"]


def test_grpc_and_trailers_get_te_and_the_debug_tag_rides_along() -> None:
    h = head("/pkg.Svc/M", ("Host", "svc.ns.cluster-a.internal:50051"), method="POST")
    f = edge_request_fields(h, grpc=True, request_id=RID, injected=Injected(debug_tag="winch-me"))
    assert values(f, b"te") == [b"trailers"]
    assert values(f, b"x-kedge-debug") == [b"winch-me"]
    h = head("http://a.internal/", ("Host", "a.internal"), ("TE", "trailers"))
    f = edge_request_fields(h, grpc=False, request_id=RID, injected=Injected())
    assert values(f, b"te") == [b"trailers"]


def test_via_is_appended_to() -> None:
    h = head("http://a.internal/", ("Host", "a.internal"), ("Via", "1.1 corp-proxy"))
    f = edge_request_fields(h, grpc=False, request_id=RID, injected=Injected())
    assert values(f, b"via") == [b"1.1 corp-proxy, 1.1 winch"]
