"""OIDC auth end to end: tokens from the real oidc-provider presented to a real edge.

Tokens come from the client_credentials grant and from the scripted login (its access token,
`aud` kedge, and its ID token, `aud` = the login client, which this edge's issuer also
accepts). They travel over HTTP/1.1 (curl, aiohttp), HTTP/2 (curl with prior knowledge on
the plaintext listener, curl with ALPN over TLS) and gRPC (grpcio over h2c and TLS, in
`proxy-authorization` metadata or, on listeners reading `authorization`, as call
credentials). Each test asserts the status, `X-Kedge-Error-Type`, the challenge where
there is one, and what the backend received: nothing for a refusal; for an admission no
edge credential, no client-forged identity header, and the edge's own identity header.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
import pytest_asyncio

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_hello_server
from tests.support.oidc_provider import OidcAccount, OidcClient, OidcProvider, rsa_key
from tests.support.ops_client import admin_get, curl, metric_value
from tests.support.pki import TestPki

pytestmark = pytest.mark.asyncio(loop_scope="module")

IDENTITY = "x-kedge-principal"
CHALLENGE = 'Bearer realm="kedge"'
SVC = OidcClient(
    "svc",
    "svc-secret",
    claims={
        "permissions": ["svc.read", "svc.write"],
        "groups": ["ops"],
        "kedge": {"perms": ["nested.read"]},
    },
)
BARE = OidcClient("bare", "bare-secret")  # no permissions, no groups
CLI = OidcClient("kedge-cli", login=True)  # public client: PKCE, no secret
ALICE = OidcAccount(
    "alice",
    "correct horse",
    claims={"permissions": ["svc.read"], "groups": ["dev"], "kedge": {"perms": ["nested.write"]}},
)


@dataclass(frozen=True)
class Tokens:
    svc: str  # client_credentials: svc.read svc.write, group ops
    bare: str  # client_credentials: nothing
    alice_at: str  # login access token, aud kedge: svc.read, group dev
    alice_id: str  # login ID token, aud kedge-cli: same claims

    def get(self, kind: str) -> str:
        token: str = getattr(self, kind)
        return token


SUBJECT = {"svc": "svc", "bare": "bare", "alice_at": "alice", "alice_id": "alice"}


@dataclass
class Env:
    op: OidcProvider
    tokens: Tokens
    pki: TestPki
    edge: RunningEdge
    backend: RecordingBackend
    grpc: GrpcServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def op(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OidcProvider]:
    async with OidcProvider.start(
        tmp_path_factory.mktemp("op"), clients=[SVC, BARE, CLI], accounts=[ALICE]
    ) as provider:
        yield provider


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tokens(op: OidcProvider) -> Tokens:
    login = await op.login("kedge-cli", "alice", "correct horse")
    return Tokens(
        svc=await op.client_credentials("svc", "svc-secret"),
        bare=await op.client_credentials("bare", "bare-secret"),
        alice_at=login["access_token"],
        alice_id=login["id_token"],
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"))


def edge_yaml(pki: TestPki, issuer: str, web: str, grpc_backend: str) -> str:
    tls = f"{{cert_file: {pki.server.chain}, key_file: {pki.server.key}}}"
    return f"""
listeners:
  - {{name: http, address: 127.0.0.1:0}}
  - {{name: bearer, address: 127.0.0.1:0, credentials: [authorization]}}
  - {{name: both, address: 127.0.0.1:0, credentials: [proxy_authorization, authorization]}}
  - {{name: https, address: 127.0.0.1:0, tls: {tls}}}
  - {{name: https-bearer, address: 127.0.0.1:0, tls: {tls}, credentials: [authorization]}}
admin: {{address: 127.0.0.1:0}}
backends:
  - {{name: web, resolver: {{static: {{endpoints: ["{web}"]}}}}}}
  - name: grpc
    protocol: h2c
    resolver: {{static: {{endpoints: ["{grpc_backend}"]}}}}
routes:
  - name: greeter
    backend: grpc
    match: {{grpc_methods: ["kedge.e2e.Greeter/*"]}}
    auth: {{permissions: [svc.read]}}
  - name: other
    backend: grpc
    match: {{grpc_methods: [kedge.e2e.Other]}}
    auth: {{permissions: [svc.admin]}}
  - {{name: open, backend: web, match: {{paths: ["/open/*"]}}, auth: {{anonymous: true}}}}
  - {{name: read, backend: web, match: {{paths: ["/read/*"]}}, auth: {{permissions: [svc.read]}}}}
  - name: any
    backend: web
    match: {{paths: ["/any/*"]}}
    auth: {{permissions: {{any_of: [svc.admin, svc.write]}}}}
  - name: all
    backend: web
    match: {{paths: ["/all/*"]}}
    auth: {{permissions: {{all_of: [svc.read, svc.write]}}}}
  - {{name: ops, backend: web, match: {{paths: ["/ops/*"]}}, auth: {{principals: ["group:ops"]}}}}
  - {{name: svc, backend: web, match: {{paths: ["/svc/*"]}}, auth: {{principals: ["sub:svc"]}}}}
  - {{name: authn, backend: web, match: {{paths: ["/authn/*"]}}, auth: {{}}}}
  - {{name: fallback, backend: web}}
auth:
  identity_header: {IDENTITY}
  strip_headers: [x-user]
  default_route: {{principals: ["group:dev"]}}
  issuers:
    - {{name: op, issuer: "{issuer}", audiences: [kedge, kedge-cli], jwks_ttl: 5m}}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_env(op: OidcProvider, tokens: Tokens, pki: TestPki) -> AsyncIterator[Env]:
    async with (
        recording_backend() as backend,
        grpc_hello_server(name="g") as server,
        running_edge(edge_yaml(pki, op.issuer, backend.address, server.address)) as edge,
    ):
        yield Env(op, tokens, pki, edge, backend, server)


@pytest_asyncio.fixture(loop_scope="module")
async def env(module_env: Env) -> Env:
    """The module's edge with empty recordings: each test sees only its own requests."""
    module_env.backend.requests.clear()
    module_env.grpc.calls.clear()
    return module_env


# ---------------------------------------------------------------------------------------
# HTTP clients


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # names lower-case
    body: bytes
    version: str  # "1.1" or "2"

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


TRANSPORTS = ["curl-h1", "aiohttp-h1", "curl-h2c", "curl-h2-tls"]
# listener by credential flavour and by TLS
LISTENERS = {("proxy", False): "http", ("proxy", True): "https"}
LISTENERS |= {("bearer", False): "bearer", ("bearer", True): "https-bearer"}
LISTENERS |= {("both", False): "both"}


def credential(flavour: str, token: str) -> dict[str, str]:
    name = "Authorization" if flavour == "bearer" else "Proxy-Authorization"
    return {name: f"Bearer {token}"}


async def send(
    env: Env,
    path: str,
    headers: Mapping[str, str] = {},
    *,
    transport: str = "aiohttp-h1",
    flavour: str = "proxy",
) -> Reply:
    """GET `path` from the edge over `transport`, on the listener of `flavour`."""
    tls = transport == "curl-h2-tls"
    port = env.edge.port(LISTENERS[(flavour, tls)])
    if transport == "aiohttp-h1":
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{port}{path}", headers=dict(headers)) as resp,
        ):
            pairs = [(k.lower(), v) for k, v in resp.headers.items()]
            assert resp.version is not None
            version = f"{resp.version.major}.{resp.version.minor}"
            return Reply(resp.status, pairs, await resp.read(), version)
    args = [a for name, value in headers.items() for a in ("-H", f"{name}: {value}")]
    args += ["-w", "\n%{http_version}"]
    if transport == "curl-h1":
        args += ["--http1.1", f"http://127.0.0.1:{port}{path}"]
    elif transport == "curl-h2c":
        args += ["--http2-prior-knowledge", f"http://127.0.0.1:{port}{path}"]
    else:
        args += ["--http2", "--cacert", str(env.pki.ca.cert)]
        args += ["--resolve", f"edge.test:{port}:127.0.0.1", f"https://edge.test:{port}{path}"]
    res = await curl(*args)
    assert res.returncode == 0, res.stderr
    body, _, written = res.body.rpartition(b"\n")  # -w appends the protocol version
    return Reply(res.status, res.headers, body, written.decode())


EXPECTED_VERSION = {"curl-h1": "1.1", "aiohttp-h1": "1.1", "curl-h2c": "2", "curl-h2-tls": "2"}


def assert_admitted(env: Env, reply: Reply, principal: str | None) -> None:
    """200 from the backend, which saw no edge credential and the edge's identity only."""
    assert reply.status == 200, (reply.status, reply.header("x-kedge-error"))
    assert reply.body == b"hello from backend"
    assert reply.header("x-kedge-error-type") is None
    (req,) = env.backend.requests
    assert req.header("proxy-authorization") is None
    assert req.header_all(IDENTITY) == ([principal] if principal else [])
    assert req.header("x-forwarded-client-cert") is None
    assert req.header("x-user") is None


def assert_refused(env: Env, reply: Reply, status: int, kind: str) -> None:
    assert reply.status == status, (reply.status, reply.header("x-kedge-error"))
    assert reply.header("x-kedge-error-type") == kind
    assert env.backend.requests == []


def expired_token(op: OidcProvider) -> str:
    """Signed by the provider's own key, expired an hour ago (far past the 60 s leeway)."""
    now = int(time.time())
    claims = {"iss": op.issuer, "aud": "kedge", "sub": "svc", "iat": now - 7200, "exp": now - 3600}
    return op.keys.signer("RS256").sign(claims)


def tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    flipped = ("A" if sig[5] != "A" else "B") + sig[6:]
    return f"{head}.{payload}.{sig[:5]}{flipped}"


FORGED = {"X-Kedge-Principal": "op/root", "X-Forwarded-Client-Cert": "Hash=evil", "X-User": "root"}


# ---------------------------------------------------------------------------------------
# Every token source over every HTTP transport


@pytest.mark.parametrize("kind", ["svc", "alice_at", "alice_id"])
@pytest.mark.parametrize("flavour", ["proxy", "bearer"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_token_admitted_over_http(env: Env, transport: str, flavour: str, kind: str) -> None:
    headers = {**credential(flavour, env.tokens.get(kind)), **FORGED}
    reply = await send(env, "/read/x?q=1", headers, transport=transport, flavour=flavour)
    assert reply.version == EXPECTED_VERSION[transport]
    assert_admitted(env, reply, f"op/{SUBJECT[kind]}")
    (req,) = env.backend.requests
    assert req.target == "/read/x?q=1"
    # The edge's token in Authorization is the edge's credential: it never reaches the backend.
    assert req.header("authorization") is None


@pytest.mark.parametrize("flavour", ["proxy", "bearer"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_refusals_over_http(env: Env, transport: str, flavour: str) -> None:
    challenge_header = "proxy-authenticate" if flavour == "proxy" else "www-authenticate"
    other_header = "www-authenticate" if flavour == "proxy" else "proxy-authenticate"

    reply = await send(env, "/read/x", FORGED, transport=transport, flavour=flavour)
    assert_refused(env, reply, 401, "unauthenticated")
    assert reply.header(challenge_header) == CHALLENGE
    assert reply.header(other_header) is None

    for bad in (tampered(env.tokens.svc), expired_token(env.op)):
        reply = await send(
            env, "/read/x", credential(flavour, bad), transport=transport, flavour=flavour
        )
        assert_refused(env, reply, 401, "unauthenticated")
        value = reply.header(challenge_header) or ""
        assert value.startswith(CHALLENGE + ', error="invalid_token", error_description="')
        assert reply.header(other_header) is None

    # Authenticated but not allowed: 403 and no challenge.
    reply = await send(
        env,
        "/all/x",
        credential(flavour, env.tokens.alice_at),
        transport=transport,
        flavour=flavour,
    )
    assert_refused(env, reply, 403, "permission-denied")
    assert "op/alice lacks permission svc.read and svc.write" in (
        reply.header("x-kedge-error") or ""
    )
    assert reply.header(challenge_header) is None


# ---------------------------------------------------------------------------------------
# Route policies

# (path, token kind or None, status); 401/403 never reach the backend.
POLICY_CASES = [
    ("/open/x", None, 200),
    ("/open/x", "svc", 200),
    ("/open/x", "garbage", 200),  # anonymous routes do not look at tokens
    ("/open/x", "basic", 200),  # nor at other schemes
    ("/read/x", None, 401),
    ("/read/x", "svc", 200),
    ("/read/x", "alice_at", 200),
    ("/read/x", "bare", 403),
    ("/any/x", "svc", 200),  # any_of [svc.admin, svc.write]: has svc.write
    ("/any/x", "alice_at", 403),
    ("/any/x", "bare", 403),
    ("/all/x", "svc", 200),  # all_of [svc.read, svc.write]
    ("/all/x", "alice_at", 403),  # svc.read only
    ("/ops/x", "svc", 200),  # group:ops
    ("/ops/x", "alice_at", 403),  # group dev
    ("/ops/x", "bare", 403),
    ("/svc/x", "svc", 200),  # sub:svc
    ("/svc/x", "alice_id", 403),
    ("/svc/x", "bare", 403),
    ("/authn/x", "bare", 200),  # auth: {}: any authenticated caller
    ("/authn/x", "alice_id", 200),
    ("/authn/x", None, 401),
    ("/elsewhere", "alice_at", 200),  # default_route: group:dev
    ("/elsewhere", "alice_id", 200),
    ("/elsewhere", "svc", 403),
    ("/elsewhere", "bare", 403),
    ("/elsewhere", None, 401),
]


@pytest.mark.parametrize(("path", "kind", "status"), POLICY_CASES)
async def test_route_policy(env: Env, path: str, kind: str | None, status: int) -> None:
    headers = dict(FORGED)
    if kind == "garbage":
        headers |= credential("proxy", "not.a.token")
    elif kind == "basic":
        headers["Proxy-Authorization"] = "Basic dTpw"
    elif kind is not None:
        headers |= credential("proxy", env.tokens.get(kind))
    reply = await send(env, path, headers)
    if status == 200:
        # Anonymous routes authenticate nobody, so the edge names nobody to the backend.
        anonymous = path.startswith("/open/")
        assert_admitted(env, reply, None if anonymous or kind is None else f"op/{SUBJECT[kind]}")
    elif status == 401:
        assert_refused(env, reply, 401, "unauthenticated")
        assert reply.header("proxy-authenticate") == CHALLENGE
    else:
        assert_refused(env, reply, 403, "permission-denied")
        assert reply.header("proxy-authenticate") is None


async def test_nested_permissions_claim_and_audiences(
    op: OidcProvider, tokens: Tokens, pki: TestPki
) -> None:
    """`permissions_claim: kedge.perms` reads the nested claim (and only it); an issuer whose
    audiences do not include the login client refuses that client's ID token."""
    async with recording_backend() as backend:
        yaml = f"""
listeners: [{{name: http, address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
backends: [{{name: web, resolver: {{static: {{endpoints: ["{backend.address}"]}}}}}}]
routes:
  - {{name: nested, backend: web, match: {{paths: ["/nested/*"]}},
      auth: {{permissions: [nested.read]}}}}
  - {{name: flat, backend: web, match: {{paths: ["/flat/*"]}}, auth: {{permissions: [svc.read]}}}}
  - {{name: ops, backend: web, match: {{paths: ["/ops/*"]}}, auth: {{principals: ["group:ops"]}}}}
auth:
  identity_header: {IDENTITY}
  issuers:
    - {{name: corp, issuer: "{op.issuer}", audiences: [kedge], permissions_claim: kedge.perms}}
"""
        async with running_edge(yaml) as edge:
            cases = [
                ("/nested/x", tokens.svc, 200),  # kedge.perms [nested.read]
                ("/nested/x", tokens.alice_at, 403),  # kedge.perms [nested.write]
                ("/flat/x", tokens.svc, 403),  # top-level permissions are not read any more
                ("/ops/x", tokens.svc, 200),  # groups still come from `groups`
                ("/nested/x", tokens.alice_id, 401),  # aud kedge-cli is not accepted here
            ]
            url = f"http://127.0.0.1:{edge.port()}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                for path, token, status in cases:
                    backend.requests.clear()
                    headers = {"Proxy-Authorization": f"Bearer {token}"}
                    async with http.get(url + path, headers=headers) as resp:
                        assert resp.status == status, (path, resp.headers.get("x-kedge-error"))
                    if status == 200:
                        (req,) = backend.requests
                        assert req.header(IDENTITY) == "corp/svc"
                        assert req.header("proxy-authorization") is None
                    else:
                        assert backend.requests == []
                        kind = "unauthenticated" if status == 401 else "permission-denied"
                        assert resp.headers["x-kedge-error-type"] == kind
                    if status == 401:
                        assert resp.headers["proxy-authenticate"].startswith(
                            CHALLENGE + ', error="invalid_token"'
                        )


# ---------------------------------------------------------------------------------------
# Which Authorization reaches the backend


def foreign_jwt() -> str:
    """A valid-looking JWT from an issuer this edge does not know: the backend's business."""
    now = int(time.time())
    claims = {"iss": "https://idp.other.test", "aud": "kedge", "sub": "x", "exp": now + 60}
    return rsa_key().sign(claims)


@pytest.mark.parametrize(
    ("flavour", "path"),
    [("proxy", "/read/x"), ("both", "/read/x"), ("bearer", "/open/x"), ("both", "/open/x")],
)
@pytest.mark.parametrize("backend_auth", ["Bearer backend-secret", "foreign-jwt", "Basic dTpw"])
async def test_backend_authorization_passes_untouched(
    env: Env, flavour: str, path: str, backend_auth: str
) -> None:
    value = f"Bearer {foreign_jwt()}" if backend_auth == "foreign-jwt" else backend_auth
    headers = {"Authorization": value}
    if path == "/read/x":
        headers |= credential("proxy", env.tokens.svc)
    for transport in ("aiohttp-h1", "curl-h2c"):
        env.backend.requests.clear()
        reply = await send(env, path, headers, transport=transport, flavour=flavour)
        assert_admitted(env, reply, "op/svc" if path == "/read/x" else None)
        (req,) = env.backend.requests
        assert req.header_all("authorization") == [value]


async def test_foreign_authorization_is_not_the_edge_credential(env: Env) -> None:
    """On a listener that reads `Authorization`, a token that is not the edge's proves
    nothing: the route still answers 401, and the backend gets nothing."""
    for value in ("Bearer backend-secret", f"Bearer {foreign_jwt()}"):
        reply = await send(env, "/read/x", {"Authorization": value}, flavour="bearer")
        assert_refused(env, reply, 401, "unauthenticated")
        assert reply.header("www-authenticate") == CHALLENGE


@pytest.mark.parametrize("transport", ["aiohttp-h1", "curl-h2c"])
async def test_second_edge_token_in_authorization_is_stripped(env: Env, transport: str) -> None:
    """On a listener that reads both headers, Proxy-Authorization wins, and a token of the
    edge's in Authorization is the edge's credential as well: it does not reach the backend."""
    headers = {
        **credential("proxy", env.tokens.svc),
        "Authorization": f"Bearer {env.tokens.alice_at}",
    }
    reply = await send(env, "/read/x", headers, transport=transport, flavour="both")
    assert_admitted(env, reply, "op/svc")
    (req,) = env.backend.requests
    assert req.header("authorization") is None


async def test_edge_token_stripped_on_anonymous_routes(env: Env) -> None:
    for flavour in ("proxy", "bearer", "both"):
        env.backend.requests.clear()
        reply = await send(env, "/open/x", credential(flavour, env.tokens.svc), flavour=flavour)
        assert_admitted(env, reply, None)
        (req,) = env.backend.requests
        assert req.header("authorization") is None


# ---------------------------------------------------------------------------------------
# gRPC

# How the token travels: (listener, TLS, how)
GRPC_WAYS = {
    "h2c-proxy-metadata": ("http", False, "proxy-metadata"),
    "tls-proxy-metadata": ("https", True, "proxy-metadata"),
    "h2c-authorization-metadata": ("bearer", False, "authorization-metadata"),
    "tls-call-credentials": ("https-bearer", True, "call-credentials"),
}


def grpc_connect(env: Env, way: str, token: str | None) -> tuple[grpc.aio.Channel, Any]:
    """A channel for `way` and the metadata to send with each call."""
    listener, tls, how = GRPC_WAYS[way]
    target = f"127.0.0.1:{env.edge.port(listener)}"
    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_retries", 0),
        ("grpc.enable_http_proxy", 0),
        ("grpc.ssl_target_name_override", "edge.test"),
    ]
    metadata: list[tuple[str, str]] = []
    if token is not None and how == "proxy-metadata":
        metadata.append(("proxy-authorization", f"Bearer {token}"))
    if token is not None and how == "authorization-metadata":
        metadata.append(("authorization", f"Bearer {token}"))
    if not tls:
        return grpc.aio.insecure_channel(target, options=options[:3]), metadata
    creds = grpc.ssl_channel_credentials(root_certificates=env.pki.ca.cert.read_bytes())
    if token is not None and how == "call-credentials":
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return grpc.aio.secure_channel(target, creds, options=options), metadata


@pytest.mark.parametrize("kind", ["svc", "alice_at", "alice_id"])
@pytest.mark.parametrize("way", list(GRPC_WAYS))
async def test_grpc_admitted(env: Env, way: str, kind: str) -> None:
    channel, metadata = grpc_connect(env, way, env.tokens.get(kind))
    async with channel:
        stub = hello_pb2_grpc.GreeterStub(channel)
        forged = [("x-kedge-principal", "op/root"), ("x-forwarded-client-cert", "evil")]
        reply = await stub.SayHello(
            hello_pb2.HelloRequest(name="hi"), metadata=[*metadata, *forged], timeout=5
        )
        assert reply.name == "g:hi"
        stream = stub.ServerStream(
            hello_pb2.StreamRequest(name="s", count=3), metadata=metadata, timeout=5
        )
        assert [r.count async for r in stream] == [0, 1, 2]
    assert env.grpc.methods() == ["/kedge.e2e.Greeter/SayHello", "/kedge.e2e.Greeter/ServerStream"]
    for _, seen in env.grpc.calls:
        # The edge's credential never reaches the servicer, in either metadata key.
        assert "proxy-authorization" not in seen
        assert "authorization" not in seen
        assert seen[IDENTITY] == f"op/{SUBJECT[kind]}"
        assert "x-forwarded-client-cert" not in seen


# (token kind, method, code, details fragment, error kind)
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
GRPC_REFUSALS = [
    (None, "SayHello", UNAUTHENTICATED, "no credential", "unauthenticated"),
    ("tampered", "SayHello", UNAUTHENTICATED, "invalid bearer token", "unauthenticated"),
    ("expired", "SayHello", UNAUTHENTICATED, "invalid bearer token", "unauthenticated"),
    ("bare", "SayHello", DENIED, "op/bare lacks permission svc.read", "permission-denied"),
    ("svc", "Ping", DENIED, "op/svc lacks permission svc.admin", "permission-denied"),
]


@pytest.mark.parametrize(
    ("kind", "method", "code", "details", "error_kind"),
    GRPC_REFUSALS,
    ids=[f"{k}-{m}" for k, m, *_ in GRPC_REFUSALS],
)
@pytest.mark.parametrize("way", list(GRPC_WAYS))
async def test_grpc_refused(
    env: Env,
    way: str,
    kind: str | None,
    method: str,
    code: grpc.StatusCode,
    details: str,
    error_kind: str,
) -> None:
    token = {"tampered": tampered(env.tokens.svc), "expired": expired_token(env.op)}.get(
        kind or "", env.tokens.get(kind) if kind in SUBJECT else None
    )
    channel, metadata = grpc_connect(env, way, token)
    async with channel:
        request = hello_pb2.HelloRequest(name="hi")
        if method == "Ping":
            call = hello_pb2_grpc.OtherStub(channel).Ping(request, metadata=metadata, timeout=5)
        else:
            call = hello_pb2_grpc.GreeterStub(channel).SayHello(
                request, metadata=metadata, timeout=5
            )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
    assert err.value.code() == code
    assert details in (err.value.details() or "")
    trailing = dict(err.value.trailing_metadata() or ())
    assert trailing.get("x-kedge-error-type") == error_kind
    assert env.grpc.calls == []  # the servicer was never called


async def test_grpc_backend_authorization_passes_untouched(env: Env) -> None:
    """A backend's own `authorization` metadata is not the edge's: it reaches the servicer,
    while the edge's `proxy-authorization` does not."""
    for way in ("h2c-proxy-metadata", "tls-proxy-metadata"):
        env.grpc.calls.clear()
        channel, metadata = grpc_connect(env, way, env.tokens.svc)
        async with channel:
            reply = await hello_pb2_grpc.GreeterStub(channel).SayHello(
                hello_pb2.HelloRequest(name="b"),
                metadata=[*metadata, ("authorization", "Bearer backend-secret")],
                timeout=5,
            )
        assert reply.name == "g:b"
        ((_, seen),) = env.grpc.calls
        assert seen["authorization"] == "Bearer backend-secret"
        assert "proxy-authorization" not in seen
        assert seen[IDENTITY] == "op/svc"


# ---------------------------------------------------------------------------------------
# Logs and metrics


def log_entries(edge: RunningEdge, request_id: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in edge.log_lines()]
    return [line for line in lines if line.get("request_id") == request_id]


async def decisions(edge: RunningEdge) -> str:
    assert edge.app.admin is not None
    status, body = await admin_get(edge.app.admin.bound_port, "/metrics")
    assert status == 200
    return body.decode()


def decision_count(text: str, route: str, verdict: str) -> float:
    return metric_value(text, "kedge_auth_decisions_total", route=route, verdict=verdict) or 0.0


async def test_decisions_are_logged_and_counted(env: Env) -> None:
    edge = env.edge
    before = await decisions(edge)
    # (path, token, status, route, verdict, principal)
    cases = [
        ("/read/x", env.tokens.svc, 200, "read", "allow", "op/svc"),
        ("/all/x", env.tokens.alice_at, 403, "all", "denied", "op/alice"),
        ("/read/x", None, 401, "read", "unauthenticated", None),
        ("/read/x", tampered(env.tokens.svc), 401, "read", "unauthenticated", None),
        ("/open/x", None, 200, "open", "anonymous", None),
    ]
    for path, token, status, route, verdict, principal in cases:
        request_id = f"auth-{uuid.uuid4().hex}"
        headers = {"X-Request-Id": request_id}
        if token is not None:
            headers |= credential("proxy", token)
        reply = await send(env, path, headers)
        assert reply.status == status
        entries = log_entries(edge, request_id)
        access = [e for e in entries if "status" in e]
        assert len(access) == 1, entries
        assert access[0]["status"] == status
        assert access[0]["route"] == route
        assert access[0]["principal"] == principal
        refused = [e for e in entries if e.get("message") == "auth refused"]
        if status in (401, 403):
            assert len(refused) == 1, entries
            event = refused[0]
            assert event["route"] == route
            assert event["verdict"] == verdict
            assert event["principal"] == principal
            assert event["reason"]
            if token is not None and status == 401:
                assert "invalid bearer token" in event["reason"]
        else:
            assert refused == []
    after = await decisions(edge)
    for route, verdict, count in [
        ("read", "allow", 1),
        ("all", "denied", 1),
        ("read", "unauthenticated", 2),
        ("open", "anonymous", 1),
    ]:
        delta = decision_count(after, route, verdict) - decision_count(before, route, verdict)
        assert delta == count, (route, verdict)


async def test_grpc_decisions_are_logged(env: Env) -> None:
    channel, metadata = grpc_connect(env, "h2c-proxy-metadata", env.tokens.bare)
    async with channel:
        stub = hello_pb2_grpc.GreeterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SayHello(hello_pb2.HelloRequest(name="x"), metadata=metadata, timeout=5)
        refused_id = dict(err.value.trailing_metadata() or ())["x-request-id"]
        good_id = f"auth-{uuid.uuid4().hex}"
        ok = stub.SayHello(
            hello_pb2.HelloRequest(name="y"),
            metadata=[*grpc_connect(env, "h2c-proxy-metadata", env.tokens.svc)[1],
                      ("x-request-id", good_id)],
            timeout=5,
        )  # fmt: skip
        await ok
    entries = log_entries(env.edge, str(refused_id))
    (event,) = [e for e in entries if e.get("message") == "auth refused"]
    assert (event["route"], event["verdict"]) == ("greeter", "denied")
    assert event["principal"] == "op/bare"
    assert "lacks permission svc.read" in event["reason"]
    (access,) = [e for e in entries if "status" in e]
    assert (access["route"], access["principal"]) == ("greeter", "op/bare")
    assert access["error_kind"] == "permission-denied"
    (access,) = [e for e in log_entries(env.edge, good_id) if "status" in e]
    assert (access["route"], access["principal"], access["status"]) == ("greeter", "op/svc", 200)
