"""Winch and the dialer to an edge that requires client certificates: from `edge_tls`, or
from an auth source (a kubeconfig user's `client-certificate-data`) used as the route's proxy
credential."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from kedge.dialer import Dialer, grpc_channel, parse_dialer_config_text
from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_hello_server
from tests.support.pki import TestPki
from tests.support.winch import running_winch

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class World:
    pki: TestPki
    edge: RunningEdge
    web: RecordingBackend
    grpc: GrpcServer

    def winch_yaml(self, edge_tls: str, route_extra: str = "", sources: str = "") -> str:
        return f"""
edge_tls: {{ca_file: {self.pki.ca.cert}, server_name: edge.test{edge_tls}}}
routes:
  - suffix: "*.cluster-a.internal"
    edge: https://127.0.0.1:{self.edge.port("https")}
{route_extra}
{sources}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    pki = TestPki.create(tmp_path_factory.mktemp("pki"))
    async with recording_backend() as web, grpc_hello_server(name="m") as g:
        edge_yaml = f"""
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: https
    address: "127.0.0.1:0"
    tls:
      cert_file: {pki.server.chain}
      key_file: {pki.server.key}
      client_certs: {{mode: required, ca_files: ["{pki.ca.cert}"]}}
backends:
  - {{name: web, resolver: {{static: {{endpoints: ["{web.address}"]}}}}}}
  - {{name: g, protocol: h2c, resolver: {{static: {{endpoints: ["{g.address}"]}}}}}}
routes:
  - {{name: g, backend: g, match: {{host: "greeter.cluster-a.internal"}}}}
  - {{name: web, backend: web, match: {{host: "*.cluster-a.internal"}}}}
auth:
  identity_header: x-kedge-principal
"""
        async with running_edge(edge_yaml) as edge:
            yield World(pki, edge, web, g)


async def curl_through(port: int, url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-i",
        "--max-time",
        "10",
        url,
        env=dict(os.environ, http_proxy=f"http://127.0.0.1:{port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out.decode()


async def test_client_certificate_from_edge_tls(world: World) -> None:
    c = world.pki.client
    cert = f", cert_file: {c.chain}, key_file: {c.key}"
    async with running_winch(world.winch_yaml(cert)) as w:
        out = await curl_through(w.port, "http://a.ns.cluster-a.internal/mtls")
        assert out.startswith("HTTP/1.1 200"), out
        principal = world.web.requests[-1].header("x-kedge-principal")
        assert principal is not None and "client-a" in principal


def write_kubeconfig(world: World, path: Path) -> None:
    b = world.pki.client_b
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "users": [
                    {
                        "name": "bob",
                        "user": {
                            "client-certificate-data": base64.b64encode(
                                b.chain.read_bytes()
                            ).decode(),
                            "client-key-data": base64.b64encode(b.key.read_bytes()).decode(),
                        },
                    }
                ],
            }
        )
    )


async def test_client_certificate_from_a_kubeconfig_user(world: World, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(world, kubeconfig)
    yaml_text = world.winch_yaml(
        "",
        "    proxy_auth: bob",
        f"auth_sources:\n  bob: {{kubeconfig: {{path: {kubeconfig}, user: bob}}}}",
    )
    async with running_winch(yaml_text) as w:
        out = await curl_through(w.port, "http://b.ns.cluster-a.internal/mtls")
        assert out.startswith("HTTP/1.1 200"), out
        principal = world.web.requests[-1].header("x-kedge-principal")
        assert principal is not None and "client-b" in principal


async def test_no_client_certificate_is_a_clear_502(world: World) -> None:
    before = len(world.web.requests)
    async with running_winch(world.winch_yaml("")) as w:
        out = await curl_through(w.port, "http://c.ns.cluster-a.internal/mtls")
    assert out.startswith("HTTP/1.1 502"), out
    head = out.split("\r\n\r\n", 1)[0].lower()
    # TLS 1.3: the edge refuses the missing certificate after the client's side of the
    # handshake is done, so winch sees the connection closed rather than a handshake error.
    assert "x-winch-error-type: upstream-reset" in head, head
    assert "requires client certificates" in head, head
    assert "traceback" not in out.lower()
    assert len(world.web.requests) == before


async def test_dialer_grpc_presents_the_kubeconfig_users_certificate(
    world: World, tmp_path: Path
) -> None:
    """The dialer's gRPC relay does the TLS, so an auth source's certificate reaches the edge
    (grpcio's own TLS fixes a certificate when the channel is made)."""
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(world, kubeconfig)
    config = parse_dialer_config_text(
        world.winch_yaml(
            "",
            "    proxy_auth: bob",
            f"auth_sources:\n  bob: {{kubeconfig: {{path: {kubeconfig}, user: bob}}}}",
        )
    )
    dialer = Dialer(config)
    try:
        async with grpc_channel(dialer, "greeter.cluster-a.internal:50051") as channel:
            reply = await hello_pb2_grpc.GreeterStub(channel).SayHello(
                hello_pb2.HelloRequest(name="cert"), timeout=10
            )
    finally:
        await dialer.aclose()
    assert reply.name == "m:cert"
    _, metadata = world.grpc.calls[-1]
    assert "client-b" in (metadata.get("x-kedge-principal") or "")
