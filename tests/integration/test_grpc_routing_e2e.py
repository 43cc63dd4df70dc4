"""gRPC routes through a real edge: by method, service glob, metadata and authority.

Three grpc.aio servers stand behind three backends; grpcio clients call through the edge,
and the reply's server name shows which route won (first match in file order).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_channel, grpc_hello_server


def edge_yaml(a: str, b: str, c: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - {{name: a, protocol: h2c, resolver: {{static: {{endpoints: ["{a}"]}}}}}}
  - {{name: b, protocol: h2c, resolver: {{static: {{endpoints: ["{b}"]}}}}}}
  - {{name: c, protocol: h2c, resolver: {{static: {{endpoints: ["{c}"]}}}}}}
routes:
  - name: tenant-blue
    backend: c
    match:
      host: "*.svc.test"
      grpc_methods: ["kedge.*"]
      headers: [{{name: x-tenant, exact: blue}}]
  - name: hello-only
    backend: b
    match: {{host: "*.svc.test", grpc_methods: ["kedge.e2e.Greeter/SayHello"]}}
  - name: other-service
    backend: b
    match: {{host: "*.svc.test", grpc_methods: ["kedge.e2e.Other"]}}
  - name: greeter
    backend: a
    match: {{host: "*.svc.test", grpc_methods: ["kedge.e2e.Greeter/*"]}}
  - name: plain-http
    backend: a
    match: {{host: "*.svc.test"}}
"""


@pytest.fixture
async def edge() -> AsyncIterator[tuple[RunningEdge, GrpcServer, GrpcServer, GrpcServer]]:
    async with (
        grpc_hello_server(name="a") as a,
        grpc_hello_server(name="b") as b,
        grpc_hello_server(name="c") as c,
        running_edge(edge_yaml(a.address, b.address, c.address)) as e,
    ):
        yield e, a, b, c


async def test_routes_by_method_service_and_metadata(
    edge: tuple[RunningEdge, GrpcServer, GrpcServer, GrpcServer],
) -> None:
    e, _, _, c = edge
    async with grpc_channel(f"127.0.0.1:{e.port()}", authority="api.svc.test") as ch:
        greeter = hello_pb2_grpc.GreeterStub(ch)
        other = hello_pb2_grpc.OtherStub(ch)
        assert (await greeter.SayHello(hello_pb2.HelloRequest(name="x"), timeout=5)).name == "b:x"
        replies = greeter.ServerStream(hello_pb2.StreamRequest(name="s", count=1), timeout=5)
        assert [r.name async for r in replies] == ["a:s"]  # Greeter/* after the exact method
        assert (await other.Ping(hello_pb2.HelloRequest(name="p"), timeout=5)).name == "b:p"
        blue = (("x-tenant", "blue"),)
        reply = await greeter.SayHello(hello_pb2.HelloRequest(name="t"), metadata=blue, timeout=5)
        assert reply.name == "c:t"  # metadata route first in file order
    assert [m for m, _ in c.calls] == ["/kedge.e2e.Greeter/SayHello"]


async def test_authority_must_match(
    edge: tuple[RunningEdge, GrpcServer, GrpcServer, GrpcServer],
) -> None:
    e, a, b, c = edge
    async with grpc_channel(f"127.0.0.1:{e.port()}", authority="api.elsewhere.test") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await hello_pb2_grpc.GreeterStub(ch).SayHello(hello_pb2.HelloRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert a.calls == b.calls == c.calls == []
