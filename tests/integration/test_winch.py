"""Winch end to end: real clients -> winch -> a real TLS edge that requires auth -> backends.

One module-wide world: a node oidc-provider (winch's proxy credential is a service account's
client_credentials token, which the edge verifies), an edge on a trustme TLS listener, a
recording HTTP backend, a TLS backend reached through CONNECT, and a gRPC server. Each test
runs its own winch (cheap) so settings like `debug` or `secret_file` stay local.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
import trustme
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request

from kedge.core.errors import ConfigError
from kedge.dialer.sources.static import StaticTokenSource
from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_channel, grpc_hello_server
from tests.support.oidc_provider import OidcAccount, OidcClient, OidcProvider
from tests.support.raw_client import raw_connection
from tests.support.winch import running_winch
from winch.config import parse_winch_config_text
from winch.peer_uid import Unknown

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVICE_TOKEN = "service-token-for-the-backend"
ALICE = OidcAccount("alice", "wonderland", claims={"permissions": ["svc.read"]})
CLIENT_SECRET = "winch-ci-client-secret-0123456789"


@dataclass
class World:
    dir: Path
    ca: trustme.CA
    op: OidcProvider
    edge: RunningEdge
    web: RecordingBackend
    tls_port: int
    tls_seen: list[str]
    grpc: GrpcServer
    ws_port: int
    ws_auth: list[str | None]  # the Authorization each WebSocket handshake carried

    def winch_yaml(self, extra: str = "", *, routes: str = "") -> str:
        return f"""
edge_tls: {{ca_file: {self.dir}/ca.pem, server_name: edge.cluster-a.test}}
{extra}
routes:
{routes}
  - name: cluster-a
    suffix: "*.cluster-a.internal"
    edge: https://127.0.0.1:{self.edge.port("https")}
    proxy_auth: ci
    backend_auth: svc
auth_sources:
  ci: {{client_credentials: {{issuer: "{self.op.issuer}", client_id: winch-ci,
        client_secret_file: {self.dir}/ci.secret, resource: "urn:kedge"}}}}
  svc: {{token: {{value: {SERVICE_TOKEN}}}}}
"""


async def _tls_backend(ca: trustme.CA, seen: list[str]) -> asyncio.Server:
    """An HTTPS service for CONNECT tunnels; records the SNI each TLS client asked for."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("web.cluster-a.internal").configure_cert(ctx)

    def sni(obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        seen.append(name or "")

    ctx.sni_callback = sni  # type: ignore[assignment]

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        auth = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"authorization")]
        body = b"tls-service saw authorization: " + (b"yes" if auth else b"no")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        w.write(body)
        await w.drain()
        w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    d = tmp_path_factory.mktemp("winch")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("edge.cluster-a.test").private_key_and_cert_chain_pem.write_to_path(
        str(d / "edge.pem")
    )
    (d / "ci.secret").write_text(CLIENT_SECRET + "\n")
    seen: list[str] = []
    tls = await _tls_backend(ca, seen)
    tls_port = int(tls.sockets[0].getsockname()[1])
    client = OidcClient("winch-ci", CLIENT_SECRET, claims={"permissions": ["svc.read"]})
    cli = OidcClient("winch-cli", native=True)  # a user's own login (PKCE, loopback redirect)
    ws_auth: list[str | None] = []

    def on_request(_conn: ServerConnection, request: Request) -> None:
        ws_auth.append(request.headers.get("Authorization"))

    async def ws_echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with (
        OidcProvider.start(d, clients=[client, cli], accounts=[ALICE]) as op,
        recording_backend() as web,
        grpc_hello_server(name="g") as g,
        ws_serve(ws_echo, "127.0.0.1", 0, process_request=on_request) as ws_server,
    ):
        ws_port = int(next(iter(ws_server.sockets)).getsockname()[1])
        edge_yaml = f"""
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: https
    address: "127.0.0.1:0"
    tls: {{cert_file: {d}/edge.pem, key_file: {d}/edge.pem}}
backends:
  - {{name: web, resolver: {{static: {{endpoints: ["{web.address}"]}}}}}}
  - {{name: tls, resolver: {{static: {{endpoints: ["127.0.0.1:{tls_port}"]}}}}}}
  - {{name: greeter, protocol: h2c, resolver: {{static: {{endpoints: ["127.0.0.1:{g.port}"]}}}}}}
  - {{name: ws, resolver: {{static: {{endpoints: ["127.0.0.1:{ws_port}"]}}}}}}
routes:
  - name: ws
    backend: ws
    match: {{host: ws.cluster-a.internal}}
    auth: {{permissions: [svc.read]}}
  - name: tunnel
    backend: tls
    match: {{host: web.cluster-a.internal, proxy_mode: connect}}
    auth: {{permissions: [svc.read]}}
  - name: greeter
    backend: greeter
    match: {{host: greeter.cluster-a.internal}}
    auth: {{permissions: [svc.read]}}
  - name: web
    backend: web
    match: {{host: "*.cluster-a.internal"}}
    auth: {{permissions: [svc.read]}}
auth:
  issuers:
    - {{name: op, issuer: "{op.issuer}", audiences: [kedge, winch-cli]}}
"""
        async with running_edge(edge_yaml) as edge:
            yield World(d, ca, op, edge, web, tls_port, seen, g, ws_port, ws_auth)
    tls.close()


async def curl(*args: str, env: dict[str, str] | None = None) -> str:
    """curl's output; curl itself must succeed (an HTTP error status is output too)."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        "10",
        *args,
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode(errors="replace")


def header_lines(text: str) -> dict[str, str]:
    head = text.split("\r\n\r\n", 1)[0]
    return {
        k.strip().lower(): v.strip()
        for k, _, v in (ln.partition(":") for ln in head.split("\r\n")[1:])
    }


async def test_curl_http_proxy_injects_both_credentials(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        before = len(world.web.requests)
        out = await curl(
            "-i",
            "-H",
            "Authorization: Bearer the-callers-own",
            "http://svc.ns.cluster-a.internal/hello?x=1",
            env={"http_proxy": f"http://127.0.0.1:{w.port}"},
        )
        assert out.startswith("HTTP/1.1 200"), out
        assert out.endswith("hello from backend")
        req = world.web.requests[before]
        assert req.target == "/hello?x=1"
        assert req.header("host") == "svc.ns.cluster-a.internal"
        # The service's credential replaced the caller's; the edge's never reached it.
        assert req.header_all("authorization") == [f"Bearer {SERVICE_TOKEN}"]
        assert req.header("proxy-authorization") is None
        rid = req.header("x-request-id")
        assert rid is not None and rid.startswith("winch-")
        assert header_lines(out)["x-request-id"] == rid
        # The edge logged the request under winch's ID, routed on the service name.
        lines = [ln for ln in world.edge.log_lines() if rid.encode() in ln]
        assert len(lines) == 1 and b'"route":"web"' in lines[0], lines


async def test_curl_https_proxy_tunnels_tls_end_to_end(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        out = await curl(
            "-i",
            "--cacert",
            str(world.dir / "ca.pem"),
            f"https://web.cluster-a.internal:{world.tls_port}/secret",
            env={"https_proxy": f"http://127.0.0.1:{w.port}"},
        )
        assert "HTTP/1.1 200 Connection Established" in out
        # The client's own TLS reached the service (SNI is the service's name), and winch
        # could not add the backend credential inside it: only proxy_auth applies to TLS.
        assert out.endswith("tls-service saw authorization: no"), out
        assert world.tls_seen[-1] == "web.cluster-a.internal"
        # The edge logs a tunnel when it ends, right after curl closed it.
        async with asyncio.timeout(5):
            while not any(b'"route":"tunnel"' in ln for ln in world.edge.log_lines()):
                await asyncio.sleep(0.02)


async def test_grpc_through_winch_by_authority_and_by_http_proxy(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        by_authority = grpc_channel(
            f"127.0.0.1:{w.port}", authority="greeter.cluster-a.internal:50051"
        )
        by_proxy = grpc_channel(
            "greeter.cluster-a.internal:50051",
            options=[
                ("grpc.enable_http_proxy", 1),
                ("grpc.http_proxy", f"http://127.0.0.1:{w.port}"),
            ],
        )
        for name, channel in (("authority", by_authority), ("proxy", by_proxy)):
            async with channel:
                stub = hello_pb2_grpc.GreeterStub(channel)
                reply = await stub.SayHello(hello_pb2.HelloRequest(name=name), timeout=10)
                assert reply.name == f"g:{name}"
                method, metadata = world.grpc.calls[-1]
                assert method.endswith("/SayHello")
                assert metadata.get("authorization") == f"Bearer {SERVICE_TOKEN}"
                assert "proxy-authorization" not in metadata
                # Streaming works through the same path.
                replies = [
                    r.name
                    async for r in stub.ServerStream(
                        hello_pb2.StreamRequest(name=name, count=3, interval_ms=1), timeout=10
                    )
                ]
                assert len(replies) == 3


async def test_pac_file_is_served_and_names_winch(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        for path in ("/proxy.pac", "/wpad.dat"):
            out = await curl("-i", f"http://127.0.0.1:{w.port}{path}")
            h = header_lines(out)
            assert h["content-type"] == "application/x-ns-proxy-autoconfig"
            assert "access-control-allow-origin" not in h
            assert f"PROXY 127.0.0.1:{w.port}; DIRECT" in out
            assert ".cluster-a.internal" in out


async def test_unmapped_and_rebinding_requests_are_refused(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        before = len(world.web.requests)
        proxy = {"http_proxy": f"http://127.0.0.1:{w.port}"}
        out = await curl("-i", "http://elsewhere.test/", env=proxy)
        assert out.startswith("HTTP/1.1 403")
        assert header_lines(out)["x-winch-error-type"] == "unmapped-host"
        # A page whose own name rebinds to 127.0.0.1: Host is neither winch nor mapped.
        async with raw_connection(w.port) as conn:
            await conn.send(f"GET / HTTP/1.1\r\nHost: evil.test:{w.port}\r\n\r\n".encode())
            resp = await conn.read_response()
        assert resp.status == 403
        assert resp.header("x-winch-error-type") == "host-not-allowed"
        # A cross-site page's fetch through the proxy, and a CORS preflight.
        out = await curl(
            "-i",
            "-H",
            "Sec-Fetch-Site: cross-site",
            "-H",
            "Origin: http://evil.test",
            "-X",
            "POST",
            "http://svc.ns.cluster-a.internal/delete",
            env=proxy,
        )
        assert out.startswith("HTTP/1.1 403")
        assert header_lines(out)["x-winch-error-type"] == "cross-site-refused"
        out = await curl(
            "-i",
            "-X",
            "OPTIONS",
            "-H",
            "Origin: http://evil.test",
            "-H",
            "Access-Control-Request-Method: DELETE",
            "http://svc.ns.cluster-a.internal/x",
            env=proxy,
        )
        assert out.startswith("HTTP/1.1 403")
        assert not any(k.startswith("access-control-") for k in header_lines(out))
        assert len(world.web.requests) == before  # nothing reached the service


async def test_secret_is_required_when_configured(world: World) -> None:
    secret = "a-long-winch-secret-0123456789"
    path = world.dir / "winch.secret"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    async with running_winch(world.winch_yaml(f"winch: {{secret_file: {path}}}")) as w:
        url = "http://svc.ns.cluster-a.internal/s"
        out = await curl("-i", url, env={"http_proxy": f"http://127.0.0.1:{w.port}"})
        assert out.startswith("HTTP/1.1 407"), out
        assert header_lines(out)["proxy-authenticate"] == 'Basic realm="winch"'
        out = await curl("-i", url, env={"http_proxy": f"http://me:wrong@127.0.0.1:{w.port}"})
        assert out.startswith("HTTP/1.1 407")
        out = await curl("-i", url, env={"http_proxy": f"http://me:{secret}@127.0.0.1:{w.port}"})
        assert out.startswith("HTTP/1.1 200"), out
        # The PAC file needs no secret (browsers fetch it without credentials).
        out = await curl("-i", f"http://127.0.0.1:{w.port}/proxy.pac")
        assert out.startswith("HTTP/1.1 200")


async def test_secret_file_readable_by_others_is_a_config_error(world: World) -> None:
    path = world.dir / "loose.secret"
    path.write_text("a-long-winch-secret-0123456789\n")
    path.chmod(0o644)
    with pytest.raises(Exception) as info:
        async with running_winch(world.winch_yaml(f"winch: {{secret_file: {path}}}")):
            pass
    assert "chmod 600" in str(info.value)


async def test_debug_mode_makes_the_edge_log_at_info(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kedge.debug")
    async with running_winch(world.winch_yaml("winch: {debug: true}")) as w:
        before = len(world.web.requests)
        out = await curl(
            "-i",
            "http://dbg.ns.cluster-a.internal/trace-me",
            env={"http_proxy": f"http://127.0.0.1:{w.port}"},
        )
        assert out.startswith("HTTP/1.1 200"), out
        rid = world.web.requests[before].header("x-request-id")
        # The tag is for the edge only: it never reaches the service.
        assert world.web.requests[before].header("x-kedge-debug") is None
    records = [r for r in caplog.records if r.name == "kedge.debug"]
    assert any(rid in r.getMessage() and "route=web" in r.getMessage() for r in records)
    assert all(r.levelno == logging.INFO for r in records)


async def test_edge_refusing_the_proxy_credential_is_passed_through(world: World) -> None:
    yaml = world.winch_yaml().replace("    proxy_auth: ci\n", "")
    async with running_winch(yaml) as w:
        out = await curl(
            "-i",
            "http://svc.ns.cluster-a.internal/x",
            env={"http_proxy": f"http://127.0.0.1:{w.port}"},
        )
        # The edge's own refusal, labelled by the edge, not by winch.
        assert out.startswith("HTTP/1.1 401"), out
        h = header_lines(out)
        assert h["x-kedge-error-type"] == "unauthenticated"
        assert "x-winch-error" not in h


async def test_non_loopback_listen_is_refused_unless_allowed() -> None:
    text = "winch: {listen: '0.0.0.0:8070'}\nroutes: []\n"
    with pytest.raises(ConfigError) as info:
        parse_winch_config_text(text, "w.yaml")
    assert info.value.key_path == "winch.listen"
    cfg = parse_winch_config_text(text.replace("}", ", allow_non_loopback: true}"), "w.yaml")
    assert cfg.listen_host == "0.0.0.0"


async def test_unmapped_direct_goes_straight_to_the_name_without_credentials(
    world: World,
) -> None:
    """`unmapped: direct`: plain HTTP and CONNECT reach an unmapped name (here 127.0.0.1,
    which no route maps) with nothing winch holds attached."""
    async with (
        recording_backend() as plain,
        running_winch(world.winch_yaml("unmapped: direct")) as w,
    ):
        before = len(world.web.requests)
        out = await curl(
            "-i",
            "-H",
            "Proxy-Authorization: Basic d2luY2g6c2VjcmV0",
            f"http://{plain.address}/straight?q=1",
            env={"http_proxy": f"http://127.0.0.1:{w.port}", "no_proxy": ""},
        )
        assert out.startswith("HTTP/1.1 200"), out
        assert out.endswith("hello from backend")
        req = plain.requests[-1]
        assert req.target == "/straight?q=1"
        assert req.header("authorization") is None
        assert req.header("proxy-authorization") is None
        assert len(world.web.requests) == before  # the edge saw nothing
        # CONNECT to an unmapped name: a plain TCP tunnel, no edge involved.
        out = await curl(
            "-i",
            "-p",
            f"http://{plain.address}/tunnelled",
            env={"http_proxy": f"http://127.0.0.1:{w.port}", "no_proxy": ""},
        )
        assert "200 Connection Established" in out
        assert out.endswith("hello from backend")
        assert plain.requests[-1].target == "/tunnelled"


async def test_requests_share_one_pooled_http2_connection_to_the_edge(world: World) -> None:
    """kEdge's winch opened a connection per gRPC call; here 40 concurrent requests and calls
    from several clients ride one multiplexed HTTP/2 connection to the edge."""
    accepted = world.edge.app.metrics.connections_accepted.labels("https")
    async with running_winch(world.winch_yaml()) as w:
        proxy = {"http_proxy": f"http://127.0.0.1:{w.port}"}
        await curl("-o", "/dev/null", "http://warm.ns.cluster-a.internal/", env=proxy)
        before = accepted.value
        channel = grpc_channel(f"127.0.0.1:{w.port}", authority="greeter.cluster-a.internal:443")
        async with channel:
            stub = hello_pb2_grpc.GreeterStub(channel)
            calls = [
                stub.SayHello(hello_pb2.HelloRequest(name=str(i)), timeout=10) for i in range(20)
            ]
            gets = [
                curl(
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    f"http://p{i}.ns.cluster-a.internal/",
                    env=proxy,
                )
                for i in range(20)
            ]
            replies = await asyncio.gather(*calls)
            codes = await asyncio.gather(*gets)
        assert sorted(r.name for r in replies) == sorted(f"g:{i}" for i in range(20))
        assert codes == ["200"] * 20
        assert accepted.value == before  # no new connection to the edge


async def test_a_clients_request_id_is_kept_end_to_end(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        before = len(world.web.requests)
        out = await curl(
            "-i",
            "-H",
            "X-Request-Id: my-trace-123",
            "http://rid.ns.cluster-a.internal/",
            env={"http_proxy": f"http://127.0.0.1:{w.port}"},
        )
        assert out.startswith("HTTP/1.1 200")
        assert world.web.requests[before].header("x-request-id") == "my-trace-123"
        assert any(b"my-trace-123" in ln for ln in world.edge.log_lines())


async def test_connect_refused_by_the_edge_is_logged_with_its_reason(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Winch answers a CONNECT with 200 before the client's first byte says TLS or not; when
    the edge then refuses its own CONNECT (here: no proxy credential), the client sees the
    tunnel close and winch's log has the edge's reason."""
    caplog.set_level(logging.WARNING, logger="winch")
    yaml = world.winch_yaml().replace("    proxy_auth: ci\n", "")
    async with running_winch(yaml) as w:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(world.dir / "ca.pem"),
            f"https://web.cluster-a.internal:{world.tls_port}/secret",
            env=dict(os.environ, https_proxy=f"http://127.0.0.1:{w.port}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    assert proc.returncode != 0 and b"tls-service" not in out
    reasons = [r.getMessage() for r in caplog.records if r.name == "winch"]
    assert any("refused CONNECT" in m for m in reasons), reasons


async def test_grpc_unauthenticated_makes_winch_drop_cached_credentials(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped: list[str] = []

    def recording(self: StaticTokenSource) -> None:
        dropped.append(self.name)

    monkeypatch.setattr(StaticTokenSource, "invalidate", recording)
    yaml = world.winch_yaml().replace("    proxy_auth: ci\n", "")
    async with running_winch(yaml) as w:
        channel = grpc_channel(f"127.0.0.1:{w.port}", authority="greeter.cluster-a.internal:443")
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await hello_pb2_grpc.GreeterStub(channel).SayHello(
                    hello_pb2.HelloRequest(name="x"), timeout=10
                )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dropped == ["svc"]  # the route's backend_auth source


async def test_connection_cap_closes_the_excess_and_keeps_serving(world: World) -> None:
    """Hardening X10: a page (or a process) opening connections in a loop gets the excess
    closed at once; the connections within the cap keep working."""
    async with running_winch(world.winch_yaml("winch: {max_connections: 2}")) as w:
        held = [await asyncio.open_connection("127.0.0.1", w.port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", w.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed without an answer
        writer.close()
        r, wr = held[0]
        wr.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{w.port}\r\n\r\n".encode())
        async with asyncio.timeout(5):
            head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        for _, wr in held:
            wr.close()


async def test_https_tunnels_ride_the_pooled_http2_connection(world: World) -> None:
    """Each CONNECT is a stream (RFC 9113 §8.5) on winch's one connection to the edge, not a
    TLS handshake with the edge per tunnel."""
    accepted = world.edge.app.metrics.connections_accepted.labels("https")
    async with running_winch(world.winch_yaml()) as w:
        env = {
            "http_proxy": f"http://127.0.0.1:{w.port}",
            "https_proxy": f"http://127.0.0.1:{w.port}",
        }
        await curl("-o", "/dev/null", "http://warm.ns.cluster-a.internal/", env=env)
        before = accepted.value
        outs = await asyncio.gather(
            *(
                curl(
                    "--cacert",
                    str(world.dir / "ca.pem"),
                    f"https://web.cluster-a.internal:{world.tls_port}/t{i}",
                    env=env,
                )
                for i in range(6)
            )
        )
        assert outs == ["tls-service saw authorization: no"] * 6
        assert accepted.value == before


async def test_first_request_runs_the_browser_login_then_the_cache_serves(
    world: World, tmp_path: Path
) -> None:
    """A user's OIDC source with no refresh token yet: winch's first request through the
    route opens the login page (here a scripted browser signs in as alice), waits for the
    loopback redirect, and goes on with the ID token; the next winch (a restart) finds the
    refresh token in its 0600 cache file and opens no browser."""
    yaml = world.winch_yaml(
        routes=f"""
  - name: mine
    direct: me.cluster-a.internal
    edge: https://127.0.0.1:{world.edge.port("https")}
    proxy_auth: me
"""
    ).replace(
        "auth_sources:\n",
        f'auth_sources:\n  me: {{oidc: {{issuer: "{world.op.issuer}", client_id: winch-cli, '
        f"cache_dir: {tmp_path}}}}}\n",
    )
    opened: list[str] = []
    pages: list[asyncio.Task[str]] = []

    def browser(url: str) -> None:
        opened.append(url)
        pages.append(asyncio.create_task(world.op.play_browser(url, "alice", "wonderland")))

    before = len(world.web.requests)
    async with running_winch(yaml, open_browser=browser) as w:
        out = await curl(
            "-i",
            "http://me.cluster-a.internal/whoami",
            env={"http_proxy": f"http://127.0.0.1:{w.port}"},
        )
    assert out.startswith("HTTP/1.1 200"), out
    assert len(opened) == 1 and "code_challenge=" in opened[0]
    assert "close this tab" in await pages[0]
    assert world.web.requests[before].header("proxy-authorization") is None
    caches = list(tmp_path.iterdir())  # noqa: ASYNC240
    assert len(caches) == 1 and caches[0].stat().st_mode & 0o777 == 0o600
    async with running_winch(yaml, open_browser=browser) as w:
        out = await curl(
            "-i",
            "http://me.cluster-a.internal/again",
            env={"http_proxy": f"http://127.0.0.1:{w.port}"},
        )
    assert out.startswith("HTTP/1.1 200"), out
    assert len(opened) == 1  # no second login


async def test_config_reload_swaps_routes_and_a_bad_file_keeps_the_old(world: World) -> None:
    """A reload (SIGHUP, or the file changing: polled here every 50 ms) builds everything
    from the new file and swaps it in; a file that does not load changes nothing."""
    extra_route = f"""
  - name: b
    suffix: "*.cluster-b.internal"
    edge: https://127.0.0.1:{world.edge.port("https")}
    proxy_auth: ci
    backend_auth: svc
"""
    async with running_winch(world.winch_yaml(), watch_interval=0.05) as w:
        proxy = {"http_proxy": f"http://127.0.0.1:{w.port}"}
        out = await curl("-i", "http://api.ns.cluster-b.internal/", env=proxy)
        assert out.startswith("HTTP/1.1 403"), out  # not mapped yet
        assert w.config_path is not None
        path = Path(w.config_path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(world.winch_yaml(routes=extra_route))
        os.replace(tmp, path)
        async with asyncio.timeout(5):
            while [r.name for r in w.config.dialer.routes] != ["b", "cluster-a"]:
                await asyncio.sleep(0.02)
        # Mapped now: winch sends it to the edge, whose answer (it has no cluster-b route)
        # comes back labelled by the edge.
        out = await curl("-i", "http://api.ns.cluster-b.internal/", env=proxy)
        assert header_lines(out)["x-kedge-error-type"] == "no-route", out
        pac = await curl(f"http://127.0.0.1:{w.port}/proxy.pac")
        assert ".cluster-b.internal" in pac and f"PROXY 127.0.0.1:{w.port}" in pac
        # A broken file: the running config stays.
        tmp.write_text("routes: [{suffix: '*.x.internal', edge: ftp://nope}]\n")
        os.replace(tmp, path)
        assert w.reload("test") is False
        out = await curl("-i", "http://api.ns.cluster-b.internal/", env=proxy)
        assert header_lines(out)["x-kedge-error-type"] == "no-route", out
        out = await curl("-i", "http://api.ns.cluster-a.internal/", env=proxy)
        assert out.startswith("HTTP/1.1 200"), out


def _curl_as(uid: int, url: str) -> str:
    """curl run by another local user (the test runs as root in CI)."""
    done = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", url],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False,
    )
    return done.stdout + done.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="switching users needs root (CI runs as root)")
@pytest.mark.parametrize("lookup", ["sock_diag", "proc"])
async def test_other_local_users_are_refused(
    world: World, lookup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hardening X3: 127.0.0.1 is open to every user of a shared host; winch serves only
    the user it runs as (the kernel says who opened each connection: by sock_diag, or from
    /proc/net/tcp where netlink is not available)."""
    if lookup == "proc":

        def no_netlink(*_: object) -> None:
            raise Unknown("no netlink here")

        monkeypatch.setattr("winch.app.peer_uid", no_netlink)
    nobody = 65534
    async with running_winch(world.winch_yaml()) as w:
        url = f"http://127.0.0.1:{w.port}/healthz"
        mine = await curl("-i", url)
        theirs = await asyncio.to_thread(_curl_as, nobody, url)
    assert mine.startswith("HTTP/1.1 200"), mine
    assert theirs.startswith("HTTP/1.1 403"), theirs
    assert "x-winch-error-type: other-user" in theirs.lower()
    async with running_winch(world.winch_yaml("winch: {same_user_only: false}")) as w:
        shared = await asyncio.to_thread(_curl_as, nobody, f"http://127.0.0.1:{w.port}/healthz")
    assert shared.startswith("HTTP/1.1 200"), shared


async def test_websocket_through_winch_gets_credentials_and_a_tunnel(world: World) -> None:
    """kubectl exec/port-forward and browsers' WebSockets: the client tunnels through winch
    (CONNECT, then a plain upgrade request winch serves itself); HTTP/2 has no upgrades, so
    winch takes the upgrade to the edge on an HTTP/1.1 connection of its own, with both
    credentials, and splices it after the 101."""
    async with running_winch(world.winch_yaml()) as w:
        before = len(world.ws_auth)
        async with asyncio.timeout(10):
            async with ws_connect(
                "ws://ws.cluster-a.internal:8080/shell", proxy=f"http://127.0.0.1:{w.port}"
            ) as ws:
                for message in ("ls", "x" * 200_000, b"\x00binary"):
                    await ws.send(message)
                    assert await ws.recv() == message
    assert world.ws_auth[before:] == [f"Bearer {SERVICE_TOKEN}"]


async def test_websocket_refused_by_the_edge_is_passed_on(world: World) -> None:
    yaml = world.winch_yaml().replace("    proxy_auth: ci\n", "")
    async with running_winch(yaml) as w:
        async with asyncio.timeout(10):
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(
                    "ws://ws.cluster-a.internal:8080/", proxy=f"http://127.0.0.1:{w.port}"
                ):
                    pass
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["X-Kedge-Error-Type"] == "unauthenticated"


async def test_metrics_count_requests_errors_and_tunnels(world: World) -> None:
    async with running_winch(world.winch_yaml()) as w:
        env = {
            "http_proxy": f"http://127.0.0.1:{w.port}",
            "https_proxy": f"http://127.0.0.1:{w.port}",
        }
        await curl("-o", "/dev/null", "http://m.ns.cluster-a.internal/", env=env)
        await curl("-o", "/dev/null", "http://unmapped.test/", env=env)
        await curl(
            "-o", "/dev/null", "--cacert", str(world.dir / "ca.pem"),
            f"https://web.cluster-a.internal:{world.tls_port}/m", env=env,
        )  # fmt: skip
        out = await curl("-i", f"http://127.0.0.1:{w.port}/metrics")
    assert out.startswith("HTTP/1.1 200")
    assert "content-type: text/plain; version=0.0.4" in out.lower()
    # The plain request and the CONNECT (answered 200, then a tunnel) both count.
    assert 'winch_requests_total{route="cluster-a",code="200"} 2' in out
    assert 'winch_requests_total{route="-",code="403"} 1' in out
    assert 'winch_errors_total{kind="unmapped-host"} 1' in out
    assert 'winch_tunnels_total{path="edge"} 1' in out
    assert 'winch_config_reloads_total{result="failure"} 0' in out
    assert "winch_request_duration_seconds_bucket" in out
