"""Hostile bearer tokens through a real edge: every one refused, and nothing reaches a backend.

A table of tokens minted here (raw JWS built byte by byte, so duplicate members, `crit`,
padding and `alg: none` are exactly what the test says) against keys served by a small JWKS
server on 127.0.0.1. Each case goes over HTTP/1.1 on a raw socket and asserts the status,
`X-Kedge-Error-Type`, the challenge, and what the backend received (nothing for a refusal;
for an admission, no edge credential and the edge's own identity header). A subset runs over
gRPC (h2c, grpcio) and must end UNAUTHENTICATED or PERMISSION_DENIED without calling the
servicer. A last test feeds the edge's JWKS refresh garbage (HTML, a huge body, no keys,
only unusable keys, an error status, a redirect) and checks the old keys keep serving.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_channel, grpc_hello_server
from tests.support.oidc_provider import SigningKey, ec_key, rsa_key
from tests.support.raw_client import RawResponse, raw_connection

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_TOKEN_BYTES = 4096


# --- minting ------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def js(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Key:
    """A signing key the test holds: its kid, its algorithm and the cryptography object."""

    kid: str
    alg: str
    private: Any  # rsa/ec private key, or bytes for HMAC
    public_jwk: Mapping[str, Any]

    @classmethod
    def of(cls, k: SigningKey) -> Key:
        return cls(k.kid, k.alg, jwt.PyJWK(dict(k.private_jwk), algorithm=k.alg).key, k.public_jwk)


def signature(alg: str, key: Any, data: bytes) -> bytes:
    if alg == "none":
        return b""
    if alg.startswith("HS"):
        return hmac.new(key, data, hashlib.sha256).digest()
    if alg.startswith("RS"):
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4: R || S


def compact(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: Any,
    alg: str,
) -> str:
    """A compact JWS over exactly these header and payload bytes, signed with `alg`."""
    h = header if isinstance(header, bytes) else js(header)
    p = payload if isinstance(payload, bytes) else js(payload)
    signing_input = f"{b64(h)}.{b64(p)}"
    return f"{signing_input}.{b64(signature(alg, key, signing_input.encode()))}"


_DROP = object()  # a claim value meaning "leave this claim out"


@dataclass
class World:
    """Everything the table's cases draw on: the issuer, its keys, an attacker's key."""

    issuer: str
    attacker_url: str
    rsa: Key  # RS256, published
    ec: Key  # ES256, published (the issuer accepts RS256 only)
    weak: Key  # RS256 with a 1024-bit key, published (must be skipped)
    oct_secret: bytes  # published as a kty "oct" key with kid "oct-1" (must be skipped)
    attacker: Key  # RS256, never published
    seq: int = 0

    def claims(self, **over: object) -> dict[str, object]:
        now = int(time.time())
        self.seq += 1  # every token differs: none is answered from the verified-token cache
        base: dict[str, object] = {
            "iss": self.issuer,
            "aud": "kedge",
            "sub": "svc-a",
            "iat": now,
            "exp": now + 600,
            "jti": f"t{self.seq}",
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not _DROP}

    def token(
        self, key: Key | None = None, header: Mapping[str, Any] | None = None, **claims: object
    ) -> str:
        k = key or self.rsa
        head = {"alg": k.alg, "typ": "JWT", "kid": k.kid, **(header or {})}
        return compact(head, self.claims(**claims), k.private, k.alg)


def bearer(token: str, scheme: str = "Bearer") -> list[tuple[str, str]]:
    return [("Proxy-Authorization", f"{scheme} {token}")]


# --- servers ------------------------------------------------------------------------------


@dataclass
class KeyServer:
    """A JWKS endpoint whose answer a test can swap, counting the requests it got."""

    port: int = 0
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    location: str | None = None
    hits: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_jwks(self, keys: Sequence[Mapping[str, Any]]) -> None:
        self.answer(200, js({"keys": list(keys)}))

    def answer(
        self, status: int, body: bytes, ctype: str = "application/json", location: str = ""
    ) -> None:
        self.status, self.body, self.content_type = status, body, ctype
        self.location = location or None


@asynccontextmanager
async def key_server() -> AsyncIterator[KeyServer]:
    state = KeyServer()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.hits.append(request.path)
        headers = {"Location": state.location} if state.location else {}
        return web.Response(
            status=state.status,
            body=state.body,
            content_type=state.content_type,
            headers=headers,
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = int(runner.addresses[0][1])
    try:
        yield state
    finally:
        await runner.cleanup()


def edge_yaml(issuer: str, backend: str, grpc_backend: str, extra_issuer: str = "") -> str:
    return f"""
listeners:
  - {{name: http, address: "127.0.0.1:0", credentials: [proxy_authorization, authorization]}}
admin: {{address: "127.0.0.1:0"}}
backends:
  - {{name: b, resolver: {{static: {{endpoints: ["{backend}"]}}}}}}
  - {{name: g, protocol: h2c, resolver: {{static: {{endpoints: ["{grpc_backend}"]}}}}}}
routes:
  - name: grpc-admin
    backend: g
    match: {{grpc_methods: [kedge.e2e.Other/Ping]}}
    auth: {{permissions: [admin]}}
  - {{name: grpc, backend: g, match: {{grpc_methods: ["*"]}}}}
  - {{name: open, backend: b, match: {{paths: ["/open/*"]}}, auth: {{anonymous: true}}}}
  - {{name: admin, backend: b, match: {{paths: ["/admin/*"]}}, auth: {{permissions: [admin]}}}}
  - {{name: any, backend: b}}
auth:
  identity_header: x-kedge-principal
  max_token_bytes: {MAX_TOKEN_BYTES}
  issuers:
    - name: op
      issuer: "{issuer}"
      audiences: [kedge]
      jwks_url: "{issuer}/jwks"
      leeway: 60s
      max_lifetime: 1h
      {extra_issuer}
"""


@dataclass
class Setup:
    edge: RunningEdge
    backend: RecordingBackend
    grpc: GrpcServer
    keys: KeyServer
    attacker: KeyServer
    world: World


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup() -> AsyncIterator[Setup]:
    rsa1 = Key.of(rsa_key("rsa-1"))
    ec1 = Key.of(ec_key("ec-1"))
    weak = Key.of(rsa_key("rsa-weak", bits=1024))
    attacker = Key.of(rsa_key("attacker"))
    oct_secret = b"0123456789abcdef0123456789abcdef"
    oct_jwk = {"kty": "oct", "kid": "oct-1", "k": b64(oct_secret), "alg": "HS256"}
    async with (
        key_server() as keys,
        key_server() as attacker_server,
        recording_backend() as be,
        grpc_hello_server(name="g") as grpc_server,
    ):
        keys.serve_jwks([rsa1.public_jwk, ec1.public_jwk, weak.public_jwk, oct_jwk])
        attacker_server.serve_jwks([attacker.public_jwk])
        world = World(keys.url, attacker_server.url, rsa1, ec1, weak, oct_secret, attacker)
        async with running_edge(edge_yaml(keys.url, be.address, grpc_server.address)) as edge:
            yield Setup(edge, be, grpc_server, keys, attacker_server, world)


# --- HTTP/1.1 ----------------------------------------------------------------------------


async def send(
    port: int, path: str, headers: Sequence[tuple[str, str]], host: str = "app.test"
) -> RawResponse:
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers)
    head += "Connection: close\r\n\r\n"
    async with raw_connection(port) as conn:
        # The edge may answer and close before it has read a huge head.
        with suppress(ConnectionResetError, BrokenPipeError):
            await conn.send(head.encode("latin-1"))
        return await conn.read_response(5.0)


Headers = Callable[[World], list[tuple[str, str]]]


@dataclass(frozen=True)
class Case:
    id: str
    headers: Headers
    status: int
    kind: str | None  # X-Kedge-Error-Type; None for an admission
    reason: str  # part of X-Kedge-Error: the case is refused for the reason it tests
    path: str = "/any/x"
    sub: str = "svc-a"  # the admitted caller's sub


def _tamper_payload(w: World) -> list[tuple[str, str]]:
    h, _, s = w.token().split(".")
    forged = b64(js(w.claims(sub="admin", permissions=["admin"])))
    return bearer(f"{h}.{forged}.{s}")


def _tamper_signature(w: World) -> list[tuple[str, str]]:
    h, p, s = w.token().split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return bearer(f"{h}.{p}.{b64(bytes(raw))}")


def _alg_none(w: World, alg: str = "none") -> list[tuple[str, str]]:
    return bearer(compact({"alg": alg, "kid": "rsa-1"}, w.claims(), None, "none"))


def _alg_none_signed(w: World) -> list[tuple[str, str]]:
    # alg none with a real signature part: refused for the algorithm, not for the syntax.
    header = {"alg": "none", "kid": "rsa-1"}
    h, p, _ = compact(header, w.claims(), None, "none").split(".")
    return bearer(f"{h}.{p}.{b64(signature('RS256', w.rsa.private, f'{h}.{p}'.encode()))}")


def _hs_with_public_pem(w: World) -> list[tuple[str, str]]:
    pem = w.rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bearer(compact({"alg": "HS256", "kid": "rsa-1"}, w.claims(), pem, "HS256"))


def _rs256_with_ec_kid(w: World) -> list[tuple[str, str]]:
    return bearer(compact({"alg": "RS256", "kid": w.ec.kid}, w.claims(), w.rsa.private, "RS256"))


def _oversized(w: World) -> list[tuple[str, str]]:
    token = w.token(padding="x" * MAX_TOKEN_BYTES)
    assert len(token) > MAX_TOKEN_BYTES
    return bearer(token)


def _one_megabyte(w: World) -> list[tuple[str, str]]:
    return bearer(w.token(padding="x" * (1024 * 1024)))


def _crit(w: World) -> list[tuple[str, str]]:
    return bearer(w.token(header={"crit": ["exp"]}))


def _jku(w: World) -> list[tuple[str, str]]:
    return bearer(w.token(w.attacker, header={"jku": f"{w.attacker_url}/jwks"}))


def _x5u(w: World) -> list[tuple[str, str]]:
    return bearer(w.token(w.attacker, header={"x5u": f"{w.attacker_url}/cert.pem"}))


def _embedded_jwk(w: World) -> list[tuple[str, str]]:
    return bearer(w.token(w.attacker, header={"jwk": dict(w.attacker.public_jwk)}))


def _embedded_jwk_our_kid(w: World) -> list[tuple[str, str]]:
    # The attacker names our key's kid and embeds its own key: the edge must use its own.
    jwk = {**w.attacker.public_jwk, "kid": "rsa-1"}
    header = {"alg": "RS256", "kid": "rsa-1", "jwk": jwk}
    return bearer(compact(header, w.claims(), w.attacker.private, "RS256"))


def _json_serialization(w: World) -> list[tuple[str, str]]:
    h, p, s = w.token().split(".")
    return bearer(js({"payload": p, "signatures": [{"protected": h, "signature": s}]}).decode())


def _flattened_json(w: World) -> list[tuple[str, str]]:
    h, p, s = w.token().split(".")
    return bearer(js({"payload": p, "protected": h, "signature": s}).decode())


def _two_parts(w: World) -> list[tuple[str, str]]:
    h, p, _ = w.token().split(".")
    return bearer(f"{h}.{p}")


def _four_parts(w: World) -> list[tuple[str, str]]:
    return bearer(w.token() + "." + b64(b"extra"))


def _padded_signature(w: World) -> list[tuple[str, str]]:
    h, p, s = w.token().split(".")
    s = s + "=" * (-len(s) % 4) if len(s) % 4 else s + "=="
    return bearer(f"{h}.{p}.{s}")


def _padded_header(w: World) -> list[tuple[str, str]]:
    h, p, s = w.token(header={"x": "ab"}).split(".")  # a header whose length needs padding
    pad = "=" * (-len(h) % 4) or "=="
    return bearer(f"{h}{pad}.{p}.{s}")


def _inner_space(w: World) -> list[tuple[str, str]]:
    h, p, s = w.token().split(".")
    return bearer(f"{h}. {p}.{s}")


def _tab_separator(w: World) -> list[tuple[str, str]]:
    return [("Proxy-Authorization", f"Bearer\t{w.token()}")]


def _duplicate_claim(w: World) -> list[tuple[str, str]]:
    claims = js(w.claims(sub="svc-a"))
    payload = claims[:-1] + b',"sub":"admin","permissions":["admin"]}'
    return bearer(compact({"alg": "RS256", "kid": "rsa-1"}, payload, w.rsa.private, "RS256"))


def _duplicate_header(w: World) -> list[tuple[str, str]]:
    header = b'{"alg":"RS256","kid":"rsa-1","alg":"none"}'
    return bearer(compact(header, w.claims(), w.rsa.private, "RS256"))


def _basic(w: World) -> list[tuple[str, str]]:
    return bearer(base64.b64encode(b"svc-a:secret").decode(), scheme="Basic")


def _two_headers(w: World) -> list[tuple[str, str]]:
    return bearer(w.token()) + bearer(w.token())


def _weak_key(w: World) -> list[tuple[str, str]]:
    return bearer(w.token(w.weak))


def _oct_hs256(w: World) -> list[tuple[str, str]]:
    return bearer(compact({"alg": "HS256", "kid": "oct-1"}, w.claims(), w.oct_secret, "HS256"))


def _oct_kid_rs256(w: World) -> list[tuple[str, str]]:
    return bearer(compact({"alg": "RS256", "kid": "oct-1"}, w.claims(), w.rsa.private, "RS256"))


UNAUTH = "unauthenticated"
_NOT_BEARER = "is not one Bearer token"
_UNKNOWN_KID = "signing key is unknown (kid)"
_BAD_SIGNATURE = "the signature does not verify"


def ok(id: str, headers: Headers, path: str = "/any/x", sub: str = "svc-a") -> Case:
    return Case(id, headers, 200, None, "", path, sub)


def refused(
    id: str,
    headers: Headers,
    reason: str,
    status: int = 401,
    kind: str = UNAUTH,
    path: str = "/any/x",
) -> Case:
    return Case(id, headers, status, kind, reason, path)


def _ago(seconds: int) -> int:
    return int(time.time()) - seconds


CASES: list[Case] = [
    ok("valid", lambda w: bearer(w.token())),
    refused("no-credential", lambda w: [], "no credential"),
    refused("wrong-issuer", lambda w: bearer(w.token(iss=w.attacker_url)), "issuer is not trusted"),
    refused(
        "issuer-trailing-slash",
        lambda w: bearer(w.token(iss=w.issuer + "/")),
        "issuer is not trusted",
    ),
    refused("wrong-audience", lambda w: bearer(w.token(aud="other")), "(aud)"),
    ok("audience-list-with-ours", lambda w: bearer(w.token(aud=["other", "kedge"]))),
    refused("audience-list-without-ours", lambda w: bearer(w.token(aud=["a", "b"])), "(aud)"),
    refused("audience-object", lambda w: bearer(w.token(aud={"kedge": 1})), "(aud)"),
    refused("expired", lambda w: bearer(w.token(exp=_ago(3600), iat=_ago(3700))), "expired"),
    ok("expired-within-leeway", lambda w: bearer(w.token(exp=_ago(20), iat=_ago(600)))),
    refused("nbf-in-future", lambda w: bearer(w.token(nbf=_ago(-3600))), "(nbf)"),
    ok("nbf-within-leeway", lambda w: bearer(w.token(nbf=_ago(-20)))),
    refused("iat-in-future", lambda w: bearer(w.token(iat=_ago(-3600), exp=_ago(-3700))), "(iat)"),
    refused("exp-as-string", lambda w: bearer(w.token(exp="1795271586")), "exp is not a number"),
    refused("exp-as-bool", lambda w: bearer(w.token(exp=True)), "exp is not a number"),
    refused("nbf-as-string", lambda w: bearer(w.token(nbf="0")), "nbf is not a number"),
    refused("missing-exp", lambda w: bearer(w.token(exp=_DROP)), "no exp"),
    refused("missing-sub", lambda w: bearer(w.token(sub=_DROP)), "no sub"),
    refused("empty-sub", lambda w: bearer(w.token(sub="")), "no sub"),
    refused("sub-not-a-string", lambda w: bearer(w.token(sub=42)), "no sub"),
    refused("lifetime-over-max", lambda w: bearer(w.token(exp=_ago(-7200))), "lives longer"),
    refused("unknown-kid", lambda w: bearer(w.token(header={"kid": "nope"})), _UNKNOWN_KID),
    refused("tampered-payload", _tamper_payload, _BAD_SIGNATURE, path="/admin/x"),
    refused("tampered-signature", _tamper_signature, _BAD_SIGNATURE),
    refused("alg-none", _alg_none, "signature is not base64url"),
    refused("alg-none-with-signature", _alg_none_signed, "algorithm 'none' is not accepted"),
    refused("alg-None", lambda w: _alg_none(w, "None"), "signature is not base64url"),
    refused("hs256-with-rsa-public-pem", _hs_with_public_pem, "'HS256' is not accepted"),
    refused(
        "es256-to-rs256-only-issuer", lambda w: bearer(w.token(w.ec)), "'ES256' is not accepted"
    ),
    refused("rs256-header-with-ec-kid", _rs256_with_ec_kid, _UNKNOWN_KID),
    refused(
        "over-max-token-bytes", _oversized, "larger than 4096 bytes", 431, "credential-too-large"
    ),
    refused("one-megabyte", _one_megabyte, "too large", 431, "header-too-large"),
    refused("crit-header", _crit, "crit"),
    refused("jwe-enc-header", lambda w: bearer(w.token(header={"enc": "A256GCM"})), "JWE"),
    refused("typ-not-jwt", lambda w: bearer(w.token(header={"typ": "JOSE+JSON"})), "not a JWT"),
    refused("jku-elsewhere", _jku, _UNKNOWN_KID),
    refused("x5u-elsewhere", _x5u, _UNKNOWN_KID),
    refused("embedded-jwk", _embedded_jwk, _UNKNOWN_KID),
    refused("embedded-jwk-with-our-kid", _embedded_jwk_our_kid, _BAD_SIGNATURE),
    refused("jws-json-general", _json_serialization, _NOT_BEARER),
    refused("jws-json-flattened", _flattened_json, _NOT_BEARER),
    refused("two-parts", _two_parts, "three dot-separated parts"),
    refused("four-parts", _four_parts, "three dot-separated parts"),
    refused("padded-signature", _padded_signature, "signature is not base64url"),
    refused("padded-header", _padded_header, _NOT_BEARER),
    refused("space-inside-token", _inner_space, _NOT_BEARER),
    refused("tab-after-scheme", _tab_separator, _NOT_BEARER),
    refused("duplicate-claim", _duplicate_claim, "duplicate member 'sub'", path="/admin/x"),
    refused("duplicate-header-member", _duplicate_header, "duplicate member 'alg'"),
    refused("basic-scheme", _basic, _NOT_BEARER),
    ok("lower-case-bearer", lambda w: bearer(w.token(), scheme="bearer")),
    refused(
        "two-proxy-authorization",
        _two_headers,
        "more than one Proxy-Authorization",
        400,
        "bad-request",
    ),
    ok("permissions-admin", lambda w: bearer(w.token(permissions=["admin"])), path="/admin/x"),
    ok(
        "permissions-as-scope-string",
        lambda w: bearer(w.token(permissions="read admin")),
        path="/admin/x",
    ),
    refused(
        "permissions-as-object",
        lambda w: bearer(w.token(permissions={"admin": True})),
        "neither a string nor a list",
        path="/admin/x",
    ),
    refused(
        "permissions-mixed-list",
        lambda w: bearer(w.token(permissions=["admin", 1])),
        "neither a string nor a list",
        path="/admin/x",
    ),
    refused(
        "permissions-trailing-space",
        lambda w: bearer(w.token(permissions=["admin "])),
        "lacks permission admin",
        403,
        "permission-denied",
        path="/admin/x",
    ),
    refused(
        "permissions-other-case",
        lambda w: bearer(w.token(permissions=["Admin"])),
        "lacks permission admin",
        403,
        "permission-denied",
        path="/admin/x",
    ),
    refused("rsa-1024-in-jwks", _weak_key, _UNKNOWN_KID),
    refused("oct-key-hs256", _oct_hs256, "'HS256' is not accepted"),
    refused("oct-kid-rs256", _oct_kid_rs256, _UNKNOWN_KID),
    ok(
        "anonymous-route-ignores-expired",
        lambda w: bearer(w.token(exp=_ago(3600), iat=_ago(3700))),
        path="/open/x",
        sub="",
    ),
]


# Cases whose header holds no syntactically valid Bearer credential (RFC 6750 §2.1 b64token).
NO_TOKEN_READ = frozenset(
    {
        "no-credential",
        "basic-scheme",
        "jws-json-general",
        "jws-json-flattened",
        "padded-header",
        "space-inside-token",
        "tab-after-scheme",
    }
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_token_http1(setup: Setup, case: Case) -> None:
    be, world = setup.backend, setup.world
    before = len(be.requests)
    attacker_hits = len(setup.attacker.hits)
    resp = await send(setup.edge.port(), case.path, case.headers(world))
    assert resp.status == case.status, (resp.status, resp.header("x-kedge-error"))
    assert resp.header("x-kedge-error-type") == case.kind, resp.header("x-kedge-error")
    assert case.reason in (resp.header("x-kedge-error") or ""), resp.header("x-kedge-error")
    # The edge never fetches a key from where a token says (jku, x5u): only its own JWKS.
    assert len(setup.attacker.hits) == attacker_hits
    if case.kind is not None:
        assert len(be.requests) == before, "a refused request reached the backend"
    if case.status == 401:
        challenge = resp.header("proxy-authenticate") or ""
        assert challenge.startswith('Bearer realm="kedge"'), resp.headers
        assert resp.header("www-authenticate") is None
        # A token that was read but failed verification is named as such (RFC 6750 §3.1);
        # a header that holds no Bearer token at all gets the plain challenge.
        assert ('error="invalid_token"' in challenge) == (case.id not in NO_TOKEN_READ), challenge
    if case.status == 200:
        assert len(be.requests) == before + 1
        req = be.requests[-1]
        assert req.target == case.path
        assert req.header("proxy-authorization") is None
        assert req.header("authorization") is None
        principal = req.header_all("x-kedge-principal")
        assert principal == ([f"op/{case.sub}"] if case.sub else []), principal


# --- gRPC --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcCase:
    id: str
    token: Callable[[World], str]
    code: grpc.StatusCode
    kind: str | None
    method: str = "SayHello"


def _raw_token(headers: Headers) -> Callable[[World], str]:
    return lambda w: headers(w)[0][1].split(" ", 1)[1]


OK, UNAUTHENTICATED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def grpc_case(id: str, token: Callable[[World], str], code: grpc.StatusCode) -> GrpcCase:
    kind = {OK: None, UNAUTHENTICATED: UNAUTH, DENIED: "permission-denied"}[code]
    return GrpcCase(id, token, code, kind)


GRPC_CASES = [
    grpc_case("valid", lambda w: w.token(), OK),
    grpc_case("expired", lambda w: w.token(exp=_ago(3600), iat=_ago(3700)), UNAUTHENTICATED),
    grpc_case("wrong-audience", lambda w: w.token(aud="other"), UNAUTHENTICATED),
    grpc_case("unknown-kid", lambda w: w.token(header={"kid": "nope"}), UNAUTHENTICATED),
    grpc_case("alg-none", _raw_token(_alg_none_signed), UNAUTHENTICATED),
    grpc_case("hs256-with-rsa-public-pem", _raw_token(_hs_with_public_pem), UNAUTHENTICATED),
    grpc_case("tampered-signature", _raw_token(_tamper_signature), UNAUTHENTICATED),
    GrpcCase(
        "over-max-token-bytes", _raw_token(_oversized), UNAUTHENTICATED, "credential-too-large"
    ),
    GrpcCase("permissions-admin", lambda w: w.token(permissions=["admin"]), OK, None, "Ping"),
    GrpcCase(
        "permissions-trailing-space",
        lambda w: w.token(permissions=["admin "]),
        DENIED,
        "permission-denied",
        "Ping",
    ),
]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[c.id for c in GRPC_CASES])
async def test_hostile_token_grpc(setup: Setup, case: GrpcCase) -> None:
    server = setup.grpc
    before = len(server.calls)
    metadata = (("proxy-authorization", f"Bearer {case.token(setup.world)}"),)
    request = hello_pb2.HelloRequest(name="x")
    async with grpc_channel(f"127.0.0.1:{setup.edge.port()}", authority="grpc.test") as ch:
        if case.method == "Ping":
            call = hello_pb2_grpc.OtherStub(ch).Ping(request, metadata=metadata, timeout=5)
        else:
            call = hello_pb2_grpc.GreeterStub(ch).SayHello(request, metadata=metadata, timeout=5)
        if case.code is grpc.StatusCode.OK:
            reply = await call
            assert reply.name == "g:x"
            assert len(server.calls) == before + 1
            seen = server.calls[-1][1]
            assert "proxy-authorization" not in seen and "authorization" not in seen
            assert seen.get("x-kedge-principal") == "op/svc-a"
            return
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
    err = info.value
    assert err.code() is case.code, (err.code(), err.details())
    trailers = dict(err.trailing_metadata() or ())
    assert trailers.get("x-kedge-error-type") == case.kind
    assert len(server.calls) == before, "a refused call reached the servicer"


# --- the JWKS endpoint misbehaving --------------------------------------------------------


async def test_jwks_garbage_keeps_the_old_keys() -> None:
    """Each bad answer from the JWKS endpoint is fetched (an unknown kid forces a refresh)
    and refused; the keys the edge had keep verifying tokens, and nothing bad gets in."""
    good = Key.of(rsa_key("good-1"))
    newcomer = Key.of(rsa_key("new-1"))
    weak = Key.of(rsa_key("weak-1", bits=1024))
    async with key_server() as keys, key_server() as elsewhere, recording_backend() as be:
        keys.serve_jwks([good.public_jwk])
        elsewhere.serve_jwks([newcomer.public_jwk])
        world = World(keys.url, elsewhere.url, good, good, good, b"", newcomer)
        yaml_text = edge_yaml(keys.url, be.address, "127.0.0.1:9", "unknown_kid_cooldown: 0s")
        async with running_edge(yaml_text) as edge:
            port = edge.port()
            resp = await send(port, "/any/x", bearer(world.token()))
            assert resp.status == 200, resp.header("x-kedge-error")

            unusable = [weak.public_jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "new-1"}]
            twice = [newcomer.public_jwk, {**good.public_jwk, "kid": "new-1"}]
            huge = {"keys": [good.public_jwk, newcomer.public_jwk], "pad": "x" * (2 << 20)}
            bad_answers: list[tuple[str, Callable[[], None]]] = [
                ("html", lambda: keys.answer(200, b"<html>maintenance</html>", "text/html")),
                ("not-json", lambda: keys.answer(200, b'{"keys": [')),
                ("huge", lambda: keys.answer(200, js(huge))),
                ("no-keys", lambda: keys.answer(200, js({"keys": []}))),
                ("not-a-set", lambda: keys.answer(200, js([newcomer.public_jwk]))),
                ("only-unusable", lambda: keys.answer(200, js({"keys": unusable}))),
                ("duplicate-kid", lambda: keys.answer(200, js({"keys": twice}))),
                ("server-error", lambda: keys.answer(500, js({"keys": [newcomer.public_jwk]}))),
                ("redirect", lambda: keys.answer(302, b"", location=f"{elsewhere.url}/jwks")),
            ]
            for name, serve in bad_answers:
                serve()
                hits = len(keys.hits)
                before = len(be.requests)
                # A token by a key the edge has never seen makes it refresh now...
                resp = await send(port, "/any/x", bearer(world.token(newcomer)))
                assert len(keys.hits) == hits + 1, (name, keys.hits)
                assert resp.status == 401, (name, resp.status, resp.header("x-kedge-error"))
                assert resp.header("x-kedge-error-type") == UNAUTH
                # ...and the bad answer replaced nothing: the old key still verifies.
                resp = await send(port, "/any/x", bearer(world.token()))
                assert resp.status == 200, (name, resp.status, resp.header("x-kedge-error"))
                assert len(be.requests) == before + 1, name
            assert elsewhere.hits == [], "a redirect of the JWKS URL was followed"

            # Once the endpoint serves a good set again, the new key is picked up.
            keys.serve_jwks([good.public_jwk, newcomer.public_jwk])
            resp = await send(port, "/any/x", bearer(world.token(newcomer)))
            assert resp.status == 200, resp.header("x-kedge-error")
