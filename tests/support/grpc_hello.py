"""A real `grpc.aio` server for the kedge.e2e Greeter/Other services and a matching grpcio channel.

One server serves every gRPC test; request metadata drives what it does:

- every call: the reply `name` is "<server name>:<request name>", so tests see which
  endpoint answered; the call is recorded in `GrpcServer.calls` as (method path, metadata);
- `x-delay-ms: N`: sleep N ms first (cancellable: a call the client cancels, or whose
  deadline passes, is recorded in `GrpcServer.cancelled`);
- `x-echo-metadata: 1`: every request key starting with `x-` comes back as initial metadata
  and again as trailing metadata with `-trailer` added to the key (before a `-bin` suffix,
  so binary keys stay binary: `x-a-bin` -> `x-a-trailer-bin`);
- `x-fail-code: N` (+ `x-fail-message`): end the call with status N after the delay and
  the initial metadata echo (without the echo the answer is a trailers-only response).

SayHello and Other.Ping echo the request payload (messages up to 64 MiB each way);
ServerStream sends `count` replies `interval_ms` apart; ClientStream replies once with the
message count and total payload bytes; Bidi answers each message as soon as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import trustme

from proto.e2e import hello_pb2, hello_pb2_grpc

__all__ = [
    "GREETER",
    "MAX_MESSAGE_BYTES",
    "OTHER",
    "GrpcServer",
    "MetadataDict",
    "grpc_channel",
    "grpc_hello_server",
]

GREETER = "kedge.e2e.Greeter"
OTHER = "kedge.e2e.Other"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # grpcio's default receive limit is 4 MiB

MetadataDict = dict[str, str | bytes]
_Pairs = list[tuple[str, str | bytes]]

# Both sides: room for the 16 MiB round trips of the large-message tests.
_MESSAGE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass
class GrpcServer:
    """A running test server: where it listens and what reached it."""

    name: str
    port: int = 0
    tls: bool = False
    calls: list[tuple[str, MetadataDict]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # method paths, in cancellation order
    _server: grpc.aio.Server | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        """The method path of every call received, in order."""
        return [method for method, _ in self.calls]

    async def wait_cancelled(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until `count` calls were cancelled (cancellation reaches the server later)."""
        async with asyncio.timeout(timeout):
            while len(self.cancelled) < count:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop now (open calls end with UNAVAILABLE); the context manager also does this."""
        if self._server is not None:
            await self._server.stop(0)


def _metadata_dict(context: grpc.aio.ServicerContext[Any, Any]) -> MetadataDict:
    return {key: value for key, value in context.invocation_metadata() or ()}


def _trailer_key(key: str) -> str:
    # Keys ending in -bin carry binary values (gRPC over HTTP/2 spec, "Custom-Metadata"),
    # so the suffix goes before it.
    if key.endswith("-bin"):
        return f"{key[: -len('-bin')]}-trailer-bin"
    return f"{key}-trailer"


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


async def _begin(
    state: GrpcServer, method: str, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """Record the call, then apply x-delay-ms, x-echo-metadata and x-fail-code, in that order."""
    metadata = _metadata_dict(context)
    state.calls.append((method, metadata))
    delay_ms = int(_text(metadata.get("x-delay-ms")) or 0)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    trailers: _Pairs = []
    if _text(metadata.get("x-echo-metadata")) == "1":
        echoed: _Pairs = [(k, v) for k, v in metadata.items() if k.startswith("x-")]
        trailers = [(_trailer_key(k), v) for k, v in echoed]
        await context.send_initial_metadata(tuple(echoed))
        context.set_trailing_metadata(tuple(trailers))
    fail_code = int(_text(metadata.get("x-fail-code")) or 0)
    if fail_code != 0:
        message = _text(metadata.get("x-fail-message"))
        await context.abort(_status(fail_code), message, tuple(trailers))


@contextlib.contextmanager
def _recording_cancel(state: GrpcServer, method: str) -> Iterator[None]:
    # grpc.aio cancels the handler's task when the client cancels or the deadline passes.
    try:
        yield
    except asyncio.CancelledError:
        state.cancelled.append(method)
        raise


class _Greeter(hello_pb2_grpc.GreeterServicer):
    def __init__(self, state: GrpcServer) -> None:
        self._state = state

    def _name(self, name: str) -> str:
        return f"{self._state.name}:{name}"

    async def SayHello(
        self, request: hello_pb2.HelloRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> hello_pb2.HelloReply:
        method = f"/{GREETER}/SayHello"
        with _recording_cancel(self._state, method):
            await _begin(self._state, method, context)
            return hello_pb2.HelloReply(name=self._name(request.name), payload=request.payload)

    async def ServerStream(
        self, request: hello_pb2.StreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[hello_pb2.HelloReply]:
        method = f"/{GREETER}/ServerStream"
        with _recording_cancel(self._state, method):
            await _begin(self._state, method, context)
            for index in range(request.count):
                if index > 0 and request.interval_ms > 0:
                    await asyncio.sleep(request.interval_ms / 1000)
                yield hello_pb2.HelloReply(
                    name=self._name(request.name), payload=request.payload, count=index
                )

    async def ClientStream(
        self,
        requests: AsyncIterator[hello_pb2.HelloRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> hello_pb2.HelloReply:
        method = f"/{GREETER}/ClientStream"
        with _recording_cancel(self._state, method):
            await _begin(self._state, method, context)
            names: list[str] = []
            payload_bytes = 0
            async for request in requests:
                names.append(request.name)
                payload_bytes += len(request.payload)
            return hello_pb2.HelloReply(
                name=self._name(",".join(names)), count=len(names), payload_bytes=payload_bytes
            )

    async def Bidi(
        self,
        requests: AsyncIterator[hello_pb2.HelloRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[hello_pb2.HelloReply]:
        method = f"/{GREETER}/Bidi"
        with _recording_cancel(self._state, method):
            await _begin(self._state, method, context)
            index = 0
            async for request in requests:
                yield hello_pb2.HelloReply(
                    name=self._name(request.name), payload=request.payload, count=index
                )
                index += 1


class _Other(hello_pb2_grpc.OtherServicer):
    def __init__(self, state: GrpcServer) -> None:
        self._state = state

    async def Ping(
        self, request: hello_pb2.HelloRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> hello_pb2.HelloReply:
        method = f"/{OTHER}/Ping"
        with _recording_cancel(self._state, method):
            await _begin(self._state, method, context)
            name = f"{self._state.name}:{request.name}"
            return hello_pb2.HelloReply(name=name, payload=request.payload)


@asynccontextmanager
async def grpc_hello_server(
    *, tls: trustme.CA | None = None, name: str = "a"
) -> AsyncIterator[GrpcServer]:
    """Serve Greeter and Other on 127.0.0.1:0: h2c, or TLS for localhost/127.0.0.1 from `tls`."""
    state = GrpcServer(name=name, tls=tls is not None)
    # No SO_REUSEPORT: two test servers must never share a port.
    server = grpc.aio.server(options=[*_MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)])
    hello_pb2_grpc.add_GreeterServicer_to_server(_Greeter(state), server)
    hello_pb2_grpc.add_OtherServicer_to_server(_Other(state), server)
    if tls is None:
        state.port = server.add_insecure_port("127.0.0.1:0")
    else:
        leaf = tls.issue_cert("localhost", "127.0.0.1")
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        credentials = grpc.ssl_server_credentials([(leaf.private_key_pem.bytes(), chain)])
        state.port = server.add_secure_port("127.0.0.1:0", credentials)
    state._server = server
    await server.start()
    try:
        yield state
    finally:
        await server.stop(0)


def grpc_channel(
    target: str,
    *,
    tls: trustme.CA | None = None,
    authority: str | None = None,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpcio channel to `target` (`host:port`) with 64 MiB message limits.

    `authority` sets the `:authority` of every call (`grpc.default_authority`). With `tls`
    the server certificate must chain to that CA and name `server_name` (default: the host
    part of `authority`, else the host of `target`). Each channel gets its own connection
    (no process-wide subchannel sharing) and no transparent retries, so tests see exactly
    what each call did; `options` adds or overrides channel arguments. Close it after use.
    """
    merged: dict[str, Any] = dict(_MESSAGE_OPTIONS)
    merged["grpc.use_local_subchannel_pool"] = 1
    merged["grpc.enable_retries"] = 0
    merged["grpc.enable_http_proxy"] = 0
    if authority is not None:
        merged["grpc.default_authority"] = authority
    if tls is not None:
        name = server_name or (_host(authority) if authority is not None else None)
        if name is not None:
            merged["grpc.ssl_target_name_override"] = name
    merged.update(options)
    pairs = list(merged.items())
    if tls is None:
        return grpc.aio.insecure_channel(target, options=pairs)
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.cert_pem.bytes())
    return grpc.aio.secure_channel(target, credentials, options=pairs)


def _host(authority: str) -> str:
    # "[::1]:443" -> "::1", "edge.test:443" -> "edge.test", "edge.test" -> "edge.test"
    if authority.startswith("["):
        return authority[1 : authority.index("]")]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
