"""Tests for kedge.edge.auth.credentials: finding the edge's bearer token, challenges, stripping."""

from __future__ import annotations

import pytest

from kedge.core.errors import BadRequest, CredentialTooLarge, KedgeError, Unauthenticated
from kedge.core.http.messages import Headers
from kedge.edge.auth.credentials import Credential, challenge, find_credential, strip_headers
from kedge.edge.config import CredentialSource

PROXY = CredentialSource.PROXY_AUTHORIZATION
AUTHZ = CredentialSource.AUTHORIZATION
PROXY_ONLY = (PROXY,)
BOTH = (PROXY, AUTHZ)
AUTHZ_FIRST = (AUTHZ, PROXY)
AUTHZ_ONLY = (AUTHZ,)
MAX = 64


def _ours(token: str) -> bool:
    """The fake issuer check: tokens starting with "edge" are addressed to the edge."""
    return token.startswith("edge")


def _h(*pairs: tuple[str, str]) -> Headers:
    return [(n.encode(), v.encode()) for n, v in pairs]


def _pa(value: str) -> tuple[str, str]:
    return ("proxy-authorization", value)


def _az(value: str) -> tuple[str, str]:
    return ("authorization", value)


FOUND: list[tuple[str, Headers, tuple[CredentialSource, ...], Credential | None]] = [
    ("nothing", _h(("accept", "*/*")), BOTH, None),
    ("proxy bearer", _h(_pa("Bearer edge.t.s")), PROXY_ONLY, Credential("edge.t.s", PROXY)),
    (
        "proxy: any token, not only ours",
        _h(_pa("Bearer opaque")),
        PROXY_ONLY,
        Credential("opaque", PROXY),
    ),
    ("scheme lower case", _h(_pa("bearer edge1")), PROXY_ONLY, Credential("edge1", PROXY)),
    ("scheme upper case", _h(_pa("BEARER edge1")), PROXY_ONLY, Credential("edge1", PROXY)),
    ("scheme mixed case", _h(_pa("bEaReR edge1")), PROXY_ONLY, Credential("edge1", PROXY)),
    ("several spaces", _h(_pa("Bearer   edge1")), PROXY_ONLY, Credential("edge1", PROXY)),
    ("trailing spaces", _h(_pa("Bearer edge1  ")), PROXY_ONLY, Credential("edge1", PROXY)),
    (
        "b64token characters",
        _h(_pa("Bearer a-._~+/Z09")),
        PROXY_ONLY,
        Credential("a-._~+/Z09", PROXY),
    ),
    ("trailing = padding", _h(_pa("Bearer abc==")), PROXY_ONLY, Credential("abc==", PROXY)),
    (
        "token of exactly max bytes",
        _h(_pa("Bearer " + "e" * MAX)),
        PROXY_ONLY,
        Credential("e" * MAX, PROXY),
    ),
    (
        "listener without authorization ignores it",
        _h(_az("Bearer edge1")),
        PROXY_ONLY,
        None,
    ),
    ("listener without proxy ignores it", _h(_pa("Bearer edge1")), AUTHZ_ONLY, None),
    ("authorization with our token", _h(_az("Bearer edge2")), BOTH, Credential("edge2", AUTHZ)),
    ("authorization, lower-case scheme", _h(_az("bearer edge2")), BOTH, Credential("edge2", AUTHZ)),
    ("authorization, backend's token", _h(_az("Bearer backend-secret")), BOTH, None),
    ("authorization, Basic", _h(_az("Basic ZWRnZTpwdw==")), BOTH, None),
    ("authorization, malformed bearer", _h(_az("Bearer edge a")), BOTH, None),
    ("authorization, empty", _h(_az("")), BOTH, None),
    (
        "two authorizations, none ours",
        _h(_az("Bearer backend"), _az("Basic eDp5")),
        BOTH,
        None,
    ),
    (
        "proxy first: proxy wins",
        _h(_az("Bearer edge-a"), _pa("Bearer edge-p")),
        BOTH,
        Credential("edge-p", PROXY),
    ),
    (
        "authorization first: authorization wins",
        _h(_pa("Bearer edge-p"), _az("Bearer edge-a")),
        AUTHZ_FIRST,
        Credential("edge-a", AUTHZ),
    ),
    (
        "authorization first, not ours: falls to proxy",
        _h(_pa("Bearer edge-p"), _az("Bearer backend")),
        AUTHZ_FIRST,
        Credential("edge-p", PROXY),
    ),
    (
        "proxy with a backend authorization alongside",
        _h(_pa("Bearer edge-p"), _az("Bearer edge-a-looks-ours")),
        PROXY_ONLY,
        Credential("edge-p", PROXY),
    ),
    (
        "header names are compared lower-case",
        [(b"Proxy-Authorization", b"Bearer edge1")],
        BOTH,
        None,
    ),
]


@pytest.mark.parametrize(
    ("headers", "sources", "expected"), [c[1:] for c in FOUND], ids=[c[0] for c in FOUND]
)
def test_find_credential(
    headers: Headers, sources: tuple[CredentialSource, ...], expected: Credential | None
) -> None:
    assert find_credential(headers, sources, _ours, MAX) == expected


PROXY_CHALLENGE = (b"proxy-authenticate", b'Bearer realm="kedge"')
WWW_CHALLENGE = (b"www-authenticate", b'Bearer realm="kedge"')

REFUSED: list[tuple[str, Headers, tuple[CredentialSource, ...], type[KedgeError], str, object]] = [
    # (id, headers, sources, error type, reason substring, challenge or None)
    (
        "proxy Basic",
        _h(_pa("Basic ZWRnZTpwdw==")),
        BOTH,
        Unauthenticated,
        "proxy-authorization is not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy scheme only",
        _h(_pa("Bearer")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy scheme and space",
        _h(_pa("Bearer ")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy two tokens",
        _h(_pa("Bearer a b")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy comma list",
        _h(_pa("Bearer a, Bearer b")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy leading space",
        _h(_pa(" Bearer a")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy tab separator",
        _h(_pa("Bearer\tedge1")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy no space",
        _h(_pa("Beareredge1")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy = inside",
        _h(_pa("Bearer ab=c")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "proxy quoted token",
        _h(_pa('Bearer "edge1"')),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    ("proxy empty", _h(_pa("")), BOTH, Unauthenticated, "not one Bearer", PROXY_CHALLENGE),
    (
        "proxy DPoP scheme",
        _h(_pa("DPoP edge1")),
        BOTH,
        Unauthenticated,
        "not one Bearer",
        PROXY_CHALLENGE,
    ),
    (
        "two proxy-authorization headers",
        _h(_pa("Bearer edge1"), _pa("Bearer edge2")),
        BOTH,
        BadRequest,
        "more than one Proxy-Authorization",
        None,
    ),
    (
        "two proxy-authorization, one malformed",
        _h(_pa("Bearer edge1"), _pa("Basic eDp5")),
        BOTH,
        BadRequest,
        "more than one Proxy-Authorization",
        None,
    ),
    (
        "two authorizations, one ours",
        _h(_az("Bearer backend"), _az("Bearer edge1")),
        BOTH,
        BadRequest,
        "more than one Authorization",
        None,
    ),
    (
        "two authorizations, both ours",
        _h(_az("Bearer edge1"), _az("Bearer edge2")),
        AUTHZ_ONLY,
        BadRequest,
        "more than one Authorization",
        None,
    ),
    (
        "proxy token one byte over",
        _h(_pa("Bearer " + "e" * (MAX + 1))),
        BOTH,
        CredentialTooLarge,
        f"larger than {MAX} bytes",
        None,
    ),
    (
        "proxy 1 MB token",
        _h(_pa("Bearer " + "e" * 1_000_000)),
        BOTH,
        CredentialTooLarge,
        "larger",
        None,
    ),
    (
        "proxy oversized garbage",
        _h(_pa("Basic " + "x" * 1000)),
        BOTH,
        CredentialTooLarge,
        "larger",
        None,
    ),
    (
        "authorization, ours, over",
        _h(_az("Bearer edge" + "e" * MAX)),
        BOTH,
        CredentialTooLarge,
        "larger",
        None,
    ),
]


@pytest.mark.parametrize(
    ("headers", "sources", "error", "reason", "expected_challenge"),
    [c[1:] for c in REFUSED],
    ids=[c[0] for c in REFUSED],
)
def test_find_credential_refuses(
    headers: Headers,
    sources: tuple[CredentialSource, ...],
    error: type[KedgeError],
    reason: str,
    expected_challenge: object,
) -> None:
    with pytest.raises(error) as info:
        find_credential(headers, sources, _ours, MAX)
    assert type(info.value) is error
    assert reason in info.value.reason
    assert info.value.response_headers == (
        () if expected_challenge is None else (expected_challenge,)
    )


def test_find_credential_checks_the_size_before_asking_the_issuer() -> None:
    asked: list[str] = []

    def addressed(token: str) -> bool:
        asked.append(token)
        return True

    with pytest.raises(CredentialTooLarge):
        find_credential(_h(_pa("Bearer " + "e" * (MAX + 1))), BOTH, addressed, MAX)
    assert asked == []


# --- challenge --------------------------------------------------------------------------------

CHALLENGES: list[tuple[str, CredentialSource, str | None, tuple[bytes, bytes]]] = [
    ("proxy, no error", PROXY, None, PROXY_CHALLENGE),
    ("authorization, no error", AUTHZ, None, WWW_CHALLENGE),
    (
        "proxy, invalid token",
        PROXY,
        "the token has expired",
        (
            b"proxy-authenticate",
            b'Bearer realm="kedge", error="invalid_token", '
            b'error_description="the token has expired"',
        ),
    ),
    (
        "authorization, invalid token",
        AUTHZ,
        "wrong issuer",
        (
            b"www-authenticate",
            b'Bearer realm="kedge", error="invalid_token", error_description="wrong issuer"',
        ),
    ),
    (
        "quotes and backslashes removed",
        PROXY,
        'kid "a\\b" unknown',
        (
            b"proxy-authenticate",
            b'Bearer realm="kedge", error="invalid_token", error_description="kid ab unknown"',
        ),
    ),
    (
        "CR, LF and non-ASCII removed",
        AUTHZ,
        "bad\r\nx-injected: 1 é",
        (
            b"www-authenticate",
            b'Bearer realm="kedge", error="invalid_token", error_description="badx-injected: 1 "',
        ),
    ),
    (
        "long description cut at 200",
        AUTHZ,
        "x" * 500,
        (
            b"www-authenticate",
            b'Bearer realm="kedge", error="invalid_token", error_description="' + b"x" * 200 + b'"',
        ),
    ),
    (
        "empty description",
        PROXY,
        "",
        (
            b"proxy-authenticate",
            b'Bearer realm="kedge", error="invalid_token", error_description=""',
        ),
    ),
]


@pytest.mark.parametrize(
    ("source", "error", "expected"), [c[1:] for c in CHALLENGES], ids=[c[0] for c in CHALLENGES]
)
def test_challenge(
    source: CredentialSource, error: str | None, expected: tuple[bytes, bytes]
) -> None:
    assert challenge(source, error) == expected


# --- strip_headers ------------------------------------------------------------------------------

STRIP: list[tuple[str, Headers, frozenset[bytes], bool, Headers]] = [
    (
        "nothing to strip",
        _h(("accept", "*/*"), _az("Bearer b")),
        frozenset(),
        False,
        _h(("accept", "*/*"), _az("Bearer b")),
    ),
    (
        "configured headers, every copy",
        _h(("x-user", "root"), ("accept", "*/*"), ("x-user", "admin"), ("x-kedge-id", "me")),
        frozenset({b"x-user", b"x-kedge-id"}),
        False,
        _h(("accept", "*/*")),
    ),
    (
        "authorization kept when it was not the edge's",
        _h(_az("Bearer backend"), ("x-a", "1")),
        frozenset({b"x-a"}),
        False,
        _h(_az("Bearer backend")),
    ),
    (
        "authorization dropped when it carried the edge's token",
        _h(_az("Bearer edge1"), ("accept", "*/*")),
        frozenset(),
        True,
        _h(("accept", "*/*")),
    ),
    (
        "order of the rest kept",
        _h(("b", "1"), ("x-user", "u"), ("a", "2"), ("b", "3")),
        frozenset({b"x-user"}),
        False,
        _h(("b", "1"), ("a", "2"), ("b", "3")),
    ),
    (
        "values are not looked at",
        _h(("x-other", "x-user")),
        frozenset({b"x-user"}),
        False,
        _h(("x-other", "x-user")),
    ),
    (
        "proxy-authorization is not this function's job",
        _h(_pa("Bearer edge1")),
        frozenset(),
        True,
        _h(_pa("Bearer edge1")),
    ),
]


@pytest.mark.parametrize(
    ("headers", "strip", "drop", "expected"), [c[1:] for c in STRIP], ids=[c[0] for c in STRIP]
)
def test_strip_headers(
    headers: Headers, strip: frozenset[bytes], drop: bool, expected: Headers
) -> None:
    before = list(headers)
    assert strip_headers(headers, strip, drop) == expected
    assert headers == before  # a new list: the caller decides what to replace
