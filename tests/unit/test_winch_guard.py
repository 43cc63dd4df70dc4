"""winch.guard: who may use winch and for what, over heads parsed by the real HTTP/1.1 rules."""

from __future__ import annotations

import base64

import pytest

from kedge.core.codec.h1_request import validate_request
from kedge.core.errors import KedgeError
from kedge.core.http.messages import RequestHead
from winch.guard import Verdict, admit, is_secret_valid

OWN = 8070
SECRET = "s3cret-s3cret-s3cret"
MAPPED = {"svc.ns.cluster-a.internal", "web.cluster-a.internal"}


def head(method: str, target: str, *headers: tuple[str, str]) -> RequestHead:
    hs = [(n.lower().encode(), v.encode()) for n, v in headers]
    return validate_request(
        version="1.1", method=method, target=target.encode(), headers=hs, scheme="http", max_body=0
    ).head


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ALLOWED = [
    # (what, head, verdict, host, port)
    ("PAC over 127.0.0.1", head("GET", "/proxy.pac", ("Host", f"127.0.0.1:{OWN}")), Verdict.LOCAL),
    ("PAC over localhost", head("GET", "/wpad.dat", ("Host", f"localhost:{OWN}")), Verdict.LOCAL),
    ("PAC over [::1]", head("GET", "/wpad.dat", ("Host", f"[::1]:{OWN}")), Verdict.LOCAL),
    (
        "absolute form, mapped",
        head("GET", "http://svc.ns.cluster-a.internal/x", ("Host", "svc.ns.cluster-a.internal")),
        Verdict.PROXY,
    ),
    (
        "absolute form, unmapped (the mapper decides later)",
        head("GET", "http://other.test/", ("Host", "other.test")),
        Verdict.PROXY,
    ),
    (
        "origin form for a mapped name (gRPC :authority path)",
        head("POST", "/pkg.Svc/M", ("Host", "svc.ns.cluster-a.internal:50051")),
        Verdict.PROXY,
    ),
    (
        "CONNECT",
        head("CONNECT", "web.cluster-a.internal:443", ("Host", "web.cluster-a.internal:443")),
        Verdict.PROXY,
    ),
    (
        "same-origin POST (Origin is the service itself)",
        head(
            "POST",
            "http://web.cluster-a.internal/form",
            ("Host", "web.cluster-a.internal"),
            ("Origin", "http://web.cluster-a.internal"),
            ("Sec-Fetch-Site", "same-origin"),
        ),
        Verdict.PROXY,
    ),
    (
        "a typed URL (Sec-Fetch-Site: none)",
        head(
            "GET",
            "http://web.cluster-a.internal/",
            ("Host", "web.cluster-a.internal"),
            ("Sec-Fetch-Site", "none"),
        ),
        Verdict.PROXY,
    ),
]


@pytest.mark.parametrize(("what", "h", "verdict"), ALLOWED, ids=[a[0] for a in ALLOWED])
def test_admitted(what: str, h: RequestHead, verdict: Verdict) -> None:
    got = admit(h, own_port=OWN, is_mapped=MAPPED.__contains__, secret=None)
    assert got.verdict is verdict
    assert (got.host, got.port) == (h.host, h.port)


REFUSED = [
    # (what, head, kind, status)
    (
        "DNS rebinding: a page's name resolving to 127.0.0.1",
        head("GET", "/", ("Host", f"evil.test:{OWN}")),
        "host-not-allowed",
    ),
    (
        "loopback Host naming another port",
        head("GET", "/proxy.pac", ("Host", "127.0.0.1:9")),
        "host-not-allowed",
    ),
    (
        "a cross-site page's fetch",
        head(
            "POST",
            "http://web.cluster-a.internal/delete",
            ("Host", "web.cluster-a.internal"),
            ("Sec-Fetch-Site", "cross-site"),
        ),
        "cross-site-refused",
    ),
    (
        "a same-site (other subdomain) page's fetch",
        head(
            "GET",
            "http://svc.ns.cluster-a.internal/",
            ("Host", "svc.ns.cluster-a.internal"),
            ("Sec-Fetch-Site", "same-site"),
        ),
        "cross-site-refused",
    ),
    (
        "Origin of another site (old browsers without Fetch Metadata)",
        head(
            "POST",
            "http://web.cluster-a.internal/x",
            ("Host", "web.cluster-a.internal"),
            ("Origin", "http://evil.test"),
        ),
        "cross-site-refused",
    ),
    (
        "Origin null (sandboxed frame, file://)",
        head(
            "POST",
            "http://web.cluster-a.internal/x",
            ("Host", "web.cluster-a.internal"),
            ("Origin", "null"),
        ),
        "cross-site-refused",
    ),
    (
        "Origin with the same host on another port",
        head(
            "POST",
            "http://web.cluster-a.internal/x",
            ("Host", "web.cluster-a.internal"),
            ("Origin", "http://web.cluster-a.internal:8080"),
        ),
        "cross-site-refused",
    ),
    (
        "a CORS preflight",
        head(
            "OPTIONS",
            "http://web.cluster-a.internal/x",
            ("Host", "web.cluster-a.internal"),
            ("Access-Control-Request-Method", "DELETE"),
        ),
        "cross-site-refused",
    ),
]


@pytest.mark.parametrize(("what", "h", "kind"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(what: str, h: RequestHead, kind: str) -> None:
    with pytest.raises(KedgeError) as info:
        admit(h, own_port=OWN, is_mapped=MAPPED.__contains__, secret=None)
    assert info.value.kind == kind
    assert info.value.http_status == 403


SECRETS = [
    (None, False),
    (basic("me", SECRET), True),
    (basic("", SECRET), True),
    (basic("me", SECRET + "x"), False),
    (basic("me", SECRET[:-1]), False),
    (f"Bearer {SECRET}", True),
    (f"bearer {SECRET}", True),
    (f"Bearer {SECRET} extra", False),
    ("Basic !!!not-base64", False),
    (f"Digest {SECRET}", False),
    ("Basic " + base64.b64encode(SECRET.encode()).decode(), False),  # no colon: no password
]


@pytest.mark.parametrize(("value", "ok"), SECRETS)
def test_secret(value: str | None, ok: bool) -> None:
    assert is_secret_valid(value.encode() if value else None, SECRET) is ok


def test_secret_required_for_proxying_not_for_the_pac() -> None:
    proxied = head("GET", "http://web.cluster-a.internal/", ("Host", "web.cluster-a.internal"))
    with pytest.raises(KedgeError) as info:
        admit(proxied, own_port=OWN, is_mapped=MAPPED.__contains__, secret=SECRET)
    assert info.value.http_status == 407
    assert info.value.kind == "winch-secret-required"
    assert (b"proxy-authenticate", b'Basic realm="winch"') in info.value.response_headers
    pac = head("GET", "/proxy.pac", ("Host", f"127.0.0.1:{OWN}"))
    assert admit(pac, own_port=OWN, is_mapped=MAPPED.__contains__, secret=SECRET).verdict is (
        Verdict.LOCAL
    )
    ok = head(
        "GET",
        "http://web.cluster-a.internal/",
        ("Host", "web.cluster-a.internal"),
        ("Proxy-Authorization", basic("me", SECRET)),
    )
    assert admit(ok, own_port=OWN, is_mapped=MAPPED.__contains__, secret=SECRET).verdict is (
        Verdict.PROXY
    )
