"""Tests for kedge.edge.auth.jwk (JWKS parsing, signature checks) and jwt_token (parsing, claims).

Tokens and keys are made here with `cryptography`, byte by byte, so hostile shapes (padding,
duplicate members, wrong signature encodings) can be written exactly.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kedge.edge.auth.jwk import KeySet, KeySetError, b64url_decode, parse_key_set
from kedge.edge.auth.jwt_token import (
    TokenRejected,
    audience_matches,
    check_claims,
    claim_strings,
    parse_token,
    peek_issuer,
)
from kedge.edge.config import IssuerConfig

NOW = 1_700_000_000.0
ISSUER = IssuerConfig("corp", "https://idp.test", ("kedge", "other"))
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


# --- keys, JWKs and tokens made by the test ---------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _seg(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _uint(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big"))


@functools.cache
def _key(kind: str) -> PrivateKey:
    """One private key per kind for the whole module (RSA generation is slow)."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    curves: dict[str, ec.EllipticCurve] = {
        "p256": ec.SECP256R1(),
        "p384": ec.SECP384R1(),
        "p521": ec.SECP521R1(),
        "k256": ec.SECP256K1(),
    }
    if kind in curves:
        return ec.generate_private_key(curves[kind])
    return (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ed448.Ed448PrivateKey.generate()
    )


_CRV = {"p256": "P-256", "p384": "P-384", "p521": "P-521", "k256": "secp256k1"}
_EC_SIZE = {"p256": 32, "p384": 48, "p521": 66}


def _jwk(kind: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of `_key(kind)` plus `extra` members."""
    key = _key(kind)
    jwk: dict[str, Any]
    if isinstance(key, rsa.RSAPrivateKey):
        pub = key.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _uint(pub.n), "e": _uint(pub.e)}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        pt = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        jwk = {
            "kty": "EC",
            "crv": _CRV[kind],
            "x": _b64(pt.x.to_bytes(size, "big")),
            "y": _b64(pt.y.to_bytes(size, "big")),
        }
    else:
        raw = key.public_key().public_bytes_raw()
        jwk = {"kty": "OKP", "crv": "Ed25519" if kind == "ed25519" else "Ed448", "x": _b64(raw)}
    return {**jwk, **extra}


_HASH: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def _sign(alg: str, kind: str, data: bytes) -> bytes:
    key = _key(kind)
    if isinstance(key, rsa.RSAPrivateKey):
        digest = _HASH[alg[2:]]()
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg.startswith("RS")
            else padding.PSS(padding.MGF1(digest), digest.digest_size)
        )
        return key.sign(data, pad, digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_HASH[alg[2:]]())))
        size = _EC_SIZE[kind]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(data)


def _token(
    claims: dict[str, Any] | None = None,
    *,
    alg: str = "RS256",
    kind: str = "rsa2048",
    **header: Any,
) -> str:
    head = _seg({"alg": alg, "typ": "JWT", **header})
    body = _seg(claims if claims is not None else _claims())
    return f"{head}.{body}.{_b64(_sign(alg, kind, f'{head}.{body}'.encode()))}"


def _claims(**changes: Any) -> dict[str, Any]:
    """Good claims for ISSUER at NOW; a value of None removes the claim."""
    base: dict[str, Any] = {
        "iss": "https://idp.test",
        "aud": "kedge",
        "sub": "svc-a",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


# --- b64url_decode ----------------------------------------------------------------------

B64_GOOD = [
    ("one byte", "AA", b"\x00"),
    ("two bytes", "AQI", b"\x01\x02"),
    ("three bytes", "AQID", b"\x01\x02\x03"),
    ("url alphabet", "-_8", b"\xfb\xff"),
]


@pytest.mark.parametrize(("text", "raw"), [c[1:] for c in B64_GOOD], ids=[c[0] for c in B64_GOOD])
def test_b64url_decode_accepts_unpadded_base64url(text: str, raw: bytes) -> None:
    assert b64url_decode(text) == raw


B64_BAD = [
    ("empty", ""),
    ("one char left over", "AQIDB"),
    ("padding", "AQI="),
    ("double padding", "AQ=="),
    ("standard alphabet +", "+/8"),
    ("space inside", "AQ I"),
    ("trailing newline", "AQI\n"),
    ("non-ascii", "AQé"),
    ("dot", "AQ.D"),
]


@pytest.mark.parametrize("text", [c[1] for c in B64_BAD], ids=[c[0] for c in B64_BAD])
def test_b64url_decode_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


# --- parse_key_set: what is kept ---------------------------------------------------------

KEPT: list[tuple[str, str, dict[str, Any], frozenset[str]]] = [
    ("rsa 2048, every RSA alg", "rsa2048", {}, RSA_ALGS),
    ("rsa pinned to RS256", "rsa2048", {"alg": "RS256"}, frozenset({"RS256"})),
    ("rsa pinned to PS384", "rsa2048", {"alg": "PS384"}, frozenset({"PS384"})),
    ("rsa 3072", "rsa3072", {}, RSA_ALGS),
    ("use sig", "rsa2048", {"use": "sig"}, RSA_ALGS),
    ("ec p-256", "p256", {}, frozenset({"ES256"})),
    ("ec p-384", "p384", {}, frozenset({"ES384"})),
    ("ec p-521", "p521", {}, frozenset({"ES512"})),
    ("ec p-256 with alg", "p256", {"alg": "ES256"}, frozenset({"ES256"})),
    ("ed25519", "ed25519", {}, frozenset({"EdDSA"})),
    ("ed448", "ed448", {}, frozenset({"EdDSA"})),
]


@pytest.mark.parametrize(
    ("kind", "extra", "algorithms"), [c[1:] for c in KEPT], ids=[c[0] for c in KEPT]
)
def test_parse_key_set_keeps_public_asymmetric_keys(
    kind: str, extra: dict[str, Any], algorithms: frozenset[str]
) -> None:
    keys = parse_key_set({"keys": [_jwk(kind, kid="k1", **extra)]})
    assert [(k.kid, k.algorithms) for k in keys.keys] == [("k1", algorithms)]
    assert keys.by_kid["k1"] is keys.keys[0]
    assert keys.skipped == ()


def test_parse_key_set_key_without_kid_is_kept_but_not_indexed() -> None:
    keys = parse_key_set({"keys": [_jwk("p256")]})
    assert [k.kid for k in keys.keys] == [""]
    assert dict(keys.by_kid) == {}


SKIPPED: list[tuple[str, object, str]] = [
    ("rsa 1024", _jwk("rsa1024", kid="bad"), "1024 bits"),
    ("symmetric oct", {"kty": "oct", "k": _b64(b"secret" * 6), "kid": "bad"}, "symmetric"),
    ("private rsa", {**_jwk("rsa2048"), "d": _uint(12345), "kid": "bad"}, "private key"),
    ("private ec", {**_jwk("p256"), "d": _b64(b"\x01" * 32), "kid": "bad"}, "private key"),
    ("use enc", _jwk("rsa2048", use="enc", kid="bad"), "use 'enc'"),
    ("alg of another family", _jwk("rsa2048", alg="ES256", kid="bad"), "does not fit"),
    ("alg HS256 on rsa", _jwk("rsa2048", alg="HS256", kid="bad"), "does not fit"),
    ("alg none", _jwk("p256", alg="none", kid="bad"), "does not fit"),
    ("ES384 on a p-256 key", _jwk("p256", alg="ES384", kid="bad"), "does not fit"),
    ("alg not a string", _jwk("p256", alg=256, kid="bad"), "does not fit"),
    ("kid not a string", _jwk("p256", kid=7), "kid is not a string"),
    ("secp256k1", _jwk("k256", kid="bad"), "curve 'secp256k1'"),
    ("OKP X25519", {"kty": "OKP", "crv": "X25519", "x": _b64(b"\x09" * 32)}, "curve 'X25519'"),
    ("unknown kty", {"kty": "PQC", "kid": "bad"}, "key type 'PQC'"),
    ("no kty", {"kid": "bad", "n": "AQAB"}, "key type None"),
    ("rsa without n", {"kty": "RSA", "e": "AQAB", "kid": "bad"}, "missing 'n'"),
    ("rsa n not base64url", {**_jwk("rsa2048"), "n": "AQAB=="}, "base64url"),
    ("ec point off the curve", {**_jwk("p256"), "y": _b64(b"\x01" * 32)}, ""),
    ("ec missing y", {k: v for k, v in _jwk("p256").items() if k != "y"}, "missing 'y'"),
    ("ed25519 wrong length", {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"\x01" * 31)}, ""),
    ("okp without x", {"kty": "OKP", "crv": "Ed25519"}, "missing 'x'"),
    ("not an object", ["kty", "RSA"], "not an object"),
]


@pytest.mark.parametrize(("jwk", "why"), [c[1:] for c in SKIPPED], ids=[c[0] for c in SKIPPED])
def test_parse_key_set_skips_unusable_keys_and_says_why(jwk: object, why: str) -> None:
    good = _jwk("rsa2048", kid="good")
    keys = parse_key_set({"keys": [good, jwk]})
    assert [k.kid for k in keys.keys] == ["good"]
    assert list(keys.by_kid) == ["good"]
    assert len(keys.skipped) == 1
    assert keys.skipped[0].startswith("keys[1]: ")
    assert why in keys.skipped[0]


REFUSED: list[tuple[str, object, str]] = [
    ("not an object", [_jwk("rsa2048")], "not a JWK set"),
    ("no keys member", {"kes": [_jwk("rsa2048")]}, "not a JWK set"),
    ("keys not a list", {"keys": _jwk("rsa2048")}, "not a JWK set"),
    ("empty keys", {"keys": []}, "none listed"),
    ("only unusable keys", {"keys": [{"kty": "oct", "k": "AAAA"}]}, "symmetric"),
    (
        "two keys share a kid",
        {"keys": [_jwk("rsa2048", kid="same"), _jwk("p256", kid="same")]},
        "two keys share kid 'same'",
    ),
    (
        "two keys share a kid, one pinned",
        {"keys": [_jwk("rsa2048", kid="same", alg="RS256"), _jwk("rsa3072", kid="same")]},
        "share kid",
    ),
]


@pytest.mark.parametrize(("doc", "why"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_parse_key_set_refuses_a_set_with_nothing_usable(doc: object, why: str) -> None:
    with pytest.raises(KeySetError, match=why):
        parse_key_set(doc)


def test_keys_without_kid_may_repeat() -> None:
    keys = parse_key_set({"keys": [_jwk("rsa2048"), _jwk("p256")]})
    assert len(keys.keys) == 2


# --- KeySet.candidates ------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_set() -> KeySet:
    return parse_key_set(
        {
            "keys": [
                _jwk("rsa2048", kid="rsa", alg="RS256"),
                _jwk("p256", kid="ec"),
                _jwk("rsa3072"),  # no kid
                _jwk("ed25519", kid="ed"),
            ]
        }
    )


CANDIDATES: list[tuple[str, str | None, str, list[str]]] = [
    # (id, kid, alg, the candidates' kids; "" is the kid-less key)
    ("kid and alg fit", "rsa", "RS256", ["rsa"]),
    ("kid pinned to another alg", "rsa", "PS256", []),
    ("kid of another key type", "ec", "RS256", []),
    ("unknown kid", "nope", "RS256", []),
    ("kid differs in case", "RSA", "RS256", []),
    ("no kid: every key allowing alg", None, "RS256", ["rsa", ""]),
    ("no kid: PS256", None, "PS256", [""]),
    ("no kid: ES256", None, "ES256", ["ec"]),
    ("no kid: EdDSA", None, "EdDSA", ["ed"]),
    ("no kid: unknown alg", None, "HS256", []),
    ("no kid: none", None, "none", []),
]


@pytest.mark.parametrize(
    ("kid", "alg", "expected"), [c[1:] for c in CANDIDATES], ids=[c[0] for c in CANDIDATES]
)
def test_candidates(key_set: KeySet, kid: str | None, alg: str, expected: list[str]) -> None:
    assert [k.kid for k in key_set.candidates(kid, alg)] == expected


# --- VerificationKey.verify ---------------------------------------------------------------

ALGS = [
    ("RS256", "rsa2048"),
    ("RS384", "rsa2048"),
    ("RS512", "rsa2048"),
    ("PS256", "rsa2048"),
    ("PS384", "rsa2048"),
    ("PS512", "rsa2048"),
    ("ES256", "p256"),
    ("ES384", "p384"),
    ("ES512", "p521"),
    ("EdDSA", "ed25519"),
    ("EdDSA", "ed448"),
]


def _flip(data: bytes, at: int = -1) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(("alg", "kind"), ALGS, ids=[f"{a}-{k}" for a, k in ALGS])
def test_verify_each_algorithm(alg: str, kind: str) -> None:
    (key,) = parse_key_set({"keys": [_jwk(kind)]}).keys
    data = b"header.payload"
    sig = _sign(alg, kind, data)
    assert key.verify(alg, data, sig) is True
    assert key.verify(alg, _flip(data), sig) is False
    assert key.verify(alg, data, _flip(sig)) is False
    assert key.verify(alg, data, _flip(sig, 0)) is False
    assert key.verify(alg, data, b"") is False


def _der_es256(data: bytes) -> bytes:
    key = _key("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


VERIFY_REFUSED: list[tuple[str, str, dict[str, Any], str, Any]] = [
    # (id, key kind, jwk extras, alg asked, signature maker)
    ("RS256 key asked for PS256", "rsa2048", {"alg": "RS256"}, "PS256", "RS256"),
    ("PKCS1 signature checked as PSS", "rsa2048", {}, "PS256", "RS256"),
    ("PSS signature checked as PKCS1", "rsa2048", {}, "RS256", "PS256"),
    ("RS256 signature checked as RS512", "rsa2048", {}, "RS512", "RS256"),
    ("p-256 key asked for ES384", "p256", {}, "ES384", "ES256"),
    ("rsa key asked for ES256", "rsa2048", {}, "ES256", "RS256"),
    ("ec key asked for HS256", "p256", {}, "HS256", "ES256"),
    ("ec key asked for none", "p256", {}, "none", "ES256"),
    ("ed25519 key asked for ES256", "ed25519", {}, "ES256", "EdDSA"),
    ("ES256 signature in DER form", "p256", {}, "ES256", _der_es256),
    ("ES256 signature all zero", "p256", {}, "ES256", lambda d: b"\0" * 64),
    ("ES256 signature all ones", "p256", {}, "ES256", lambda d: b"\xff" * 64),
    (
        "ES256 signature one byte short",
        "p256",
        {},
        "ES256",
        lambda d: _sign("ES256", "p256", d)[1:],
    ),
    ("RS256 signature of zeros", "rsa2048", {}, "RS256", lambda d: b"\0" * 256),
    (
        "EdDSA signature too long",
        "ed25519",
        {},
        "EdDSA",
        lambda d: _sign("EdDSA", "ed25519", d) + b"\0",
    ),
]


@pytest.mark.parametrize(
    ("kind", "extra", "alg", "signer"),
    [c[1:] for c in VERIFY_REFUSED],
    ids=[c[0] for c in VERIFY_REFUSED],
)
def test_verify_refuses(kind: str, extra: dict[str, Any], alg: str, signer: Any) -> None:
    (key,) = parse_key_set({"keys": [_jwk(kind, **extra)]}).keys
    data = b"header.payload"
    sig = signer(data) if callable(signer) else _sign(signer, kind, data)
    assert key.verify(alg, data, sig) is False


# --- parse_token ------------------------------------------------------------------------


def test_parse_token_splits_and_decodes() -> None:
    token = _token(kid="k1")
    head, body, sig = token.split(".")
    parsed = parse_token(token)
    assert parsed.alg == "RS256"
    assert parsed.kid == "k1"
    assert parsed.claims == _claims()
    assert parsed.signing_input == f"{head}.{body}".encode()
    assert parsed.signature == b64url_decode(sig)


def test_parse_token_without_kid() -> None:
    assert parse_token(_token()).kid is None


GOOD_HEADERS: list[tuple[str, dict[str, Any]]] = [
    ("no typ", {"typ": None}),
    ("typ JWT", {"typ": "JWT"}),
    ("typ jwt lower case", {"typ": "jwt"}),
    ("typ at+jwt (RFC 9068)", {"typ": "at+jwt"}),
    ("typ application/at+jwt", {"typ": "application/at+jwt"}),
    ("typ application/jwt", {"typ": "application/JWT"}),
    ("kid of 256 chars", {"kid": "k" * 256}),
    ("jku is ignored", {"jku": "https://evil.test/jwks"}),
    ("x5u is ignored", {"x5u": "https://evil.test/cert"}),
    ("x5c is ignored", {"x5c": ["MIIB"]}),
    ("jwk is ignored", {"jwk": {"kty": "oct", "k": "AAAA"}}),
    ("cty is ignored", {"cty": "text/plain"}),
]


def _raw_token(header: dict[str, Any], claims: object = None, sig: str = "c2ln") -> str:
    header = {k: v for k, v in header.items() if v is not None}
    return f"{_seg(header)}.{_seg(claims if claims is not None else _claims())}.{sig}"


@pytest.mark.parametrize("extra", [c[1] for c in GOOD_HEADERS], ids=[c[0] for c in GOOD_HEADERS])
def test_parse_token_accepts_headers(extra: dict[str, Any]) -> None:
    parsed = parse_token(_raw_token({"alg": "ES256", "typ": "JWT", **extra}))
    assert parsed.alg == "ES256"
    assert parsed.kid == extra.get("kid")
    assert parsed.signature == b"sig"


_H = _seg({"alg": "RS256"})
_P = _seg(_claims())


def _join(header: bytes | str, payload: bytes | str, sig: str = "c2ln") -> str:
    """A token from raw parts: bytes are base64url-encoded, strings used as they are."""
    h = header if isinstance(header, str) else _b64(header)
    p = payload if isinstance(payload, str) else _b64(payload)
    return f"{h}.{p}.{sig}"


BAD_TOKENS: list[tuple[str, str, str]] = [
    ("empty", "", "three dot-separated parts"),
    ("one part", _H, "three dot-separated parts"),
    ("two parts", f"{_H}.{_P}", "three dot-separated parts"),
    ("four parts", f"{_H}.{_P}.c2ln.c2ln", "three dot-separated parts"),
    ("five parts (JWE)", f"{_H}.{_P}.a.b.c", "three dot-separated parts"),
    ("JSON serialization", json.dumps({"payload": _P, "signature": "c2ln"}), "three"),
    ("padded header", f"{_H}=.{_P}.c2ln", "header is not base64url"),
    ("padded payload", f"{_H}.{_seg({'iss': 'x'})}=.c2ln", "payload is not base64url"),
    ("padded signature", f"{_H}.{_P}.c2lnbg==", "signature is not base64url"),
    ("empty signature (alg none style)", f"{_seg({'alg': 'none'})}.{_P}.", "signature"),
    ("empty header", f".{_P}.c2ln", "header is not base64url"),
    ("space in payload", f"{_H}.{_P[:5]} {_P[5:]}.c2ln", "payload is not base64url"),
    ("standard base64 signature", f"{_H}.{_P}.c2l+/w", "signature is not base64url"),
    ("header not JSON", f"{_b64(b'alg=RS256')}.{_P}.c2ln", "header is not base64url-encoded JSON"),
    ("header a JSON list", f"{_seg(['RS256'])}.{_P}.c2ln", "header is not a JSON object"),
    ("header with a BOM", _join(b"\xef\xbb\xbf{}", _P), "header"),
    ("payload not JSON", f"{_H}.{_b64(b'sub=x')}.c2ln", "payload is not base64url-encoded JSON"),
    ("payload a string", f"{_H}.{_seg('sub')}.c2ln", "payload is not a JSON object"),
    ("payload not UTF-8", _join(_H, b'{"a":"\xff"}'), "payload"),
    ("no alg", _raw_token({"typ": "JWT"}), "no alg"),
    ("alg null", _raw_token({"alg": None, "kid": "x"}), "no alg"),
    ("alg a number", _raw_token({"alg": 256}), "no alg"),
    ("crit", _raw_token({"alg": "RS256", "crit": ["exp"]}), "crit"),
    ("crit empty", _raw_token({"alg": "RS256", "crit": []}), "crit"),
    ("enc (JWE header)", _raw_token({"alg": "RSA-OAEP", "enc": "A256GCM"}), "JWE"),
    ("typ JOSE+JSON", _raw_token({"alg": "RS256", "typ": "JOSE+JSON"}), "typ"),
    ("typ dpop+jwt", _raw_token({"alg": "RS256", "typ": "dpop+jwt"}), "typ"),
    ("typ not a string", _raw_token({"alg": "RS256", "typ": 1}), "typ"),
    ("kid empty", _raw_token({"alg": "RS256", "kid": ""}), "kid"),
    ("kid too long", _raw_token({"alg": "RS256", "kid": "k" * 257}), "kid"),
    ("kid a number", _raw_token({"alg": "RS256", "kid": 1}), "kid"),
    ("kid a list", _raw_token({"alg": "RS256", "kid": ["a"]}), "kid"),
    (
        "duplicate header member",
        _join(b'{"alg":"none","alg":"RS256"}', _P),
        "duplicate member 'alg'",
    ),
    (
        "duplicate payload member",
        _join(_H, b'{"sub":"a","sub":"admin"}'),
        "duplicate member 'sub'",
    ),
    (
        "duplicate nested member",
        _join(_H, b'{"a":{"p":1,"p":2}}'),
        "duplicate member 'p'",
    ),
    ("deeply nested payload", f"{_H}.{_b64(b'[' * 5000 + b']' * 5000)}.c2ln", "payload"),
    (
        "deeply nested header member",
        _join(b'{"alg":"RS256","x":' + b'{"a":' * 3000 + b"1" + b"}" * 3001, _P),
        "header",
    ),
    ("non-ascii in a part", f"{_H}.{_P}.c2lné", "signature is not base64url"),
]


@pytest.mark.parametrize(
    ("token", "why"), [c[1:] for c in BAD_TOKENS], ids=[c[0] for c in BAD_TOKENS]
)
def test_parse_token_refuses(token: str, why: str) -> None:
    with pytest.raises(TokenRejected) as info:
        parse_token(token)
    assert why in str(info.value)
    assert "\n" not in str(info.value)


# --- peek_issuer ------------------------------------------------------------------------

PEEK: list[tuple[str, str, tuple[str, object] | None]] = [
    ("iss and aud", _raw_token({"alg": "RS256"}), ("https://idp.test", "kedge")),
    (
        "aud list",
        _raw_token({"alg": "RS256"}, _claims(aud=["a", "kedge"])),
        ("https://idp.test", ["a", "kedge"]),
    ),
    ("no aud", _raw_token({"alg": "RS256"}, _claims(aud=None)), ("https://idp.test", None)),
    ("header is not even checked", f"e30.{_P}.x", ("https://idp.test", "kedge")),
    ("no iss", _raw_token({"alg": "RS256"}, _claims(iss=None)), None),
    ("iss a number", _raw_token({"alg": "RS256"}, _claims(iss=7)), None),
    ("opaque token", "2YotnFZFEjr1zCsicMWpAA", None),
    ("two parts", f"{_H}.{_P}", None),
    ("payload not JSON", f"{_H}.{_b64(b'nope')}.x", None),
    ("payload padded", f"{_H}.{_P}=.x", None),
    ("duplicate iss", _join(_H, b'{"iss":"a","iss":"b"}'), None),
    ("deeply nested payload", f"{_H}.{_b64(b'[' * 5000 + b']' * 5000)}.x", None),
]


@pytest.mark.parametrize(("token", "expected"), [c[1:] for c in PEEK], ids=[c[0] for c in PEEK])
def test_peek_issuer(token: str, expected: tuple[str, object] | None) -> None:
    assert peek_issuer(token) == expected


# --- audience_matches ---------------------------------------------------------------------

AUDIENCES: list[tuple[str, object, bool]] = [
    ("string, ours", "kedge", True),
    ("string, the other accepted", "other", True),
    ("string, not ours", "api", False),
    ("string, case differs", "Kedge", False),
    ("string, with space", "kedge ", False),
    ("list with ours", ["api", "kedge"], True),
    ("list without ours", ["api", "web"], False),
    ("empty list", [], False),
    ("list with a non-string", [1, {"a": "kedge"}], False),
    ("list with a nested list", [["kedge"]], False),
    ("missing", None, False),
    ("a number", 1, False),
    ("an object", {"kedge": True}, False),
    ("space-separated string", "api kedge", False),
]


@pytest.mark.parametrize(("aud", "ok"), [c[1:] for c in AUDIENCES], ids=[c[0] for c in AUDIENCES])
def test_audience_matches(aud: object, ok: bool) -> None:
    assert audience_matches(aud, ISSUER.audiences) is ok


# --- check_claims -----------------------------------------------------------------------

CLAIMS_OK: list[tuple[str, dict[str, Any], dict[str, Any], float]] = [
    # (id, claims, issuer overrides, expected exp)
    ("all good", _claims(), {}, NOW + 300),
    ("aud list", _claims(aud=["x", "other"]), {}, NOW + 300),
    ("no nbf, no iat", _claims(nbf=None, iat=None), {}, NOW + 300),
    ("integer exp", _claims(exp=int(NOW) + 5), {}, NOW + 5),
    ("expired within leeway", _claims(exp=NOW - 59), {}, NOW - 59),
    ("expired exactly leeway ago", _claims(exp=NOW - 60), {}, NOW - 60),
    ("nbf within leeway", _claims(nbf=NOW + 60), {}, NOW + 300),
    ("iat within leeway", _claims(iat=NOW + 30), {}, NOW + 300),
    ("leeway 0, exp now", _claims(exp=NOW), {"leeway": 0.0}, NOW),
    (
        "lifetime exactly the cap",
        _claims(iat=NOW, exp=NOW + 3600),
        {"max_lifetime": 3600.0},
        NOW + 3600,
    ),
    ("no cap", _claims(iat=NOW, exp=NOW + 10 * 86400), {"max_lifetime": 0.0}, NOW + 10 * 86400),
    (
        "cap without iat counts from now",
        _claims(iat=None, exp=NOW + 3600),
        {"max_lifetime": 3600.0},
        NOW + 3600,
    ),
    ("extra claims are fine", _claims(scope="a b", azp="x"), {}, NOW + 300),
    ("a sub with spaces", _claims(sub="a b"), {}, NOW + 300),
]


@pytest.mark.parametrize(
    ("claims", "overrides", "exp"), [c[1:] for c in CLAIMS_OK], ids=[c[0] for c in CLAIMS_OK]
)
def test_check_claims_accepts(
    claims: dict[str, Any], overrides: dict[str, Any], exp: float
) -> None:
    assert check_claims(claims, dataclasses.replace(ISSUER, **overrides), NOW) == exp


CLAIMS_BAD: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("wrong iss", _claims(iss="https://evil.test"), {}, "wrong issuer"),
    ("iss with trailing slash", _claims(iss="https://idp.test/"), {}, "wrong issuer"),
    ("iss missing", _claims(iss=None), {}, "wrong issuer"),
    ("iss a list", _claims(iss=["https://idp.test"]), {}, "wrong issuer"),
    ("wrong aud", _claims(aud="api"), {}, "aud"),
    ("aud missing", _claims(aud=None), {}, "aud"),
    ("aud list without ours", _claims(aud=["api"]), {}, "aud"),
    ("exp missing", _claims(exp=None), {}, "no exp"),
    ("exp a string", _claims(exp=str(int(NOW + 300))), {}, "exp is not a number"),
    ("exp true", _claims(exp=True), {}, "exp is not a number"),
    ("exp a list", _claims(exp=[NOW + 300]), {}, "exp is not a number"),
    ("exp an object", _claims(exp={"$date": NOW + 300}), {}, "exp is not a number"),
    ("expired past leeway", _claims(exp=NOW - 61), {}, "expired"),
    ("expired, leeway 0", _claims(exp=NOW - 1), {"leeway": 0.0}, "expired"),
    ("nbf in the future", _claims(nbf=NOW + 61), {}, "not valid yet"),
    ("nbf a string", _claims(nbf="0"), {}, "nbf is not a number"),
    ("nbf false", _claims(nbf=False), {}, "nbf is not a number"),
    ("iat in the future", _claims(iat=NOW + 61), {}, "issued in the future"),
    ("iat a string", _claims(iat="now"), {}, "iat is not a number"),
    ("lifetime over the cap", _claims(iat=NOW, exp=NOW + 3601), {"max_lifetime": 3600.0}, "longer"),
    ("default cap is 24h", _claims(iat=NOW - 10, exp=NOW + 86391), {}, "longer"),
    ("cap without iat", _claims(iat=None, exp=NOW + 3601), {"max_lifetime": 3600.0}, "longer"),
    ("sub missing", _claims(sub=None), {}, "no sub"),
    ("sub empty", _claims(sub=""), {}, "no sub"),
    ("sub a number", _claims(sub=42), {}, "no sub"),
    ("sub a list", _claims(sub=["a"]), {}, "no sub"),
    # Numbers JSON can spell but a NumericDate cannot be (RFC 7519 §2): Python's json reads
    # 1e400 as infinity and NaN as a float, and 10**400 is an int no float can hold.
    ("exp infinity, no cap", _claims(exp=float("inf")), {"max_lifetime": 0.0}, "exp"),
    ("exp NaN", _claims(exp=float("nan")), {}, "exp"),
    ("exp NaN, no cap", _claims(exp=float("nan")), {"max_lifetime": 0.0}, "exp"),
    ("exp 10**400", _claims(exp=10**400), {}, "exp"),
    ("nbf NaN", _claims(nbf=float("nan")), {}, "nbf"),
    ("iat -infinity", _claims(iat=float("-inf")), {"max_lifetime": 0.0}, "iat"),
]


@pytest.mark.parametrize(
    ("claims", "overrides", "why"), [c[1:] for c in CLAIMS_BAD], ids=[c[0] for c in CLAIMS_BAD]
)
def test_check_claims_refuses(claims: dict[str, Any], overrides: dict[str, Any], why: str) -> None:
    with pytest.raises(TokenRejected) as info:
        check_claims(claims, dataclasses.replace(ISSUER, **overrides), NOW)
    assert why in str(info.value)


def test_check_claims_json_non_numbers_from_a_real_payload() -> None:
    # The same through the parser: what a (misbehaving) provider could actually sign.
    body = b'{"iss":"https://idp.test","aud":"kedge","sub":"a","exp":NaN}'
    parsed = parse_token(f"{_H}.{_b64(body)}.c2ln")
    with pytest.raises(TokenRejected):
        check_claims(parsed.claims, ISSUER, NOW)


# --- claim_strings --------------------------------------------------------------------------

CLAIM_STRINGS: list[tuple[str, dict[str, Any], str, frozenset[str]]] = [
    ("list", {"permissions": ["a", "b"]}, "permissions", frozenset({"a", "b"})),
    ("space-separated string", {"scope": "a b  c"}, "scope", frozenset({"a", "b", "c"})),
    ("one string", {"scope": "a"}, "scope", frozenset({"a"})),
    ("empty string", {"scope": ""}, "scope", frozenset()),
    ("empty list", {"permissions": []}, "permissions", frozenset()),
    ("missing", {"sub": "x"}, "permissions", frozenset()),
    ("list entries keep their spaces", {"p": ["a b", " c"]}, "p", frozenset({"a b", " c"})),
    ("nested path", {"kedge": {"perms": ["x"]}}, "kedge.perms", frozenset({"x"})),
    ("deeper path", {"a": {"b": {"c": "x y"}}}, "a.b.c", frozenset({"x", "y"})),
    ("nested, missing leaf", {"kedge": {}}, "kedge.perms", frozenset()),
    ("nested, missing middle", {"a": {}}, "a.b.c", frozenset()),
    ("nested, middle not an object", {"kedge": ["perms"]}, "kedge.perms", frozenset()),
    ("nested, middle a string", {"kedge": "perms"}, "kedge.perms", frozenset()),
    (
        "top-level name with dots wins",
        {"https://kedge.test/perms": ["t"], "https://kedge": {"test/perms": ["n"]}},
        "https://kedge.test/perms",
        frozenset({"t"}),
    ),
    ("dotted name absent, nested used", {"a": {"b": ["n"]}}, "a.b", frozenset({"n"})),
    ("duplicates collapse", {"p": ["a", "a"]}, "p", frozenset({"a"})),
]


@pytest.mark.parametrize(
    ("claims", "path", "expected"),
    [c[1:] for c in CLAIM_STRINGS],
    ids=[c[0] for c in CLAIM_STRINGS],
)
def test_claim_strings(claims: dict[str, Any], path: str, expected: frozenset[str]) -> None:
    assert claim_strings(claims, path) == expected


CLAIM_STRINGS_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("an object", {"permissions": {"admin": True}}, "permissions"),
    ("a number", {"permissions": 1}, "permissions"),
    ("true", {"permissions": True}, "permissions"),
    ("null", {"permissions": None}, "permissions"),
    ("list with a number", {"permissions": ["a", 1]}, "permissions"),
    ("list with a list", {"permissions": [["a"]]}, "permissions"),
    ("list with null", {"permissions": ["a", None]}, "permissions"),
    ("nested object leaf", {"a": {"b": {"c": 1}}}, "a.b"),
]


@pytest.mark.parametrize(
    ("claims", "path"), [c[1:] for c in CLAIM_STRINGS_BAD], ids=[c[0] for c in CLAIM_STRINGS_BAD]
)
def test_claim_strings_refuses_other_types(claims: dict[str, Any], path: str) -> None:
    with pytest.raises(TokenRejected, match=f"claim {path} is neither"):
        claim_strings(claims, path)


# --- a whole token, end to end through the pure pieces ---------------------------------


@pytest.mark.parametrize(("alg", "kind"), ALGS, ids=[f"{a}-{k}" for a, k in ALGS])
def test_token_signed_by_each_algorithm_parses_and_verifies(alg: str, kind: str) -> None:
    keys = parse_key_set({"keys": [_jwk(kind, kid="k")]})
    parsed = parse_token(_token(alg=alg, kind=kind, kid="k"))
    (key,) = keys.candidates(parsed.kid, parsed.alg)
    assert key.verify(parsed.alg, parsed.signing_input, parsed.signature)
    assert check_claims(parsed.claims, ISSUER, NOW) == NOW + 300
    tampered = parse_token(_token(_claims(sub="admin"), alg=alg, kind=kind, kid="k"))
    forged = dataclasses.replace(tampered, signature=parsed.signature)
    assert not key.verify(forged.alg, forged.signing_input, forged.signature)
