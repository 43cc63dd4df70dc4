"""validate_h2_request: the HTTP/2 request checks python-hyper h2 leaves to the edge."""

from __future__ import annotations

import pytest

from kedge.core.codec.h2_request import validate_h2_request
from kedge.core.errors import BadRequest, BodyTooLarge, KedgeError

Fields = list[tuple[bytes, bytes]]


def head(path: bytes = b"/", authority: bytes = b"edge.test", method: bytes = b"GET") -> Fields:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", authority),
            (b":path", path)]  # fmt: skip


def check(fields: Fields, *, end: bool = True, scheme: str = "https", max_body: int = 0):  # type: ignore[no-untyped-def]
    return validate_h2_request(fields, scheme=scheme, end_stream=end, max_body=max_body)


GOOD = [
    (head(), "edge.test", 443, False, "/", ""),
    (head(b"/a/./b/../c?x=1"), "edge.test", 443, False, "/a/c", "x=1"),
    (head(authority=b"EDGE.test:8443"), "edge.test", 8443, True, "/", ""),
    (head(authority=b"[::1]:9"), "::1", 9, True, "/", ""),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h.test")],
     "h.test", 443, False, "/", ""),  # Host instead of :authority (RFC 9113 §8.3.1)
]  # fmt: skip


@pytest.mark.parametrize(("fields", "host", "port", "explicit", "path", "query"), GOOD)
def test_valid_heads(
    fields: Fields, host: str, port: int, explicit: bool, path: str, query: str
) -> None:
    valid = check(fields)
    h = valid.head
    assert (h.host, h.port, h.explicit_port, h.path, h.query) == (host, port, explicit, path, query)
    assert h.version == "2" and not h.absolute_form
    assert all(not name.startswith(b":") and name != b"host" for name, _ in h.headers)


BAD: list[tuple[str, Fields, type[KedgeError]]] = [
    ("no slash", head(b"hello"), BadRequest),
    ("asterisk", head(b"*", method=b"OPTIONS"), BadRequest),
    ("bad scheme", [(b":method", b"GET"), (b":scheme", b"ftp"), (b":authority", b"a.test"),
                    (b":path", b"/")], BadRequest),
    ("method token", head(method=b"G T"), BadRequest),
    ("connect without a port", [(b":method", b"CONNECT"), (b":authority", b"a.test")],
     BadRequest),
    ("connect without an authority", [(b":method", b"CONNECT")], BadRequest),
    ("connect with a body length", [(b":method", b"CONNECT"), (b":authority", b"a.test:443"),
                                    (b"content-length", b"0")], BadRequest),
    ("userinfo", head(authority=b"u@a.test"), BadRequest),
    ("encoded slash", head(b"/a%2fb"), BadRequest),
    ("above root", head(b"/../x"), BadRequest),
    ("protocol pseudo", [*head(), (b":protocol", b"websocket")], BadRequest),
    ("two content-types", [*head(), (b"content-type", b"application/grpc"),
                           (b"content-type", b"text/plain")], BadRequest),
    ("bad content-length", [*head(), (b"content-length", b"1x")], BadRequest),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "error"), BAD, ids=[b[0] for b in BAD])
def test_refused_heads(name: str, fields: Fields, error: type[KedgeError]) -> None:
    with pytest.raises(error):
        check(fields, end=False)


def test_body_limits() -> None:
    fields = [*head(method=b"POST"), (b"content-length", b"100")]
    with pytest.raises(BodyTooLarge):
        check(fields, end=False, max_body=99)
    assert check(fields, end=False, max_body=100).head.method == "POST"
    with pytest.raises(BadRequest):  # END_STREAM on HEADERS, but a body was announced
        check(fields, end=True)


@pytest.mark.parametrize(
    ("content_type", "grpc"),
    [
        (b"application/grpc", True),
        (b"application/grpc+proto", True),
        (b"application/grpc;charset=utf-8", True),
        (b"application/grpc-web", False),
        (b"application/grpcx", False),
        (b"text/plain", False),
    ],
)
def test_grpc_detection(content_type: bytes, grpc: bool) -> None:
    assert check([*head(), (b"content-type", content_type)]).grpc is grpc


def test_cookies_are_joined_and_request_id_kept() -> None:
    fields = [*head(), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-request-id", b"r-1")]
    valid = check(fields)
    assert (b"cookie", b"a=1; b=2") in valid.head.headers
    assert valid.request_id == b"r-1"
    assert check([*head(), (b"x-request-id", b"bad id!")]).request_id is None


def test_connect_names_the_tunnels_far_end() -> None:
    """RFC 9113 §8.5: :method CONNECT and :authority only; the head carries host and port."""
    v = validate_h2_request(
        [(b":method", b"CONNECT"), (b":authority", b"Svc.NS.test:8443"), (b"x-a", b"1")],
        end_stream=False,
        scheme="https",
        max_body=0,
    )
    h = v.head
    assert (h.method, h.host, h.port, h.path) == ("CONNECT", "svc.ns.test", 8443, "")
    assert h.headers == [(b"x-a", b"1")]
    assert not v.grpc
