"""The gRPC test server and channel of tests/support/grpc_hello.py, called directly (no edge).

Every test runs over h2c and over TLS (trustme): all four call kinds, metadata echo in
headers and trailers, failure codes, deadlines and cancellation reaching the server, and a
16 MiB unary round trip. Edge tests rely on each of these behaviours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest
import trustme
import uvloop

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.grpc_hello import GREETER, OTHER, GrpcServer, grpc_channel, grpc_hello_server

HelloRequest = hello_pb2.HelloRequest


@dataclass
class Direct:
    server: GrpcServer
    channel: grpc.aio.Channel
    greeter: hello_pb2_grpc.GreeterStub
    ca: trustme.CA | None


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["h2c", "tls"])
async def direct(request: pytest.FixtureRequest, ca: trustme.CA) -> AsyncIterator[Direct]:
    tls = ca if request.param == "tls" else None
    async with (
        grpc_hello_server(tls=tls, name="a") as server,
        grpc_channel(server.address, tls=tls) as channel,
    ):
        yield Direct(server, channel, hello_pb2_grpc.GreeterStub(channel), tls)


async def test_grpc_aio_runs_on_the_uvloop_loop(direct: Direct) -> None:
    # tests/conftest.py makes every test loop a uvloop one; grpc.aio must work on it.
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    assert (await direct.greeter.SayHello(HelloRequest(name="u"))).name == "a:u"


async def test_unary_names_the_server_and_echoes_the_payload(direct: Direct) -> None:
    reply = await direct.greeter.SayHello(HelloRequest(name="bob", payload=b"\x00\xff"))
    assert (reply.name, reply.payload) == ("a:bob", b"\x00\xff")
    assert direct.server.methods() == [f"/{GREETER}/SayHello"]


async def test_other_service_ping_is_recorded_under_its_own_path(direct: Direct) -> None:
    reply = await hello_pb2_grpc.OtherStub(direct.channel).Ping(HelloRequest(name="p"))
    assert reply.name == "a:p"
    assert direct.server.methods() == [f"/{OTHER}/Ping"]


async def test_server_stream_sends_count_replies_interval_apart(direct: Direct) -> None:
    request = hello_pb2.StreamRequest(name="s", count=4, interval_ms=50)
    arrivals: list[float] = []
    indices: list[int] = []
    async for reply in direct.greeter.ServerStream(request):
        arrivals.append(time.monotonic())
        indices.append(reply.count)
        assert reply.name == "a:s"
    assert indices == [0, 1, 2, 3]
    # Replies are streamed, not batched: three gaps of ~50 ms between first and last.
    assert arrivals[-1] - arrivals[0] >= 0.12


async def test_server_stream_of_zero_ends_ok(direct: Direct) -> None:
    call = direct.greeter.ServerStream(hello_pb2.StreamRequest(name="s", count=0))
    assert [reply async for reply in call] == []
    assert await call.code() == grpc.StatusCode.OK


async def test_client_stream_counts_messages_and_payload_bytes(direct: Direct) -> None:
    async def requests() -> AsyncIterator[hello_pb2.HelloRequest]:
        for i in range(5):
            yield HelloRequest(name=str(i), payload=b"x" * (i * 1000))

    reply = await direct.greeter.ClientStream(requests())
    assert (reply.name, reply.count, reply.payload_bytes) == ("a:0,1,2,3,4", 5, 10_000)


async def test_bidi_answers_each_message_before_the_next_is_sent(direct: Direct) -> None:
    call = direct.greeter.Bidi()
    for i in range(3):
        await call.write(HelloRequest(name=f"m{i}", payload=bytes([i])))
        reply = await asyncio.wait_for(call.read(), timeout=5)
        assert isinstance(reply, hello_pb2.HelloReply)
        assert (reply.name, reply.payload, reply.count) == (f"a:m{i}", bytes([i]), i)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_calls_record_request_metadata(direct: Direct) -> None:
    await direct.greeter.SayHello(HelloRequest(name="m"), metadata=[("x-tenant", "t1")])
    [(method, metadata)] = direct.server.calls
    assert method == f"/{GREETER}/SayHello"
    assert metadata["x-tenant"] == "t1"
    assert str(metadata["user-agent"]).startswith("grpc-python")


async def test_echo_metadata_returns_x_keys_as_headers_and_suffixed_trailers(
    direct: Direct,
) -> None:
    call = direct.greeter.SayHello(
        HelloRequest(name="e"),
        metadata=[("x-echo-metadata", "1"), ("x-a", "va"), ("x-b-bin", b"\x00\x01"), ("y", "no")],
    )
    await call
    initial = dict(await call.initial_metadata())
    trailing = dict(await call.trailing_metadata())
    assert initial == {"x-echo-metadata": "1", "x-a": "va", "x-b-bin": b"\x00\x01"}
    assert trailing == {
        "x-echo-metadata-trailer": "1",
        "x-a-trailer": "va",
        "x-b-trailer-bin": b"\x00\x01",
    }


async def test_echo_metadata_on_a_bidi_stream(direct: Direct) -> None:
    call = direct.greeter.Bidi(metadata=[("x-echo-metadata", "1"), ("x-s", "1")])
    await call.write(HelloRequest(name="one"))
    assert dict(await call.initial_metadata())["x-s"] == "1"
    await call.done_writing()
    assert [reply.name async for reply in call] == ["a:one"]
    assert dict(await call.trailing_metadata())["x-s-trailer"] == "1"


async def test_without_echo_no_x_metadata_comes_back(direct: Direct) -> None:
    call = direct.greeter.SayHello(HelloRequest(name="n"), metadata=[("x-a", "va")])
    await call
    assert "x-a" not in dict(await call.initial_metadata())
    assert "x-a-trailer" not in dict(await call.trailing_metadata())


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (3, grpc.StatusCode.INVALID_ARGUMENT),
        (5, grpc.StatusCode.NOT_FOUND),
        (7, grpc.StatusCode.PERMISSION_DENIED),
        (14, grpc.StatusCode.UNAVAILABLE),
        (16, grpc.StatusCode.UNAUTHENTICATED),
        (99, grpc.StatusCode.UNKNOWN),  # not a gRPC code
    ],
)
async def test_fail_code_ends_the_call_with_that_status_and_message(
    direct: Direct, code: int, status: grpc.StatusCode
) -> None:
    metadata = [("x-fail-code", str(code)), ("x-fail-message", f"failed {code}")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await direct.greeter.SayHello(HelloRequest(name="f"), metadata=metadata)
    assert (info.value.code(), info.value.details()) == (status, f"failed {code}")
    assert direct.server.methods() == [f"/{GREETER}/SayHello"]


async def test_fail_code_with_echo_sends_headers_then_status_with_trailers(direct: Direct) -> None:
    call = direct.greeter.ServerStream(
        hello_pb2.StreamRequest(name="s", count=3),
        metadata=[("x-echo-metadata", "1"), ("x-fail-code", "9"), ("x-id", "7")],
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [reply async for reply in call]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(info.value.initial_metadata())["x-id"] == "7"
    assert dict(info.value.trailing_metadata())["x-id-trailer"] == "7"


async def test_fail_code_zero_is_a_normal_answer(direct: Direct) -> None:
    reply = await direct.greeter.SayHello(HelloRequest(name="z"), metadata=[("x-fail-code", "0")])
    assert reply.name == "a:z"


async def test_delay_past_the_deadline_is_deadline_exceeded_and_cancels_the_server(
    direct: Direct,
) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await direct.greeter.SayHello(
            HelloRequest(name="d"), metadata=[("x-delay-ms", "5000")], timeout=0.2
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    await direct.server.wait_cancelled(1)
    assert direct.server.cancelled == [f"/{GREETER}/SayHello"]


async def test_delay_within_the_deadline_answers(direct: Direct) -> None:
    started = time.monotonic()
    reply = await direct.greeter.SayHello(
        HelloRequest(name="d"), metadata=[("x-delay-ms", "100")], timeout=5
    )
    assert reply.name == "a:d"
    assert time.monotonic() - started >= 0.09
    assert direct.server.cancelled == []


async def test_client_cancel_of_a_stream_is_recorded(direct: Direct) -> None:
    call = direct.greeter.ServerStream(hello_pb2.StreamRequest(name="c", count=100, interval_ms=50))
    first = await call.read()
    assert isinstance(first, hello_pb2.HelloReply)
    assert call.cancel()
    await direct.server.wait_cancelled(1)
    assert direct.server.cancelled == [f"/{GREETER}/ServerStream"]
    assert await call.code() == grpc.StatusCode.CANCELLED


async def test_sixteen_mib_unary_round_trip(direct: Direct) -> None:
    payload = bytes(range(256)) * (16 * 1024 * 1024 // 256)
    reply = await direct.greeter.SayHello(HelloRequest(name="big", payload=payload), timeout=30)
    assert reply.payload == payload


async def test_server_stop_ends_open_calls_with_unavailable(direct: Direct) -> None:
    call = direct.greeter.Bidi()
    await call.write(HelloRequest(name="1"))
    assert isinstance(await call.read(), hello_pb2.HelloReply)
    await direct.server.stop()
    assert await asyncio.wait_for(call.code(), timeout=5) == grpc.StatusCode.UNAVAILABLE


async def test_tls_channel_with_authority_verifies_that_name(ca: trustme.CA) -> None:
    async with (
        grpc_hello_server(tls=ca) as server,
        grpc_channel(server.address, tls=ca, authority="localhost") as channel,
    ):
        reply = await hello_pb2_grpc.GreeterStub(channel).SayHello(HelloRequest(name="n"))
        assert reply.name == "a:n"


async def test_tls_channel_rejects_a_server_from_another_ca(ca: trustme.CA) -> None:
    async with (
        grpc_hello_server(tls=ca) as server,
        grpc_channel(server.address, tls=trustme.CA()) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(channel).SayHello(HelloRequest(name="n"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.calls == []


async def test_tls_channel_rejects_a_certificate_for_another_name(ca: trustme.CA) -> None:
    async with (
        grpc_hello_server(tls=ca) as server,
        grpc_channel(server.address, tls=ca, authority="edge.test") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(channel).SayHello(HelloRequest(name="n"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.calls == []


async def test_two_servers_answer_with_their_own_names() -> None:
    async with (
        grpc_hello_server(name="a") as a,
        grpc_hello_server(name="b") as b,
        grpc_channel(a.address) as to_a,
        grpc_channel(b.address) as to_b,
    ):
        assert a.port != b.port
        reply_a = await hello_pb2_grpc.GreeterStub(to_a).SayHello(HelloRequest(name="x"))
        reply_b = await hello_pb2_grpc.GreeterStub(to_b).SayHello(HelloRequest(name="x"))
        assert (reply_a.name, reply_b.name) == ("a:x", "b:x")
        assert (len(a.calls), len(b.calls)) == (1, 1)


async def test_h2c_channel_to_a_tls_server_fails_without_reaching_a_handler(
    ca: trustme.CA,
) -> None:
    async with grpc_hello_server(tls=ca) as server, grpc_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await hello_pb2_grpc.GreeterStub(channel).SayHello(HelloRequest(name="n"), timeout=2)
        assert info.value.code() in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        }
        assert server.calls == []
