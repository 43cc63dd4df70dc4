"""Header rewriting for forwarded messages: hop-by-hop removal and the edge's own headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedge.core.http.headers import (
    HOP_BY_HOP,
    RequestIdGenerator,
    connection_tokens,
    forward_request_headers,
    forward_response_headers,
    is_valid_request_id,
)
from kedge.core.http.messages import Headers


def fwd(headers: Headers, **kw: object) -> dict[bytes, list[bytes]]:
    args: dict[str, object] = dict(
        client_ip="10.0.0.7", proto="http", authority="app.test", request_id=b"rid-1"
    )
    args.update(kw)
    out = forward_request_headers(headers, **args)  # type: ignore[arg-type]
    result: dict[bytes, list[bytes]] = {}
    for n, v in out:
        result.setdefault(n, []).append(v)
    return result


@pytest.mark.parametrize(
    ("incoming", "name", "expected"),
    [
        ([], b"x-forwarded-for", [b"10.0.0.7"]),
        ([(b"x-forwarded-for", b"1.1.1.1")], b"x-forwarded-for", [b"1.1.1.1, 10.0.0.7"]),
        (
            [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")],
            b"x-forwarded-for",
            [b"1.1.1.1, 2.2.2.2, 10.0.0.7"],
        ),
        ([(b"x-forwarded-proto", b"https")], b"x-forwarded-proto", [b"http"]),
        ([(b"x-forwarded-host", b"evil.test")], b"x-forwarded-host", [b"app.test"]),
        ([], b"forwarded", [b"for=10.0.0.7;proto=http;host=app.test"]),
        (
            [(b"forwarded", b"for=1.1.1.1")],
            b"forwarded",
            [b"for=1.1.1.1, for=10.0.0.7;proto=http;host=app.test"],
        ),
        ([(b"via", b"1.0 other")], b"via", [b"1.0 other, 1.1 kedge"]),
        ([(b"x-request-id", b"client-given")], b"x-request-id", [b"rid-1"]),
        ([(b"host", b"other.test")], b"host", []),  # the forwarder writes Host itself
        ([(b"expect", b"100-continue")], b"expect", []),
    ],
)
def test_edge_headers(incoming: Headers, name: bytes, expected: list[bytes]) -> None:
    assert fwd(incoming).get(name, []) == expected


def test_forwarded_quotes_ipv6_and_ports() -> None:
    out = fwd([], client_ip="2001:db8::1", authority="app.test:8080")
    assert out[b"forwarded"] == [b'for="[2001:db8::1]";proto=http;host="app.test:8080"']


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_hop_by_hop_never_forwarded(name: bytes) -> None:
    out = fwd([(name, b"x"), (b"accept", b"*/*")])
    assert name not in out
    assert out[b"accept"] == [b"*/*"]


def test_connection_nominations_remove_client_headers_only() -> None:
    incoming: Headers = [
        (b"connection", b"close, X-Forwarded-For, Via, X-Request-Id, X-Custom"),
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-custom", b"gone"),
        (b"x-kept", b"kept"),
    ]
    out = fwd(incoming)
    # The client's XFF was nominated, so it is dropped; the edge's own value is still added.
    assert out[b"x-forwarded-for"] == [b"10.0.0.7"]
    assert out[b"via"] == [b"1.1 kedge"]
    assert out[b"x-request-id"] == [b"rid-1"]
    assert b"x-custom" not in out
    assert out[b"x-kept"] == [b"kept"]


@pytest.mark.parametrize("protected", [b"host", b"content-length", b"authorization", b"cookie"])
def test_protected_names_cannot_be_nominated(protected: bytes) -> None:
    incoming: Headers = [(b"connection", protected), (protected, b"v")]
    out = fwd(incoming)
    if protected == b"host":
        assert b"host" not in out  # Host is always rewritten by the forwarder, never dropped
    else:
        assert out[protected] == [b"v"]


def test_spoofed_identity_headers_are_stripped() -> None:
    out = fwd([(b"x-kedge-principal", b"admin"), (b"x_forwarded_client_cert", b"x")])
    assert b"x-kedge-principal" not in out and b"x_forwarded_client_cert" not in out


def test_websocket_upgrade_kept_only_when_passing_through() -> None:
    incoming: Headers = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket")]
    assert b"upgrade" not in fwd(incoming)
    out = fwd(incoming, upgrade=b"websocket")
    assert out[b"upgrade"] == [b"websocket"] and out[b"connection"] == [b"upgrade"]


def test_response_headers() -> None:
    incoming: Headers = [
        (b"connection", b"keep-alive, x-internal"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"x-internal", b"secret"),
        (b"x-request-id", b"backend-id"),
        (b"content-type", b"text/plain"),
    ]
    out = forward_response_headers(incoming, request_id=b"rid-1")
    names = [n for n, _ in out]
    assert b"keep-alive" not in names and b"transfer-encoding" not in names
    assert b"x-internal" not in names and b"connection" not in names
    assert (b"x-request-id", b"rid-1") in out and (b"x-request-id", b"backend-id") not in out
    assert (b"content-type", b"text/plain") in out
    assert (b"via", b"1.1 kedge") in out


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"abc-123", True),
        (b"0f9a8b7c-1d2e-4f30-8a9b-0c1d2e3f4a5b", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"", False),
        (b"has space", False),
        (b"semi;colon", False),
        (b"new\nline", False),
    ],
)
def test_request_id_validation(value: bytes, ok: bool) -> None:
    assert is_valid_request_id(value) is ok


def test_generated_request_ids_are_unique_and_valid() -> None:
    gen = RequestIdGenerator()
    ids = [gen.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(is_valid_request_id(i) for i in ids)
    other = RequestIdGenerator()
    assert other.next() != RequestIdGenerator().next()


def test_connection_tokens() -> None:
    hs: Headers = [(b"connection", b" Close ,X-A,, x-b "), (b"connection", b"X-C")]
    assert connection_tokens(hs) == frozenset({b"close", b"x-a", b"x-b", b"x-c"})


_name = st.sampled_from(
    [b"x-a", b"x-forwarded-for", b"via", b"connection", b"te", b"upgrade", b"accept", b"forwarded"]
)
_value = st.sampled_from([b"x", b"x-a", b"close", b"x-forwarded-for, via", b"1.1.1.1"])


@given(st.lists(st.tuples(_name, _value), max_size=12))
def test_edge_headers_always_present_once(headers: Headers) -> None:
    out = fwd(headers)
    for name in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"):
        assert len(out[name]) == 1
    assert out[b"x-forwarded-for"][0].endswith(b"10.0.0.7")
    assert not any(n in HOP_BY_HOP for n in out)
