"""mTLS through a real edge: client certificates from tests/support/pki.py, curl and grpcio.

One edge serves six TLS listeners that differ only in their client-certificate policy
(`required`; with a CRL; with an expired CRL; `no_eku: accept`; `optional`; and
`require_sni_match`). Clients are real: curl with `--cert/--key` (HTTP/1.1 and HTTP/2) and
grpcio with `ssl_channel_credentials(private_key=..., certificate_chain=...)`. Every refusal
is checked at the client (TLS failure, or status and `X-Kedge-Error-Type`) and at the
backend (nothing arrived); every admission checks the identity header the backend got.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_hello_server
from tests.support.oidc_provider import SigningKey, rsa_key
from tests.support.ops_client import CurlResult, curl
from tests.support.pki import SPIFFE_PREFIX, PkiCert, TestPki

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIENT_A = SPIFFE_PREFIX + "client-a"
CLIENT_B = SPIFFE_PREFIX + "client-b"
# curl's exit codes when the edge refuses the client's certificate. With TLS 1.3 the client
# finishes its side of the handshake before the server has checked its certificate, so the
# failure shows on the first send or read: 35 CURLE_SSL_CONNECT_ERROR, 52 CURLE_GOT_NOTHING,
# 55 CURLE_SEND_ERROR or 56 CURLE_RECV_ERROR, depending on timing.
TLS_REFUSED = (35, 52, 55, 56)


@dataclass
class Jwks:
    key: SigningKey
    port: int

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, sub: str = "svc-a", **claims: Any) -> str:
        now = int(dt.datetime.now(dt.UTC).timestamp())
        body = {"iss": self.issuer, "aud": "kedge", "sub": sub, "iat": now, "exp": now + 600}
        return self.key.sign({**body, **claims})


@asynccontextmanager
async def jwks_server(key: SigningKey) -> AsyncIterator[Jwks]:
    body = json.dumps({"keys": [key.public_jwk]}).encode()

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Jwks(key, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()


def listener(name: str, pki: TestPki, client_certs: str, extra: str = "") -> str:
    return f"""
  - name: {name}
    address: 127.0.0.1:0
    tls:
      cert_file: {pki.server.chain}
      key_file: {pki.server.key}
      client_certs: {client_certs}{extra}"""


SNI_MATCH = "\n      require_sni_match: true"


def edge_yaml(pki: TestPki, backend: str, grpc_backend: str, issuer: str) -> str:
    ca = pki.ca.cert
    return f"""
listeners:{listener("req", pki, f"{{mode: required, ca_files: [{ca}]}}")}\
{listener("crl", pki, f"{{ca_files: [{ca}], crl_files: [{pki.crl}]}}")}\
{listener("xcrl", pki, f"{{ca_files: [{ca}], crl_files: [{pki.expired_crl}]}}")}\
{listener("noeku", pki, f"{{ca_files: [{ca}], no_eku: accept}}")}\
{listener("opt", pki, f"{{mode: optional, ca_files: [{ca}]}}")}\
{listener("sni", pki, f"{{mode: optional, ca_files: [{ca}]}}", SNI_MATCH)}
admin: {{address: "127.0.0.1:0"}}
backends:
  - {{name: b, resolver: {{static: {{endpoints: ["{backend}"]}}}}}}
  - {{name: g, protocol: h2c, resolver: {{static: {{endpoints: ["{grpc_backend}"]}}}}}}
routes:
  - name: grpc-b-only
    backend: g
    match: {{grpc_methods: [kedge.e2e.Other/Ping]}}
    auth: {{principals: ["uri:{CLIENT_B}"]}}
  - {{name: grpc, backend: g, match: {{grpc_methods: ["*"]}}}}
  - {{name: open, backend: b, match: {{paths: ["/open/*"]}}, auth: {{anonymous: true}}}}
  - {{name: perm, backend: b, match: {{paths: ["/perm/*"]}}, auth: {{permissions: [svc.read]}}}}
  - name: only-a
    backend: b
    match: {{paths: ["/only-a/*"]}}
    auth: {{principals: ["uri:{CLIENT_A}"]}}
  - {{name: cn-b, backend: b, match: {{paths: ["/cn-b/*"]}}, auth: {{principals: ["cn:client-b"]}}}}
  - name: dns-a
    backend: b
    match: {{paths: ["/dns-a/*"]}}
    auth: {{principals: ["dns:client-a.test"]}}
  - name: apps
    backend: b
    match: {{paths: ["/apps/*"]}}
    auth: {{principals: ["uri:spiffe://cluster.test/ns/apps/*"]}}
  - {{name: any, backend: b}}
auth:
  identity_header: x-kedge-principal
  issuers:
    - {{name: op, issuer: "{issuer}", audiences: [kedge], jwks_url: "{issuer}/jwks"}}
"""


@dataclass
class Setup:
    edge: RunningEdge
    backend: RecordingBackend
    grpc: GrpcServer
    jwks: Jwks
    pki: TestPki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def extra(pki: TestPki) -> dict[str, PkiCert]:
    """More leaves, issued once for the module (the PKI refuses to overwrite a file)."""
    return {
        "outsider": pki.issue_client("outsider", uris=("spiffe://cluster.test/ns/other/sa/x",)),
        # A prefix pattern matches the pattern's whole text, '/' included.
        "lookalike": pki.issue_client(
            "lookalike", uris=("spiffe://cluster.test/ns/apps-evil/sa/x",)
        ),
        "dns-only": pki.issue_client("dns-only", dns=("Svc.Order.Test",)),
        "cn-only": pki.issue_client("cn-only"),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(pki: TestPki) -> AsyncIterator[Setup]:
    async with (
        jwks_server(rsa_key("mtls-1")) as jwks,
        recording_backend() as be,
        grpc_hello_server(name="g") as grpc_server,
    ):
        yaml_text = edge_yaml(pki, be.address, grpc_server.address, jwks.issuer)
        async with running_edge(yaml_text) as edge:
            yield Setup(edge, be, grpc_server, jwks, pki)


async def request(
    s: Setup,
    listener: str,
    path: str,
    cert: PkiCert | None = None,
    *args: str,
    host: str = "edge.test",
) -> CurlResult:
    """curl https://edge.test:<port><path> with `cert` (its chain file and key)."""
    port = s.edge.port(listener)
    client = ("--cert", str(cert.chain), "--key", str(cert.key)) if cert is not None else ()
    return await curl(
        "--cacert", str(s.pki.ca.cert), *client, "--resolve", f"{host}:{port}:127.0.0.1",
        *args, f"https://{host}:{port}{path}",
    )  # fmt: skip


def admitted(s: Setup, res: CurlResult, before: int, principal: str, path: str) -> None:
    assert res.returncode == 0, res.stderr
    assert res.status == 200, (res.status, res.header("x-kedge-error"))
    assert len(s.backend.requests) == before + 1
    req = s.backend.requests[-1]
    assert req.target == path
    assert req.header_all("x-kedge-principal") == ([principal] if principal else [])
    assert req.header("proxy-authorization") is None


def refused(s: Setup, res: CurlResult, before: int, status: int, kind: str) -> None:
    assert res.returncode == 0, res.stderr
    assert res.status == status, (res.status, res.header("x-kedge-error"))
    assert res.header("x-kedge-error-type") == kind
    assert len(s.backend.requests) == before, "a refused request reached the backend"


async def tls_refused(s: Setup, listener: str, cert: PkiCert | None, path: str = "/any/x") -> None:
    """The edge refuses this client in the TLS handshake: curl gets no response, a TLS 1.2
    client sees the handshake itself fail, and nothing reaches the backend."""
    before = len(s.backend.requests)
    res = await request(s, listener, path, cert, "--http1.1")
    assert res.returncode in TLS_REFUSED, (res.returncode, res.status, res.stderr)
    assert res.status == 0
    ctx = ssl.create_default_context(cafile=str(s.pki.ca.cert))
    # TLS 1.2: the server verifies the client's certificate before its Finished message.
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert.chain), str(cert.key))
    with pytest.raises((ssl.SSLError, ConnectionResetError, ConnectionAbortedError)):
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", s.edge.port(listener), ssl=ctx, server_hostname="edge.test"
            ),
            timeout=5,
        )
        writer.close()
    assert len(s.backend.requests) == before, "a refused client reached the backend"


# --- mode: required ----------------------------------------------------------------------


async def test_required_valid_client_gets_its_spiffe_id_as_principal(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "req", "/any/x", setup.pki.client)
    admitted(setup, res, before, CLIENT_A, "/any/x")


async def test_required_client_via_intermediate_with_its_chain(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "req", "/any/x", setup.pki.via_intermediate)
    admitted(setup, res, before, SPIFFE_PREFIX + "via-intermediate", "/any/x")
    # Without the intermediate in what the client sends, the chain cannot be built.
    leaf_only = dataclasses.replace(
        setup.pki.via_intermediate, chain=setup.pki.via_intermediate.cert
    )
    await tls_refused(setup, "req", leaf_only)


@pytest.mark.parametrize(
    "name", ["expired", "not_yet_valid", "unknown_ca", "server_eku_only", "revoked-no", None]
)
async def test_required_refuses_in_the_handshake(setup: Setup, name: str | None) -> None:
    before = len(setup.backend.requests)
    if name == "revoked-no":
        # The revoked certificate is fine where no CRL is configured: revocation is only
        # known from a CRL (checked below on the `crl` listener).
        res = await request(setup, "req", "/any/x", setup.pki.revoked)
        admitted(setup, res, before, SPIFFE_PREFIX + "revoked", "/any/x")
        return
    await tls_refused(setup, "req", getattr(setup.pki, name) if name is not None else None)


async def test_crl_refuses_the_revoked_and_admits_the_rest(setup: Setup) -> None:
    before = len(setup.backend.requests)
    await tls_refused(setup, "crl", setup.pki.revoked)
    res = await request(setup, "crl", "/any/x", setup.pki.client)
    admitted(setup, res, before, CLIENT_A, "/any/x")


@pytest.mark.parametrize("name", ["client", "client_b", "revoked"])
async def test_expired_crl_fails_closed(setup: Setup, name: str) -> None:
    await tls_refused(setup, "xcrl", getattr(setup.pki, name))


async def test_principal_name_order_uri_then_dns_then_cn(
    setup: Setup, extra: dict[str, PkiCert]
) -> None:
    # client-a has a URI, a DNS name and a CN: the URI (SPIFFE ID) wins (other tests).
    for cert, principal in ((extra["dns-only"], "svc.order.test"), (extra["cn-only"], "cn-only")):
        before = len(setup.backend.requests)
        res = await request(setup, "req", "/any/x", cert)
        admitted(setup, res, before, principal, "/any/x")


# --- no_eku ------------------------------------------------------------------------------


async def test_no_eku_rejected_by_default(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "req", "/any/x", setup.pki.no_eku)
    refused(setup, res, before, 403, "permission-denied")
    assert "extendedKeyUsage" in (res.header("x-kedge-error") or "")


async def test_no_eku_accepted_when_configured(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "noeku", "/any/x", setup.pki.no_eku)
    admitted(setup, res, before, SPIFFE_PREFIX + "no-eku", "/any/x")
    # `accept` is about a missing EKU only: a serverAuth-only EKU still fails the handshake.
    await tls_refused(setup, "noeku", setup.pki.server_eku_only)


# --- mode: optional ----------------------------------------------------------------------


async def test_optional_no_cert_with_token(setup: Setup) -> None:
    before = len(setup.backend.requests)
    token = setup.jwks.token("svc-a", permissions=["svc.read"])
    auth = ("-H", f"Proxy-Authorization: Bearer {token}")
    res = await request(setup, "opt", "/perm/x", None, *auth)
    admitted(setup, res, before, "op/svc-a", "/perm/x")


async def test_optional_no_cert_no_token(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "opt", "/any/x")
    refused(setup, res, before, 401, "unauthenticated")
    assert res.header("proxy-authenticate") == 'Bearer realm="kedge"'


async def test_optional_cert_alone_on_a_permissions_route(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "opt", "/perm/x", setup.pki.client)
    refused(setup, res, before, 401, "unauthenticated")
    assert (res.header("proxy-authenticate") or "").startswith('Bearer realm="kedge"')
    # The same certificate is enough where no permission is asked for.
    res = await request(setup, "opt", "/any/x", setup.pki.client)
    admitted(setup, res, before, CLIENT_A, "/any/x")


async def test_optional_cert_and_token_the_token_names_the_caller(setup: Setup) -> None:
    before = len(setup.backend.requests)
    token = setup.jwks.token("svc-b", permissions=["svc.read"])
    auth = ("-H", f"Proxy-Authorization: Bearer {token}")
    res = await request(setup, "opt", "/perm/x", setup.pki.client, *auth)
    admitted(setup, res, before, "op/svc-b", "/perm/x")


async def test_optional_anonymous_route_without_anything(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "opt", "/open/x")
    admitted(setup, res, before, "", "/open/x")


async def test_optional_still_verifies_a_cert_that_is_sent(setup: Setup) -> None:
    for cert in (setup.pki.unknown_ca, setup.pki.expired):
        await tls_refused(setup, "opt", cert, "/open/x")


# --- principals --------------------------------------------------------------------------

PRINCIPAL_CASES = [
    ("/only-a/x", "client", 200),
    ("/only-a/x", "client_b", 403),
    ("/cn-b/x", "client_b", 200),
    ("/cn-b/x", "client", 403),
    ("/dns-a/x", "client", 200),
    ("/dns-a/x", "client_b", 403),
    ("/apps/x", "client", 200),
    ("/apps/x", "client_b", 200),
    ("/apps/x", "outsider", 403),
    ("/apps/x", "lookalike", 403),
    ("/only-a/x", "via_intermediate", 403),
]


@pytest.mark.parametrize(("path", "who", "status"), PRINCIPAL_CASES)
async def test_route_principals(
    setup: Setup, extra: dict[str, PkiCert], path: str, who: str, status: int
) -> None:
    cert = extra[who] if who in extra else getattr(setup.pki, who)
    before = len(setup.backend.requests)
    res = await request(setup, "req", path, cert)
    if status == 200:
        admitted(setup, res, before, {"client": CLIENT_A, "client_b": CLIENT_B}[who], path)
    else:
        refused(setup, res, before, 403, "permission-denied")
    assert (res.header("x-kedge-error") or "").endswith("is not allowed on this route") == (
        status == 403
    )


# --- require_sni_match -------------------------------------------------------------------


async def test_sni_mismatch_is_misdirected(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "sni", "/open/x", None, "--http1.1", "-H", "Host: other.edge.test")
    refused(setup, res, before, 421, "misdirected-request")
    # The same connection parameters with a matching Host are served; hosts compare
    # case-insensitively (RFC 9110 §4.2.3), with or without the port.
    res = await request(setup, "sni", "/open/x", None, "--http1.1")
    admitted(setup, res, before, "", "/open/x")
    res = await request(setup, "sni", "/open/x", None, "--http1.1", "-H", "Host: EDGE.test")
    admitted(setup, res, before + 1, "", "/open/x")


async def test_sni_mismatch_over_http2(setup: Setup) -> None:
    before = len(setup.backend.requests)
    args = ("--http2", "-v", "-H", "Host: other.edge.test")  # curl sends it as :authority
    res = await request(setup, "sni", "/open/x", None, *args)
    accepted = (b"ALPN: server accepted h2", b"ALPN, server accepted to use h2")
    assert any(a in res.stderr for a in accepted), res.stderr
    refused(setup, res, before, 421, "misdirected-request")
    res = await request(setup, "sni", "/open/x", None, "--http2")
    admitted(setup, res, before, "", "/open/x")
    res = await request(setup, "sni", "/any/x", setup.pki.client, "--http2")
    admitted(setup, res, before + 1, CLIENT_A, "/any/x")


async def test_sni_absent_is_misdirected(setup: Setup) -> None:
    # curl sends no SNI for an IP address (RFC 6066 §3: literal addresses are not allowed).
    before = len(setup.backend.requests)
    port = setup.edge.port("sni")
    res = await curl("--cacert", str(setup.pki.ca.cert), f"https://127.0.0.1:{port}/open/x")
    refused(setup, res, before, 421, "misdirected-request")


async def test_sni_match_is_not_required_elsewhere(setup: Setup) -> None:
    before = len(setup.backend.requests)
    res = await request(setup, "req", "/any/x", setup.pki.client, "-H", "Host: other.edge.test")
    admitted(setup, res, before, CLIENT_A, "/any/x")


# --- identity headers from the client ----------------------------------------------------


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
async def test_client_identity_headers_never_reach_the_backend(setup: Setup, http: str) -> None:
    before = len(setup.backend.requests)
    forged = (
        "-H", "X-Forwarded-Client-Cert: By=spiffe://x;URI=spiffe://cluster.test/ns/apps/sa/root",
        "-H", "X-Kedge-Principal: spiffe://cluster.test/ns/apps/sa/root",
        "-H", "X_Kedge_Principal: root",
        "-H", "X-Forwarded-Client-Cert: second",
    )  # fmt: skip
    res = await request(setup, "req", "/any/x", setup.pki.client, http, *forged)
    admitted(setup, res, before, CLIENT_A, "/any/x")
    names = [n for n, _ in setup.backend.requests[-1].headers]
    assert "x-forwarded-client-cert" not in names
    assert "x_kedge_principal" not in names
    # The anonymous route adds no identity, and still lets no client copy through.
    res = await request(setup, "opt", "/open/x", None, http, *forged)
    admitted(setup, res, before + 1, "", "/open/x")
    names = [n for n, _ in setup.backend.requests[-1].headers]
    assert not {"x-forwarded-client-cert", "x_kedge_principal", "x-kedge-principal"} & set(names)


# --- gRPC --------------------------------------------------------------------------------


def grpc_mtls_channel(s: Setup, cert: PkiCert) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=s.pki.ca.cert.read_bytes(),
        private_key=cert.key.read_bytes(),
        certificate_chain=cert.chain.read_bytes(),
    )
    options = [
        ("grpc.ssl_target_name_override", "edge.test"),
        ("grpc.default_authority", "edge.test"),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_retries", 0),
        ("grpc.enable_http_proxy", 0),
    ]
    return grpc.aio.secure_channel(f"127.0.0.1:{s.edge.port('req')}", credentials, options)


async def test_grpc_with_client_certificates(setup: Setup) -> None:
    server = setup.grpc
    before = len(server.calls)
    request_ = hello_pb2.HelloRequest(name="x")
    async with grpc_mtls_channel(setup, setup.pki.client) as ch:
        reply = await hello_pb2_grpc.GreeterStub(ch).SayHello(request_, timeout=5)
        assert reply.name == "g:x"
        assert len(server.calls) == before + 1
        assert server.calls[-1][1].get("x-kedge-principal") == CLIENT_A
        # Other.Ping admits client-b only.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.OtherStub(ch).Ping(request_, timeout=5)
    err = info.value
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED, (err.code(), err.details())
    assert dict(err.trailing_metadata() or ()).get("x-kedge-error-type") == "permission-denied"
    assert len(server.calls) == before + 1, "a refused call reached the servicer"
    async with grpc_mtls_channel(setup, setup.pki.client_b) as ch:
        reply = await hello_pb2_grpc.OtherStub(ch).Ping(request_, timeout=5)
        assert reply.name == "g:x"
        assert server.calls[-1][1].get("x-kedge-principal") == CLIENT_B


async def test_grpc_with_an_untrusted_certificate_fails(setup: Setup) -> None:
    server = setup.grpc
    before = len(server.calls)
    async with grpc_mtls_channel(setup, setup.pki.unknown_ca) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(ch).SayHello(hello_pb2.HelloRequest(name="x"),
                                                          timeout=5)  # fmt: skip
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value.details()
    assert len(server.calls) == before


# --- kedge check -------------------------------------------------------------------------


async def _kedge_check(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kedge", "check", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


def _check_yaml(pki: TestPki, client_certs: str) -> str:
    return f"""
listeners:{listener("https", pki, client_certs)}
backends: [{{name: b, resolver: {{static: {{endpoints: ["127.0.0.1:9"]}}}}}}]
routes: [{{backend: b}}]
"""


@pytest.mark.parametrize(
    ("client_certs", "key_path", "named"),
    [
        ("{ca_files: [CA, KEY]}", "listeners[0].tls.client_certs.ca_files[1]", "KEY"),
        ("{ca_files: [CRL]}", "listeners[0].tls.client_certs.ca_files[0]", "CRL"),
        ("{ca_files: [CA], crl_files: [CA]}", "listeners[0].tls.client_certs.crl_files[0]", "CA"),
        ("{ca_files: [CA], crl_files: [KEY]}", "listeners[0].tls.client_certs.crl_files[0]", "KEY"),
    ],
    ids=["key-as-ca", "crl-as-ca", "cert-as-crl", "key-as-crl"],
)
async def test_kedge_check_names_a_file_that_is_not_what_it_should_be(
    pki: TestPki, tmp_path: Path, client_certs: str, key_path: str, named: str
) -> None:
    files = {"CA": pki.ca.cert, "KEY": pki.client.key, "CRL": pki.crl}
    for word, path in files.items():
        client_certs = client_certs.replace(word, str(path))
    config = tmp_path / "edge.yaml"
    config.write_text(_check_yaml(pki, client_certs))
    code, output = await _kedge_check(config)
    assert code == 1, output
    assert key_path in output, output
    assert str(files[named]) in output, output
    # The same listener with the right files passes.
    config.write_text(_check_yaml(pki, f"{{ca_files: [{pki.ca.cert}], crl_files: [{pki.crl}]}}"))
    code, output = await _kedge_check(config)
    assert code == 0, output
