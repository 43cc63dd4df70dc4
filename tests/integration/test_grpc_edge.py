"""gRPC through the edge with real grpcio clients and grpc.aio servers.

All four call kinds, metadata and trailers, status codes, deadlines, cancellation and
16 MiB messages; clients reach the edge over h2c and over TLS, and the edge reaches the
servers over h2c (`protocol: h2c`) and over TLS (`protocol: h2`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import trustme

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.edge import RunningEdge, running_edge
from tests.support.grpc_hello import GrpcServer, grpc_channel, grpc_hello_server
from tests.support.ops_tls import TlsFiles, tls_files


def edge_yaml(tls: TlsFiles, h2c: str, h2: str, backend_ca: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
  - name: https
    address: 127.0.0.1:0
    tls: {{cert_file: {tls.cert_file}, key_file: {tls.key_file}}}
admin:
  address: 127.0.0.1:0
limits:
  max_request_body_bytes: 32MiB
backends:
  - name: plain
    protocol: h2c
    resolver: {{static: {{endpoints: ["{h2c}"]}}}}
    timeouts: {{response_header: 1s}}
  - name: secure
    protocol: h2
    tls: {{ca_file: {backend_ca}, server_name: localhost}}
    resolver: {{static: {{endpoints: ["{h2}"]}}}}
routes:
  - backend: plain
    match: {{host: plain.test}}
  - backend: secure
    match: {{host: secure.test}}
"""


@dataclass
class Setup:
    edge: RunningEdge
    plain: GrpcServer
    secure: GrpcServer
    client_ca: trustme.CA


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    with tempfile.TemporaryDirectory() as d:
        tls = tls_files(d)
        backend_ca = trustme.CA()
        ca_file = os.path.join(d, "backend-ca.pem")
        backend_ca.cert_pem.write_to_path(ca_file)
        async with (
            grpc_hello_server(name="plain") as plain,
            grpc_hello_server(name="secure", tls=backend_ca) as secure,
            running_edge(edge_yaml(tls, plain.address, secure.address, ca_file)) as edge,
        ):
            yield Setup(edge, plain, secure, tls.ca)


CLIENTS = ["h2c", "tls"]
BACKENDS = ["plain", "secure"]


def channel(s: Setup, client: str, backend: str) -> grpc.aio.Channel:
    authority = f"{backend}.test"
    if client == "tls":
        port = s.edge.port("https")
        return grpc_channel(
            f"127.0.0.1:{port}", tls=s.client_ca, authority=authority, server_name="edge.test"
        )
    return grpc_channel(f"127.0.0.1:{s.edge.port('http')}", authority=authority)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_four_call_kinds(setup: Setup, client: str, backend: str) -> None:
    async with channel(setup, client, backend) as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        reply = await stub.SayHello(hello_pb2.HelloRequest(name="x"), timeout=5)
        assert reply.name == f"{backend}:x"
        stream = stub.ServerStream(hello_pb2.StreamRequest(name="s", count=5), timeout=5)
        assert [r.count async for r in stream] == [0, 1, 2, 3, 4]

        async def requests() -> AsyncIterator[hello_pb2.HelloRequest]:
            for i in range(4):
                yield hello_pb2.HelloRequest(name=str(i), payload=b"p" * 1000)

        reply = await stub.ClientStream(requests(), timeout=5)
        assert reply.count == 4 and reply.payload_bytes == 4000
        bidi = stub.Bidi(timeout=5)
        for i in range(3):
            # Each reply arrives before the next request is sent: streamed, not buffered.
            await bidi.write(hello_pb2.HelloRequest(name=f"b{i}"))
            answer = await bidi.read()
            assert answer.name == f"{backend}:b{i}"
        await bidi.done_writing()
        assert await bidi.read() == grpc.aio.EOF
        assert await bidi.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("client", CLIENTS)
async def test_metadata_trailers_and_status(setup: Setup, client: str) -> None:
    async with channel(setup, client, "plain") as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        call = stub.SayHello(
            hello_pb2.HelloRequest(name="m"),
            metadata=(("x-echo-metadata", "1"), ("x-color", "blue"), ("x-raw-bin", b"\x00\xff")),
            timeout=5,
        )
        await call
        initial = dict(await call.initial_metadata())
        trailing = dict(await call.trailing_metadata())
        assert initial["x-color"] == "blue"
        assert trailing["x-color-trailer"] == "blue"
        assert trailing["x-raw-trailer-bin"] == b"\x00\xff"
        _, metadata = setup.plain.calls[-1]
        assert metadata["x-color"] == "blue"
        assert "x-forwarded-for" in metadata and "x-request-id" in metadata
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SayHello(
                hello_pb2.HelloRequest(name="f"),
                metadata=(("x-fail-code", "5"), ("x-fail-message", "nothing here: 100%")),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "nothing here: 100%"


async def test_deadline_reaches_the_backend_and_cancels_it(setup: Setup) -> None:
    async with channel(setup, "h2c", "plain") as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SayHello(
                hello_pb2.HelloRequest(name="slow"), metadata=(("x-delay-ms", "3000"),), timeout=0.3
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await setup.plain.wait_cancelled(1, timeout=3)


async def test_client_cancel_cancels_the_backend_call(setup: Setup) -> None:
    async with channel(setup, "tls", "secure") as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        call = stub.SayHello(
            hello_pb2.HelloRequest(name="c"), metadata=(("x-delay-ms", "5000"),), timeout=10
        )
        for _ in range(100):
            if setup.secure.calls:
                break
            await asyncio.sleep(0.01)
        call.cancel()
        await setup.secure.wait_cancelled(1, timeout=3)


@pytest.mark.parametrize("client", CLIENTS)
async def test_16_mib_round_trip(setup: Setup, client: str) -> None:
    payload = os.urandom(16 * 1024 * 1024)
    async with channel(setup, client, "secure") as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        reply = await stub.SayHello(hello_pb2.HelloRequest(name="big", payload=payload), timeout=60)
        assert reply.payload == payload


async def test_message_over_the_body_limit_is_resource_exhausted(setup: Setup) -> None:
    async with channel(setup, "h2c", "plain") as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SayHello(hello_pb2.HelloRequest(payload=b"x" * (33 << 20)), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than" in (err.value.details() or "")


async def test_long_bidi_stream_outlives_response_timeout(setup: Setup) -> None:
    # backends[plain].timeouts.response_header is 1 s; a stream with no grpc-timeout is cut
    # by no timeout while it is active (the 10-minute stream of the issue, scaled down).
    async with channel(setup, "h2c", "plain") as ch:
        stub = hello_pb2_grpc.GreeterStub(ch)
        bidi = stub.Bidi()
        for i in range(6):
            await bidi.write(hello_pb2.HelloRequest(name=f"t{i}"))
            assert (await bidi.read()).name == f"plain:t{i}"
            await asyncio.sleep(0.4)
        await bidi.done_writing()
        assert await bidi.code() == grpc.StatusCode.OK


async def test_edge_errors_as_grpc_statuses(setup: Setup) -> None:
    async with grpc_channel(f"127.0.0.1:{setup.edge.port('http')}", authority="unknown.test") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await hello_pb2_grpc.GreeterStub(ch).SayHello(hello_pb2.HelloRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "no route" in (err.value.details() or "")
    await setup.plain.stop()
    async with channel(setup, "h2c", "plain") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await hello_pb2_grpc.GreeterStub(ch).SayHello(hello_pb2.HelloRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
