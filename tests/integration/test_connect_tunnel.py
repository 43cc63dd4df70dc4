"""CONNECT tunnels through a real edge: curl as an HTTPS-proxy client, raw sockets for the rest.

The TLS service behind the edge (trustme certificate for svc.cluster-a.test) records the SNI
it was asked for and counts accepted connections, so refusals can assert that nothing was
dialled. Raw-TCP echo backends check pipelined bytes, half-close, close propagation and the
idle timeout. The auth cases use a pinned JWKS served on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
import trustme
from aiohttp import web

from tests.support.edge import RunningEdge, running_edge
from tests.support.h2_client import H2TestClient
from tests.support.oidc_provider import SigningKey, rsa_key

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(20)]

SVC = "svc.cluster-a.test"


# --- backends -----------------------------------------------------------------------------


@dataclass
class TlsService:
    port: int = 0
    accepts: int = 0
    sni: list[str | None] = field(default_factory=list)


@asynccontextmanager
async def tls_service(ca: trustme.CA) -> AsyncIterator[TlsService]:
    """HTTPS on 127.0.0.1 with a certificate for svc.cluster-a.test; answers `hello <path>`."""
    state = TlsService()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(SVC).configure_cert(ctx)
    ctx.sni_callback = lambda sock, name, _ctx: state.sni.append(name)  # type: ignore[assignment,func-returns-value]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1]
            body = b"hello " + path
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def counting() -> asyncio.Protocol:
        state.accepts += 1
        reader = asyncio.StreamReader()
        return asyncio.StreamReaderProtocol(reader, handle)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(counting, "127.0.0.1", 0, ssl=ctx)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()


@dataclass
class EchoBackend:
    """Echoes bytes; on EOF says `bye` and closes; `quit` makes it close at once."""

    port: int = 0
    accepts: int = 0
    received: bytearray = field(default_factory=bytearray)
    eofs: int = 0  # connections whose client side ended (EOF or close)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def echo_backend() -> AsyncIterator[EchoBackend]:
    state = EchoBackend()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.accepts += 1
        try:
            while data := await reader.read(65536):
                state.received += data
                if data.endswith(b"quit"):
                    return
                writer.write(data)
                await writer.drain()
            state.eofs += 1
            writer.write(b"bye")
            await writer.drain()
        except ConnectionError:
            state.eofs += 1
        finally:
            writer.close()
            state.closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()


def dead_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def jwks_server(key: SigningKey) -> AsyncIterator[str]:
    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [key.public_jwk]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# --- the edges ----------------------------------------------------------------------------


@dataclass
class World:
    edge: RunningEdge
    auth_edge: RunningEdge
    svc: TlsService
    echo: EchoBackend
    plain: EchoBackend  # behind a route without proxy_mode connect
    ca_file: str
    edge_ca_file: str
    key: SigningKey
    issuer: str

    def token(self, permissions: list[str]) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": "kedge", "sub": "winch-user", "iat": now,
                  "exp": now + 600, "permissions": permissions}  # fmt: skip
        return self.key.sign(claims)


def edge_yaml(w: dict[str, str], *, auth: str = "", idle: str = "1h") -> str:
    return f"""
listeners:
  - {{name: http, address: "127.0.0.1:0"}}
  - name: https
    address: "127.0.0.1:0"
    tls: {{cert_file: "{w["cert"]}", key_file: "{w["key"]}"}}
admin: {{address: "127.0.0.1:0"}}
limits: {{tunnel_idle_timeout: {idle}}}
backends:
  - {{name: svc, resolver: {{static: {{endpoints: ["127.0.0.1:{w["svc"]}"]}}}}}}
  - {{name: raw, resolver: {{static: {{endpoints: ["{w["echo"]}"]}}}}}}
  - {{name: plain, resolver: {{static: {{endpoints: ["{w["plain"]}"]}}}}}}
  - {{name: dead, resolver: {{static: {{endpoints: ["127.0.0.1:{w["dead"]}"]}}}}}}
  - name: half
    balancer: round_robin
    resolver: {{static: {{endpoints: ["127.0.0.1:{w["dead"]}", "{w["echo"]}"]}}}}
    outlier_detection: {{enabled: false}}
routes:
  - name: svc
    backend: svc
    match: {{host: {SVC}, proxy_mode: connect}}
    {"auth: {permissions: [tunnel]}" if auth else ""}
  - {{name: raw, backend: raw, match: {{host: raw.test, proxy_mode: connect}}}}
  - {{name: dead, backend: dead, match: {{host: dead.test, proxy_mode: connect}}}}
  - {{name: half, backend: half, match: {{host: half.test, proxy_mode: connect}}}}
  - {{name: plain, backend: plain, match: {{host: plain.test}}}}
adhoc:
  - {{dns_name: "*.adhoc-off.test", port: {{default: 443, allowed: [443]}}}}
  - dns_name: localhost
    port: {{default: {w["echo_port"]}, allowed: [{w["echo_port"]}]}}
    allow_connect: true
  - dns_name: "127.0.0.1"
    port: {{default: {w["echo_port"]}, allowed: [{w["echo_port"]}]}}
    allow_connect: true
    allow_loopback: true
{auth}
"""


def auth_yaml(issuer: str) -> str:
    return f"""
auth:
  default_route: {{anonymous: true}}
  adhoc: {{anonymous: true}}
  issuers:
    - {{name: op, issuer: "{issuer}", audiences: [kedge], jwks_url: "{issuer}/jwks"}}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    with tempfile.TemporaryDirectory() as d:
        ca = trustme.CA()
        ca_file = f"{d}/ca.pem"
        ca.cert_pem.write_to_path(ca_file)
        edge_ca = trustme.CA()
        edge_ca_file = f"{d}/edge-ca.pem"
        edge_ca.cert_pem.write_to_path(edge_ca_file)
        leaf = edge_ca.issue_cert("127.0.0.1", "edge.test")
        leaf.private_key_pem.write_to_path(f"{d}/key.pem")
        leaf.cert_chain_pems[0].write_to_path(f"{d}/cert.pem")
        key = rsa_key("k1")
        async with (
            tls_service(ca) as svc,
            echo_backend() as echo,
            echo_backend() as plain,
            jwks_server(key) as issuer,
        ):
            w = {"cert": f"{d}/cert.pem", "key": f"{d}/key.pem", "svc": str(svc.port),
                 "echo": echo.address, "echo_port": str(echo.port), "plain": plain.address,
                 "dead": str(dead_port())}  # fmt: skip
            async with (
                running_edge(edge_yaml(w)) as edge,
                running_edge(edge_yaml(w, auth=auth_yaml(issuer))) as auth_edge,
            ):
                yield World(edge, auth_edge, svc, echo, plain, ca_file, edge_ca_file, key, issuer)


# --- helpers ------------------------------------------------------------------------------


async def curl_via_proxy(*args: str) -> tuple[int, str, str, bytes]:
    """curl through a proxy: (exit code, CONNECT status, final status, body)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_connect} %{http_code}",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    body, _, codes = out.rpartition(b"\n")
    connect, _, final = codes.decode().partition(" ")
    assert proc.returncode is not None
    return proc.returncode, connect, final, body + err


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    head: bytes


async def connect(
    port: int, target: str, extra: str = "", trailing: bytes = b""
) -> tuple[Reply, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host = "" if "host:" in extra.lower() else f"Host: {target}\r\n"
    writer.write(f"CONNECT {target} HTTP/1.1\r\n{host}{extra}\r\n".encode("latin-1") + trailing)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines[1:] if line)
    headers = {n.strip().lower(): v.strip() for n, _, v in fields}
    return Reply(int(lines[0].split()[1]), headers, head), reader, writer


async def refused(port: int, target: str, extra: str = "") -> Reply:
    """A CONNECT the edge refuses: its reply, and the connection closes after it."""
    reply, reader, writer = await connect(port, target, extra)
    length = int(reply.headers.get("content-length", "0"))
    await asyncio.wait_for(reader.readexactly(length), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the edge closed
    writer.close()
    return reply


def access_line(edge: RunningEdge, route: str) -> dict[str, object]:
    lines = [json.loads(x) for x in edge.log_lines() if b'"method":"CONNECT"' in x]
    return next(x for x in reversed(lines) if x.get("route") == route)


async def eventually(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- curl, end-to-end TLS -----------------------------------------------------------------


async def test_curl_https_through_plain_listener(world: World) -> None:
    before = world.svc.accepts
    code, connect_status, status, body = await curl_via_proxy(
        "-p", "-x", f"http://127.0.0.1:{world.edge.port()}", "--cacert", world.ca_file,
        f"https://{SVC}:{world.svc.port}/x",
    )  # fmt: skip
    assert code == 0, body
    assert (connect_status, status, body) == ("200", "200", b"hello /x")
    assert world.svc.accepts == before + 1
    assert world.svc.sni[-1] == SVC  # the client's own TLS, end to end
    await eventually(lambda: access_line(world.edge, "svc")["status"] == 200)
    line = access_line(world.edge, "svc")
    assert line["backend"] == "svc" and line["endpoint"] == f"127.0.0.1:{world.svc.port}"
    assert int(line["bytes_in"]) > 0 and int(line["bytes_out"]) > 0  # type: ignore[call-overload]
    metrics = world.edge.app.registry.render()
    text = metrics.decode() if isinstance(metrics, bytes) else metrics
    assert 'kedge_requests_total{listener="http",route="svc",backend="svc",code="200"}' in text


async def test_curl_https_through_tls_listener(world: World) -> None:
    code, connect_status, status, body = await curl_via_proxy(
        "-p", "--proxy", f"https://127.0.0.1:{world.edge.port('https')}",
        "--proxy-cacert", world.edge_ca_file, "--cacert", world.ca_file,
        f"https://{SVC}:{world.svc.port}/over-tls",
    )  # fmt: skip
    assert code == 0, body
    assert (connect_status, status, body) == ("200", "200", b"hello /over-tls")
    assert world.svc.sni[-1] == SVC


# --- auth -----------------------------------------------------------------------------------


async def test_no_credential_is_407_with_proxy_authenticate(world: World) -> None:
    before = world.svc.accepts
    reply = await refused(world.auth_edge.port(), f"{SVC}:{world.svc.port}")
    assert reply.status == 407
    assert reply.headers["x-kedge-error-type"] == "proxy-auth-required"
    assert reply.headers["proxy-authenticate"].startswith("Bearer")
    assert "www-authenticate" not in reply.headers
    code, connect_status, _, _ = await curl_via_proxy(
        "-p", "-x", f"http://127.0.0.1:{world.auth_edge.port()}", "--cacert", world.ca_file,
        f"https://{SVC}:{world.svc.port}/x",
    )  # fmt: skip
    assert connect_status == "407" and code != 0
    assert world.svc.accepts == before


async def test_invalid_token_is_407(world: World) -> None:
    reply = await refused(
        world.auth_edge.port(),
        f"{SVC}:{world.svc.port}",
        "Proxy-Authorization: Bearer not.a.token\r\n",
    )
    assert reply.status == 407
    assert 'error="invalid_token"' in reply.headers["proxy-authenticate"]


async def test_valid_token_opens_the_tunnel(world: World) -> None:
    token = world.token(["tunnel"])
    code, connect_status, status, body = await curl_via_proxy(
        "-p", "-x", f"http://127.0.0.1:{world.auth_edge.port()}",
        "--proxy-header", f"Proxy-Authorization: Bearer {token}",
        "--cacert", world.ca_file, f"https://{SVC}:{world.svc.port}/authed",
    )  # fmt: skip
    assert code == 0, body
    assert (connect_status, status, body) == ("200", "200", b"hello /authed")
    await eventually(lambda: access_line(world.auth_edge, "svc")["status"] == 200)
    assert access_line(world.auth_edge, "svc")["principal"]


async def test_wrong_permission_is_403(world: World) -> None:
    before = world.svc.accepts
    token = world.token(["other"])
    reply = await refused(
        world.auth_edge.port(),
        f"{SVC}:{world.svc.port}",
        f"Proxy-Authorization: Bearer {token}\r\n",
    )
    assert reply.status == 403
    assert reply.headers["x-kedge-error-type"] == "permission-denied"
    assert world.svc.accepts == before


# --- routing and adhoc ----------------------------------------------------------------------


async def test_no_route_is_404(world: World) -> None:
    reply = await refused(world.edge.port(), "nowhere.test:443")
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (404, "no-route")


async def test_route_without_connect_mode_does_not_match(world: World) -> None:
    reply = await refused(world.edge.port(), "plain.test:443")
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (404, "no-route")
    assert world.plain.accepts == 0


async def test_adhoc_without_allow_connect_is_refused(world: World) -> None:
    reply = await refused(world.edge.port(), "a.adhoc-off.test:443")
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (403, "forbidden")
    assert "CONNECT" in reply.headers["x-kedge-error"]


async def test_adhoc_to_a_denied_address_is_403_without_a_connection(world: World) -> None:
    before = world.echo.accepts
    reply = await refused(world.edge.port(), f"localhost:{world.echo.port}")
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (403, "forbidden")
    assert "denied" in reply.headers["x-kedge-error"]
    assert world.echo.accepts == before


async def test_adhoc_disallowed_port_is_403(world: World) -> None:
    reply = await refused(world.edge.port(), "127.0.0.1:22")
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (403, "forbidden")


async def test_adhoc_allowed_opens_a_tunnel(world: World) -> None:
    reply, reader, writer = await connect(world.edge.port(), f"127.0.0.1:{world.echo.port}")
    assert reply.status == 200
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    writer.close()


# --- malformed CONNECTs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        ("raw.test:443", "Content-Length: 3\r\n"),
        ("raw.test:443", "Transfer-Encoding: chunked\r\n"),
        ("raw.test", ""),  # no port
        ("raw.test:", ""),
        ("user@raw.test:443", ""),
        ("/raw", "Host: raw.test\r\n"),
        ("http://raw.test:443", "Host: raw.test:443\r\n"),
        ("raw.test:443", "Host: other.test:443\r\n"),  # Host disagrees
        ("raw.test:99999", ""),
    ],
)
async def test_malformed_connect_is_400(world: World, target: str, extra: str) -> None:
    before = world.echo.accepts
    reply = await refused(world.edge.port(), target, extra)
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (400, "bad-request")
    assert world.echo.accepts == before


# --- the tunnel -----------------------------------------------------------------------------


async def test_pipelined_bytes_belong_to_the_tunnel(world: World) -> None:
    # Looks like HTTP, but after a CONNECT it is tunnel payload, never parsed.
    payload = b"GET /not-http HTTP/1.1\r\nHost: x\r\n\r\n"
    reply, reader, writer = await connect(world.edge.port(), "raw.test:443", trailing=payload)
    assert reply.status == 200
    assert "content-length" not in reply.headers and "transfer-encoding" not in reply.headers
    assert "connection" not in reply.headers
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 5) == payload
    writer.close()


async def test_half_close_passes_through(world: World) -> None:
    reply, reader, writer = await connect(world.edge.port(), "raw.test:443")
    assert reply.status == 200
    writer.write(b"abc")
    writer.write_eof()  # the backend sees EOF, and can still answer
    assert await asyncio.wait_for(reader.read(), 5) == b"abcbye"
    writer.close()


async def test_closing_the_client_closes_the_backend(world: World) -> None:
    world.echo.closed.clear()
    eofs = world.echo.eofs
    reply, reader, writer = await connect(world.edge.port(), "raw.test:443")
    assert reply.status == 200
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
    writer.close()
    await asyncio.wait_for(world.echo.closed.wait(), 5)
    assert world.echo.eofs == eofs + 1


async def test_closing_the_backend_closes_the_client(world: World) -> None:
    reply, reader, writer = await connect(world.edge.port(), "raw.test:443")
    assert reply.status == 200
    writer.write(b"quit")  # the echo backend closes its side at once
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_refused_endpoint_is_502(world: World) -> None:
    reply = await refused(world.edge.port(), "dead.test:443")
    assert (reply.status, reply.headers["x-kedge-error-type"]) == (502, "upstream-connect")


async def test_one_dead_endpoint_of_two_still_opens(world: World) -> None:
    for _ in range(4):  # round robin starts on either endpoint
        reply, reader, writer = await connect(world.edge.port(), "half.test:443")
        assert reply.status == 200
        writer.write(b"ok")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
        writer.close()


async def test_idle_tunnel_is_closed(world: World) -> None:
    async with echo_backend() as echo:
        yaml = f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
limits: {{tunnel_idle_timeout: 0.5s}}
backends: [{{name: raw, resolver: {{static: {{endpoints: ["{echo.address}"]}}}}}}]
routes: [{{name: raw, backend: raw, match: {{host: raw.test, proxy_mode: connect}}}}]
"""
        async with running_edge(yaml) as edge:
            reply, reader, writer = await connect(edge.port(), "raw.test:443")
            assert reply.status == 200
            for _ in range(4):  # traffic keeps it open past the timeout
                writer.write(b"k")
                assert await asyncio.wait_for(reader.readexactly(1), 5) == b"k"
                last = time.monotonic()
                await asyncio.sleep(0.3)
            with suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
            # Closed once 0.5 s passed without a byte (the sweeper looks every 0.25 s).
            assert 0.45 <= time.monotonic() - last < 2.0
            await asyncio.wait_for(echo.closed.wait(), 5)
            writer.close()


async def test_drain_closes_tunnels_at_its_deadline() -> None:
    async with echo_backend() as echo:
        yaml = f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
timeouts: {{drain: 0.5s}}
backends: [{{name: raw, resolver: {{static: {{endpoints: ["{echo.address}"]}}}}}}]
routes: [{{name: raw, backend: raw, match: {{host: raw.test, proxy_mode: connect}}}}]
"""
        async with running_edge(yaml) as edge:
            reply, reader, writer = await connect(edge.port(), "raw.test:443")
            assert reply.status == 200
            started = time.monotonic()
            drain = asyncio.create_task(edge.app.drain())
            writer.write(b"still")  # the tunnel works while the edge drains
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"still"
            with suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.4 <= time.monotonic() - started < 3.0
            await asyncio.wait_for(drain, 5)
            await asyncio.wait_for(echo.closed.wait(), 5)
            await eventually(lambda: access_line(edge, "raw")["status"] == 200)
            writer.close()


# --- CONNECT over HTTP/2 (RFC 9113 §8.5) -------------------------------------------------------


def h2_connect(authority: str, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"CONNECT"), (b":authority", authority.encode()), *extra]


async def test_h2_connect_carries_bytes_both_ways_and_half_closes(world: World) -> None:
    """DATA frames are the tunnel; the client's END_STREAM half-closes towards the endpoint,
    whose answer to the EOF (`bye`) still arrives before the stream ends."""
    client = await H2TestClient.connect(world.edge.port())
    try:
        sid = client.request(h2_connect("raw.test:443"), b"ping", end=True)
        result = await client.wait(sid)
    finally:
        await client.aclose()
    assert result.status == 200 and result.reset_code is None
    assert result.body == b"pingbye"
    assert result.header(b"content-length") is None


async def test_h2_connect_to_a_tls_service_end_to_end(world: World) -> None:
    """The client's own TLS runs inside the stream: the edge only moves bytes."""
    client = await H2TestClient.connect(world.edge.port())
    ctx = ssl.create_default_context(cafile=world.ca_file)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=SVC)
    sid = client.request(h2_connect(f"{SVC}:{world.svc.port}"), end=False)
    seen = 0
    answer = b""
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    if tls.version() is None:
                        tls.do_handshake()
                    elif not answer:
                        tls.write(f"GET /h2 HTTP/1.1\r\nHost: {SVC}\r\n\r\n".encode())
                        answer = b"-"
                    else:
                        answer += tls.read(65536)
                        if b"hello /h2" in answer:
                            break
                except ssl.SSLWantReadError:
                    pass
                if data := outgoing.read():
                    client.conn.send_data(sid, data)
                    client.flush()
                result = client.streams[sid]
                if len(result.body) > seen:
                    incoming.write(result.body[seen:])
                    seen = len(result.body)
                    continue
                assert result.reset_code is None and not result.ended
                client._changed.clear()
                await client._changed.wait()
    finally:
        await client.aclose()
    assert client.streams[sid].status == 200
    assert world.svc.sni[-1] == SVC


async def test_h2_connect_needs_the_proxy_credential(world: World) -> None:
    before = world.svc.accepts
    client = await H2TestClient.connect(world.auth_edge.port())
    try:
        target = f"{SVC}:{world.svc.port}"
        refused_sid = client.request(h2_connect(target))
        refused = await client.wait(refused_sid)
        token = f"Bearer {world.token(['tunnel'])}".encode()
        ok_sid = client.request(h2_connect(target, (b"proxy-authorization", token)), end=False)
        async with asyncio.timeout(5):
            while client.streams[ok_sid].status == 0:
                client._changed.clear()
                await client._changed.wait()
        client.conn.reset_stream(ok_sid)
        client.flush()
    finally:
        await client.aclose()
    assert refused.status == 407
    assert refused.header(b"x-kedge-error-type") == b"proxy-auth-required"
    assert (refused.header(b"proxy-authenticate") or b"").startswith(b"Bearer")
    assert client.streams[ok_sid].status == 200
    assert world.svc.accepts == before + 1  # only the admitted tunnel reached the service


@pytest.mark.parametrize(
    "fields",
    [
        h2_connect("raw.test:443", (b":scheme", b"https"), (b":path", b"/")),
        h2_connect("raw.test"),  # no port
        h2_connect("raw.test:443", (b"content-length", b"4")),
    ],
    ids=["scheme and path", "no port", "content-length"],
)
async def test_h2_connect_malformed_is_400(world: World, fields: list[tuple[bytes, bytes]]) -> None:
    before = world.echo.accepts
    client = await H2TestClient.connect(world.edge.port())
    try:
        result = await client.wait(client.request(fields))
    finally:
        await client.aclose()
    # h2 itself refuses `:scheme`/`:path` on a CONNECT as a connection error (GOAWAY
    # PROTOCOL_ERROR, hardening C6); the edge answers the other malformed ones 400.
    if client.goaway is not None:
        assert client.goaway.error_code == 1  # PROTOCOL_ERROR
    else:
        assert result.status == 400
    assert world.echo.accepts == before


async def test_h2_connect_reset_by_the_client_closes_the_endpoint(world: World) -> None:
    world.echo.closed.clear()
    client = await H2TestClient.connect(world.edge.port())
    try:
        sid = client.request(h2_connect("raw.test:443"), b"hold", end=False)
        async with asyncio.timeout(5):
            while client.streams[sid].body != b"hold":
                client._changed.clear()
                await client._changed.wait()
        client.conn.reset_stream(sid)
        client.flush()
        async with asyncio.timeout(5):
            await world.echo.closed.wait()
    finally:
        await client.aclose()
