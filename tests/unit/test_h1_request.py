"""validate_request: the request-head checks llhttp leaves to the edge (pure, table-driven)."""

from __future__ import annotations

import pytest

from kedge.core.codec.h1_request import validate_request
from kedge.core.errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    KedgeError,
    NotImplementedByEdge,
    VersionNotSupported,
)
from kedge.core.http.messages import Headers

H: Headers = [(b"host", b"app.test")]


def check(
    headers: Headers = H,
    *,
    version: str = "1.1",
    method: str = "GET",
    target: bytes = b"/",
    scheme: str = "http",
    max_body: int = 0,
):  # type: ignore[no-untyped-def]
    return validate_request(
        version=version,
        method=method,
        target=target,
        headers=headers,
        scheme=scheme,
        max_body=max_body,
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"version": "0.9"}, BadRequest),
        ({"version": "2.0"}, VersionNotSupported),
        ({"headers": []}, BadRequest),  # missing Host
        ({"headers": [*H, (b"host", b"b.test")]}, BadRequest),  # two Hosts
        ({"headers": [*H, (b"transfer-encoding", b"chunked")], "version": "1.0"}, BadRequest),
        ({"headers": [*H, (b"transfer-encoding", b"gzip, chunked")]}, NotImplementedByEdge),
        ({"headers": [*H, (b"transfer-encoding", b"chunked, gzip")]}, BadRequest),
        ({"method": "CONNECT", "target": b"app.test"}, BadRequest),  # no port (test_connect_*)
        ({"target": b"*", "method": "OPTIONS"}, BadRequest),
        ({"target": b"http://other.test/"}, BadRequest),  # absolute-form differs from Host
        ({"target": b"/a/%2F/b"}, BadRequest),
        ({"target": b"/../x"}, BadRequest),
        ({"headers": [(b"host", b"user@app.test")]}, BadRequest),
        ({"headers": [*H, (b"content-length", b"11")], "max_body": 10}, BodyTooLarge),
        ({"headers": [*H, (b"expect", b"something-else")]}, ExpectationFailed),
        (
            {
                "headers": [
                    *H,
                    (b"connection", b"upgrade"),
                    (b"upgrade", b"websocket"),
                    (b"content-length", b"3"),
                ]
            },
            BadRequest,
        ),
    ],
)
def test_refused(kwargs: dict[str, object], error: type[KedgeError]) -> None:
    with pytest.raises(error):
        check(**kwargs)  # type: ignore[arg-type]


def test_origin_form_is_canonical() -> None:
    v = check([(b"host", b"App.Test.:8080")], target=b"/a/./b/%7Euser?q=%2F")
    h = v.head
    assert (h.host, h.port, h.path, h.query) == ("app.test", 8080, "/a/b/~user", "q=%2F")
    assert h.explicit_port and not h.absolute_form and v.keep_alive and not v.has_body


def test_absolute_form_takes_its_authority() -> None:
    v = check([(b"host", b"app.test")], target=b"http://app.test/x")
    assert v.head.absolute_form and v.head.host == "app.test" and v.head.port == 80
    assert not v.head.explicit_port


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", None, True),
        ("1.1", b"close", False),
        ("1.0", None, False),
        ("1.0", b"keep-alive", True),
        ("1.0", b"keep-alive, close", False),
    ],
)
def test_keep_alive(version: str, connection: bytes | None, keep_alive: bool) -> None:
    headers = H + ([(b"connection", connection)] if connection else [])
    assert check(headers, version=version).keep_alive is keep_alive


def test_request_id_kept_only_when_valid() -> None:
    assert check([*H, (b"x-request-id", b"abc-1")]).request_id == b"abc-1"
    assert check([*H, (b"x-request-id", b"bad id")]).request_id is None


def test_upgrades() -> None:
    ws = [*H, (b"connection", b"Upgrade"), (b"upgrade", b"WebSocket")]
    assert check(ws).upgrade == b"websocket"
    assert check(ws, method="POST").upgrade is None
    h2c = [*H, (b"connection", b"Upgrade, HTTP2-Settings"), (b"upgrade", b"h2c")]
    assert check(h2c).upgrade is None  # never passed through


def test_body_and_expect() -> None:
    v = check([*H, (b"content-length", b"5"), (b"expect", b"100-continue")], max_body=5)
    assert v.has_body and v.expect_continue
    assert check([*H, (b"content-length", b"0")]).has_body is False
    assert check([*H, (b"transfer-encoding", b"chunked")]).has_body is True
