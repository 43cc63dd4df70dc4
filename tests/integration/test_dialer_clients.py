"""kedge.dialer with real clients: aiohttp, httpx and grpc.aio through a real edge over TLS.

The edge listens with TLS (trustme, certificate for edge.cluster-a.test, reached as
127.0.0.1 with `server_name`) and requires a proxy credential: a JWT signed with a key
whose JWKS the edge fetches from a pinned URL. The dialer maps `*.cluster-a.internal` to it,
sends that JWT from a token_file source as the proxy credential and a static token as the
backend credential. Each client must get the answer, the backend must see the backend token
(replacing the caller's) and never the proxy one, and the edge must route on the service's
`host:port` (its routes match host and port; another name gets 404 `no-route`). Unmapped
names are refused, or go direct to a plain backend without credentials; a wrong CA fails
the TLS handshake with a certificate error.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import httpx
import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.http11 import Request

from kedge.dialer import Dialer, NotMapped, RedirectRefused, aiohttp_session, grpc_channel
from kedge.dialer import parse_dialer_config_text as parse
from kedge.dialer.config import MapRoute
from kedge.dialer.http_httpx import KedgeTransport
from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import (
    RecordedRequest,
    RecordingBackend,
    recording_backend,
    simple_response,
)
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_hello_server
from tests.support.oidc_provider import SigningKey, rsa_key

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

ISSUER = "https://idp.kedge.test"  # never contacted: the JWKS URL is pinned
BACKEND_TOKEN = "backend-" + secrets.token_hex(8)
WEB = "web.ns.cluster-a.internal:8080"
GREETER = "greeter.ns.cluster-a.internal:443"
GREETER_B = "greeter.ns.cluster-b.internal:50051"  # the edge's "wild" certificate covers it
EDGE_NAME = "edge.cluster-a.test"
TIMEOUT = aiohttp.ClientTimeout(total=10)
# Its own connection per channel: a wrong-CA channel must not share a good one's subchannel.
LOCAL_POOL = [("grpc.use_local_subchannel_pool", 1)]


@dataclass
class World:
    dir: Path
    edge: RunningEdge
    web: RecordingBackend
    direct: RecordingBackend  # plain, unmapped: reached as 127.0.0.1 with `unmapped: direct`
    grpc: GrpcServer
    proxy_token: str
    ca_file: str
    wrong_ca_file: str
    ws_auth: list[str | None]  # the Authorization each WebSocket handshake carried

    def config(
        self,
        *,
        unmapped: str = "refuse",
        ca_file: str | None = None,
        proxy_auth: bool = True,
    ) -> Dialer:
        proxy = "proxy_auth: edge" if proxy_auth else ""
        text = f"""
edge_tls: {{ca_file: "{ca_file or self.ca_file}", server_name: {EDGE_NAME}}}
unmapped: {unmapped}
routes:
  - name: cluster-a
    suffix: "*.cluster-a.internal"
    edge: https://127.0.0.1:{self.edge.port("https")}
    {proxy}
    backend_auth: svc
  - name: cluster-b
    suffix: "*.cluster-b.internal"
    edge: https://127.0.0.1:{self.edge.port("wild")}
    {proxy}
    backend_auth: svc
auth_sources:
  edge: {{token_file: {{path: proxy-token}}}}
  svc: {{token: {{value: {BACKEND_TOKEN}}}}}
"""
        return Dialer(parse(text, "dialer.yaml", base_dir=str(self.dir)))


def sign(key: SigningKey) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "kedge", "sub": "dialer-test", "iat": now, "exp": now + 600}
    return key.sign({**claims, "jti": secrets.token_hex(8)})


@asynccontextmanager
async def jwks_server(key: SigningKey) -> AsyncIterator[str]:
    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [key.public_jwk]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/jwks"
    finally:
        await runner.cleanup()


async def respond(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    """`/away`: a redirect to another mapped name; `/here`: one to this name; `/chunks`: a
    chunked answer written in pieces; anything else: the request's body length."""
    if req.target == "/away":
        w.write(simple_response(307, b"", [("Location", "http://api.ns.cluster-a.internal:8080/")]))
    elif req.target == "/here":
        w.write(simple_response(302, b"", [("Location", "/hello")]))
    elif req.target == "/chunks":
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(3):
            w.write(f"6\r\nchunk{i}\r\n".encode())
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
    else:
        w.write(simple_response(200, f"got {len(req.body)} bytes".encode()))


def edge_yaml(d: Path, web_backend: str, grpc_backend: str, jwks_url: str, ws_backend: str) -> str:
    return f"""
listeners:
  - name: https
    address: 127.0.0.1:0
    tls: {{cert_file: "{d}/edge.pem", key_file: "{d}/edge-key.pem"}}
  - name: wild
    address: 127.0.0.1:0
    tls: {{cert_file: "{d}/wild.pem", key_file: "{d}/wild-key.pem"}}
admin: {{address: 127.0.0.1:0}}
backends:
  - {{name: web, resolver: {{static: {{endpoints: ["{web_backend}"]}}}}}}
  - {{name: grpc, protocol: h2c, resolver: {{static: {{endpoints: ["{grpc_backend}"]}}}}}}
  - {{name: ws, resolver: {{static: {{endpoints: ["{ws_backend}"]}}}}}}
routes:
  - {{name: ws, backend: ws, match: {{host: ws.ns.cluster-a.internal}}}}
  - name: greeter
    backend: grpc
    match: {{host: greeter.ns.cluster-a.internal, port: 443, grpc_methods: ["kedge.e2e.*"]}}
  - name: greeter-50051
    backend: grpc
    match: {{host: greeter.ns.cluster-a.internal, port: 50051, grpc_methods: ["kedge.e2e.*"]}}
  - name: greeter-b
    backend: grpc
    match: {{host: greeter.ns.cluster-b.internal, port: 50051, grpc_methods: ["kedge.e2e.*"]}}
  - {{name: web, backend: web, match: {{host: web.ns.cluster-a.internal, port: 8080}}}}
auth:
  issuers:
    - {{name: t, issuer: "{ISSUER}", audiences: [kedge], jwks_url: "{jwks_url}"}}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    d = tmp_path_factory.mktemp("dialer")
    ca, wrong = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    wrong.cert_pem.write_to_path(str(d / "wrong-ca.pem"))
    leaf = ca.issue_cert(EDGE_NAME)  # not 127.0.0.1: the dialer must verify `server_name`
    leaf.private_key_pem.write_to_path(str(d / "edge-key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(d / "edge.pem"))
    wild = ca.issue_cert(EDGE_NAME, "*.ns.cluster-b.internal")
    wild.private_key_pem.write_to_path(str(d / "wild-key.pem"))
    wild.cert_chain_pems[0].write_to_path(str(d / "wild.pem"))
    key = rsa_key()
    token = sign(key)
    (d / "proxy-token").write_text(token + "\n")
    ws_auth: list[str | None] = []

    def on_ws_request(_conn: ServerConnection, request: Request) -> None:
        ws_auth.append(request.headers.get("Authorization"))

    async def ws_echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with (
        jwks_server(key) as jwks_url,
        recording_backend(respond) as web_backend,
        recording_backend() as direct,
        grpc_hello_server(name="g") as grpc_server,
        ws_serve(ws_echo, "127.0.0.1", 0, process_request=on_ws_request) as ws_server,
    ):
        ws_backend = f"127.0.0.1:{next(iter(ws_server.sockets)).getsockname()[1]}"
        yaml_text = edge_yaml(d, web_backend.address, grpc_server.address, jwks_url, ws_backend)
        async with running_edge(yaml_text) as edge:
            yield World(
                d, edge, web_backend, direct, grpc_server, token, str(d / "ca.pem"),
                str(d / "wrong-ca.pem"), ws_auth,
            )  # fmt: skip


@pytest_asyncio.fixture(loop_scope="module")
async def w(world: World) -> World:
    """The module's world with empty recordings: each test sees only its own requests."""
    world.web.requests.clear()
    world.direct.requests.clear()
    world.grpc.calls.clear()
    return world


def assert_backend_credentials(req: RecordedRequest, w: World) -> None:
    assert req.header_all("authorization") == [f"Bearer {BACKEND_TOKEN}"]
    assert req.header("proxy-authorization") is None
    assert w.proxy_token not in req.raw.decode("latin-1")


# --- aiohttp -------------------------------------------------------------------------------


async def test_aiohttp_reaches_the_service_with_the_backend_credential(w: World) -> None:
    dialer = w.config()
    async with aiohttp_session(dialer, timeout=TIMEOUT) as session:
        async with session.get(
            f"http://{WEB}/hello?x=1", headers={"Authorization": "Bearer caller"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.text() == "got 0 bytes"
            assert str(resp.url) == f"http://{WEB}/hello?x=1"  # the service's URL, not the edge's

        async def body() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 1000
                await asyncio.sleep(0)

        async with session.post(f"http://{WEB}/upload", data=body()) as resp:
            assert await resp.text() == "got 4000 bytes"
        async with session.get(f"http://{WEB}/chunks") as resp:
            pieces = [piece async for piece in resp.content.iter_any()]
            assert b"".join(pieces) == b"chunk0chunk1chunk2"
    await dialer.aclose()
    assert [r.target for r in w.web.requests] == ["/hello?x=1", "/upload", "/chunks"]
    for req in w.web.requests:
        assert_backend_credentials(req, w)
    assert w.web.requests[1].body == b"x" * 4000


async def test_aiohttp_redirects(w: World) -> None:
    dialer = w.config()
    async with aiohttp_session(dialer, timeout=TIMEOUT) as session:
        async with session.get(f"http://{WEB}/here") as resp:  # same name: followed
            assert resp.status == 200 and str(resp.url) == f"http://{WEB}/hello"
        with pytest.raises(RedirectRefused, match=r"api\.ns\.cluster-a\.internal:8080"):
            await session.get(f"http://{WEB}/away")
        async with session.get(f"http://{WEB}/away", allow_redirects=False) as resp:
            assert resp.status == 307
    await dialer.aclose()
    assert [r.target for r in w.web.requests] == ["/here", "/hello", "/away", "/away"]


async def test_aiohttp_edge_routes_on_the_service_authority(w: World) -> None:
    dialer = w.config()
    # Mapped by the dialer, but the edge has no route for this host:port.
    async with (
        aiohttp_session(dialer, timeout=TIMEOUT) as session,
        session.get("http://web.ns.cluster-a.internal:9090/") as resp,
    ):
        assert resp.status == 404
        assert resp.headers["X-Kedge-Error-Type"] == "no-route"
    await dialer.aclose()
    assert w.web.requests == []


async def test_the_edge_refuses_without_the_proxy_credential(w: World) -> None:
    # The control for every other test: this edge does require the dialer's credential.
    dialer = w.config(proxy_auth=False)
    async with (
        aiohttp_session(dialer, timeout=TIMEOUT) as session,
        session.get(f"http://{WEB}/") as resp,
    ):
        assert resp.status == 401
        assert resp.headers["X-Kedge-Error-Type"] == "unauthenticated"
    await dialer.aclose()
    assert w.web.requests == []


async def test_aiohttp_unmapped(w: World) -> None:
    refuse = w.config()
    async with aiohttp_session(refuse, timeout=TIMEOUT) as session:
        for url in (f"http://localhost:{w.direct.port}/", f"http://{w.direct.address}/"):
            with pytest.raises(NotMapped):
                await session.get(url)
    direct = w.config(unmapped="direct")
    async with (
        aiohttp_session(direct, timeout=TIMEOUT) as session,
        session.get(f"http://{w.direct.address}/d") as resp,
    ):
        assert resp.status == 200
    await refuse.aclose()
    await direct.aclose()
    assert [r.target for r in w.direct.requests] == ["/d"]
    req = w.direct.requests[0]
    assert req.header("authorization") is None and req.header("proxy-authorization") is None


async def test_aiohttp_wrong_ca(w: World) -> None:
    dialer = w.config(ca_file=w.wrong_ca_file)
    async with aiohttp_session(dialer, timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError, match="certificate verify"):
            await session.get(f"http://{WEB}/")
    await dialer.aclose()
    assert w.web.requests == []


# --- httpx ---------------------------------------------------------------------------------


async def test_httpx_reaches_the_service_over_h2(w: World) -> None:
    dialer = w.config()
    async with httpx.AsyncClient(transport=KedgeTransport(dialer), timeout=10) as client:
        resp = await client.get(f"http://{WEB}/hello?y=2", headers={"Authorization": "Bearer me"})
        assert resp.status_code == 200 and resp.text == "got 0 bytes"
        assert resp.http_version == "HTTP/2"  # pooled, multiplexed HTTP/2 to the edge
        assert str(resp.url) == f"http://{WEB}/hello?y=2"

        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"y" * 1000

        resp = await client.post(f"http://{WEB}/upload", content=body())
        assert resp.text == "got 3000 bytes"
        async with client.stream("GET", f"http://{WEB}/chunks") as streamed:
            assert b"".join([c async for c in streamed.aiter_bytes()]) == b"chunk0chunk1chunk2"
        resp = await client.get("http://web.ns.cluster-a.internal:9090/")
        assert resp.status_code == 404 and resp.headers["x-kedge-error-type"] == "no-route"
    await dialer.aclose()
    assert [r.target for r in w.web.requests] == ["/hello?y=2", "/upload", "/chunks"]
    for req in w.web.requests:
        assert_backend_credentials(req, w)


async def test_httpx_redirects(w: World) -> None:
    dialer = w.config()
    transport = KedgeTransport(dialer)
    async with httpx.AsyncClient(transport=transport, timeout=10, follow_redirects=True) as c:
        resp = await c.get(f"http://{WEB}/here")
        assert resp.status_code == 200 and str(resp.url) == f"http://{WEB}/hello"
        with pytest.raises(RedirectRefused):
            await c.get(f"http://{WEB}/away")
    await dialer.aclose()
    assert [r.target for r in w.web.requests] == ["/here", "/hello", "/away"]


async def test_httpx_unmapped(w: World) -> None:
    refuse = w.config()
    async with httpx.AsyncClient(transport=KedgeTransport(refuse), timeout=10) as client:
        with pytest.raises(NotMapped):
            await client.get(f"http://localhost:{w.direct.port}/")
    direct = w.config(unmapped="direct")
    async with httpx.AsyncClient(transport=KedgeTransport(direct), timeout=10) as client:
        resp = await client.get(f"http://{w.direct.address}/d")
        assert resp.status_code == 200
    await refuse.aclose()
    await direct.aclose()
    assert [r.target for r in w.direct.requests] == ["/d"]
    req = w.direct.requests[0]
    assert req.header("authorization") is None and req.header("proxy-authorization") is None


async def test_httpx_wrong_ca(w: World) -> None:
    dialer = w.config(ca_file=w.wrong_ca_file)
    async with httpx.AsyncClient(transport=KedgeTransport(dialer), timeout=10) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"http://{WEB}/")
    await dialer.aclose()
    assert w.web.requests == []


# --- grpc.aio ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [GREETER, GREETER_B])
async def test_grpc_unary_and_streaming(w: World, target: str) -> None:
    dialer = w.config()
    async with grpc_channel(dialer, target, options=LOCAL_POOL) as channel:
        stub = hello_pb2_grpc.GreeterStub(channel)
        caller = (("authorization", "Bearer caller"), ("x-mine", "kept"))
        reply = await stub.SayHello(hello_pb2.HelloRequest(name="me"), metadata=caller)
        assert reply.name == "g:me"
        replies = [r async for r in stub.ServerStream(hello_pb2.StreamRequest(name="s", count=3))]
        assert [r.count for r in replies] == [0, 1, 2]

        async def requests() -> AsyncIterator[hello_pb2.HelloRequest]:
            for name in ("a", "b"):
                yield hello_pb2.HelloRequest(name=name)

        answers = [r.name async for r in stub.Bidi(requests())]
        assert answers == ["g:a", "g:b"]
    await dialer.aclose()
    assert [method for method, _ in w.grpc.calls] == [
        "/kedge.e2e.Greeter/SayHello",
        "/kedge.e2e.Greeter/ServerStream",
        "/kedge.e2e.Greeter/Bidi",
    ]
    assert w.grpc.calls[0][1]["x-mine"] == "kept"
    for _, seen in w.grpc.calls:
        assert seen.get("authorization") == f"Bearer {BACKEND_TOKEN}"  # the caller's replaced
        assert "proxy-authorization" not in seen
        assert w.proxy_token not in repr(seen)


async def test_grpc_edge_routes_on_the_target_authority(w: World) -> None:
    dialer = w.config()
    # Mapped by the dialer, but the edge's greeter-b route is for port 50051 only.
    async with grpc_channel(
        dialer, "greeter.ns.cluster-b.internal:50052", options=LOCAL_POOL
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(channel).SayHello(
                hello_pb2.HelloRequest(name="x"), timeout=5
            )
    await dialer.aclose()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert w.grpc.calls == []


async def test_grpc_on_a_port_the_edge_certificate_does_not_name(w: World) -> None:
    """grpcio alone would refuse `greeter...:50051` against a certificate naming only the
    edge ("call host does not match SSL server name"); the dialer's relay does the TLS, so
    the call goes through and the edge routes on the full authority."""
    dialer = w.config()
    async with grpc_channel(
        dialer, "greeter.ns.cluster-a.internal:50051", options=LOCAL_POOL
    ) as channel:
        reply = await hello_pb2_grpc.GreeterStub(channel).SayHello(
            hello_pb2.HelloRequest(name="x"), timeout=5
        )
    await dialer.aclose()
    assert reply.name == "g:x"
    [(method, seen)] = w.grpc.calls
    assert method == "/kedge.e2e.Greeter/SayHello"
    assert seen.get("authorization") == f"Bearer {BACKEND_TOKEN}"
    lines = [ln for ln in w.edge.log_lines() if b'"route":"greeter-50051"' in ln]
    assert lines, "the edge did not route on greeter.ns.cluster-a.internal:50051"


async def test_grpc_relay_socket_is_private_and_removed(w: World) -> None:
    dialer = w.config()
    async with grpc_channel(dialer, GREETER, options=LOCAL_POOL) as channel:
        await hello_pb2_grpc.GreeterStub(channel).SayHello(hello_pb2.HelloRequest(name="p"))
        mapped = dialer.map("greeter.ns.cluster-a.internal", 443, grpc=True)
        assert mapped is not None
        path = dialer.relay(mapped).path
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    await dialer.aclose()
    assert not os.path.exists(os.path.dirname(path))  # noqa: ASYNC240


async def test_grpc_unmapped(w: World) -> None:
    refuse = w.config()
    with pytest.raises(NotMapped):
        grpc_channel(refuse, w.grpc.address)
    direct = w.config(unmapped="direct")
    async with grpc_channel(direct, w.grpc.address, options=LOCAL_POOL) as channel:
        reply = await hello_pb2_grpc.GreeterStub(channel).SayHello(
            hello_pb2.HelloRequest(name="d"), timeout=5
        )
        assert reply.name == "g:d"
    await refuse.aclose()
    await direct.aclose()
    [(_, seen)] = w.grpc.calls
    assert "authorization" not in seen and "proxy-authorization" not in seen


async def test_grpc_wrong_ca(w: World, caplog: pytest.LogCaptureFixture) -> None:
    dialer = w.config(ca_file=w.wrong_ca_file)
    async with grpc_channel(dialer, GREETER, options=LOCAL_POOL) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(channel).SayHello(
                hello_pb2.HelloRequest(name="x"), timeout=5
            )
        mapped = dialer.map("greeter.ns.cluster-a.internal", 443, grpc=True)
        assert mapped is not None
        last_error = dialer.relay(mapped).last_error
    await dialer.aclose()
    # The relay does the TLS: grpcio sees the socket close (UNAVAILABLE, at once), and the
    # reason is logged and kept on the relay.
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert last_error is not None and "CERTIFICATE_VERIFY_FAILED" in last_error
    assert any(
        "CERTIFICATE_VERIFY_FAILED" in r.getMessage() and r.name == "kedge.dialer"
        for r in caplog.records
    )
    assert w.grpc.calls == []
    assert w.grpc.calls == []


async def test_grpc_credential_failure_fails_the_call_clearly(w: World) -> None:
    dialer = w.config()
    (w.dir / "proxy-token").rename(w.dir / "proxy-token.moved")
    try:
        async with grpc_channel(dialer, GREETER, options=LOCAL_POOL) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await hello_pb2_grpc.GreeterStub(channel).SayHello(
                    hello_pb2.HelloRequest(name="x"), timeout=5
                )
    finally:
        (w.dir / "proxy-token.moved").rename(w.dir / "proxy-token")
        await dialer.aclose()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # credential-unavailable
    assert "auth source 'edge'" in (info.value.details() or "")
    assert w.grpc.calls == []


async def test_grpc_unauthenticated_drops_the_cached_credentials(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a 401/407 does for HTTP: the edge answering UNAUTHENTICATED (no proxy credential
    here) makes the dialer drop the route's cached credentials."""
    dropped: list[str] = []
    original = Dialer.invalidate

    def recording(self: Dialer, plan: MapRoute) -> None:
        dropped.append(plan.name)
        original(self, plan)

    monkeypatch.setattr(Dialer, "invalidate", recording)
    dialer = w.config(proxy_auth=False)
    async with grpc_channel(dialer, GREETER, options=LOCAL_POOL) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(channel).SayHello(
                hello_pb2.HelloRequest(name="x"), timeout=5
            )
        async with asyncio.timeout(5):
            while not dropped:
                await asyncio.sleep(0.01)
    await dialer.aclose()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dropped == ["cluster-a"]
    assert w.grpc.calls == []


async def test_aiohttp_websocket_through_the_edge(w: World) -> None:
    """`session.ws_connect` goes through the dialer too: the upgrade reaches the edge over
    TLS (HTTP/1.1) with the credentials, and the edge passes it to the service."""
    dialer = w.config()
    before = len(w.ws_auth)
    async with (
        aiohttp_session(dialer) as session,
        session.ws_connect("ws://ws.ns.cluster-a.internal:8081/x") as ws,
    ):
        for message in ("hello", "x" * 100_000):
            await ws.send_str(message)
            assert (await ws.receive(timeout=5)).data == message
    await dialer.aclose()
    assert w.ws_auth[before:] == [f"Bearer {BACKEND_TOKEN}"]
