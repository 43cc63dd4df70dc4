"""Active health probes: one HTTP GET, one gRPC Health/Check or one TCP connect per call.

Each probe opens its own connection and closes it (Envoy reuses one per endpoint; a fresh
one also proves the endpoint still accepts connections, and checks run seconds apart).
A probe returns None when healthy and raises `ProbeFailed` (or any connection error,
which the caller counts as a failure) otherwise. The caller bounds it with the timeout.

- HTTP: `GET path` with Host, over the backend's protocol (HTTP/1.1, or HTTP/2 for h2 and
  h2c backends) and TLS; healthy when the status is one of `expected_statuses`.
- gRPC: the standard health protocol (grpc/health/v1/health.proto): a unary
  `grpc.health.v1.Health/Check` with `HealthCheckRequest{service}`; healthy only when
  grpc-status is 0 and the response says SERVING (1), as Envoy's gRPC checker requires.
- TCP: a connect that succeeds (no TLS handshake, nothing sent), Envoy's empty-payload
  TCP check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, replace

from kedge.core.codec.client_h2 import H2ClientConnection
from kedge.core.http.messages import Headers, header_value
from kedge.core.net.dial import EndpointDialer
from kedge.edge.config import (
    GrpcHealthCheck,
    HealthProbe,
    HttpHealthCheck,
    TcpHealthCheck,
    UpstreamProtocol,
)
from kedge.edge.discovery.model import Endpoint

__all__ = ["ProbeFailed", "ProbeTarget", "grpc_check_request", "grpc_serving_status", "probe"]

_USER_AGENT = b"kedge-health-check"
_MAX_BODY = 64 * 1024  # a health answer larger than this is read no further
_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


class ProbeFailed(Exception):
    """The endpoint answered, but not as a healthy one (the message says how)."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """How to reach one endpoint as the backend does (protocol, TLS)."""

    endpoint: Endpoint
    protocol: UpstreamProtocol
    dialer: EndpointDialer  # the connect part; the caller bounds the whole probe as well


async def probe(check: HealthProbe, target: ProbeTarget) -> None:
    if isinstance(check, TcpHealthCheck):
        await _tcp(target)
    elif isinstance(check, GrpcHealthCheck):
        await _grpc(check, target)
    elif target.protocol is UpstreamProtocol.HTTP1:
        await _http1(check, target)
    else:
        await _http2(check, target)


async def _tcp(target: ProbeTarget) -> None:
    plain = replace(target.dialer, ssl_context=None, server_hostname=None)  # TCP only
    transport, _ = await plain.open(asyncio.Protocol)
    transport.close()


def _host(configured: str | None, target: ProbeTarget) -> str:
    return configured or target.endpoint.key


async def _http1(check: HttpHealthCheck, target: ProbeTarget) -> None:
    address = target.endpoint.address
    reader, writer = await asyncio.open_connection(
        address.host,
        address.port,
        ssl=target.dialer.ssl_context,
        server_hostname=target.dialer.server_hostname,
    )
    try:
        writer.write(
            b"GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: %s\r\nconnection: close\r\n\r\n"
            % (check.path.encode("latin-1"), _host(check.host, target).encode("ascii"), _USER_AGENT)
        )
        while True:
            line = await reader.readline()  # bounded by the reader's 64 KiB limit
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ProbeFailed(f"not an HTTP/1.1 response: {line[:80]!r}")
            status = int(parts[1])
            if status >= 200 or status == 101:
                break
            while (await reader.readline()).strip():  # skip an interim response's fields
                pass
        _expect_status(check, status)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _expect_status(check: HttpHealthCheck, status: int) -> None:
    if status not in check.expected_statuses:
        raise ProbeFailed(f"status {status}")


async def _http2(check: HttpHealthCheck, target: ProbeTarget) -> None:
    fields: Headers = [
        (b":method", b"GET"),
        (b":scheme", b"https" if target.dialer.ssl_context else b"http"),
        (b":authority", _host(check.host, target).encode("ascii")),
        (b":path", check.path.encode("latin-1")),
        (b"user-agent", _USER_AGENT),
    ]
    status, _, _, _ = await _h2_request(target, fields, None)
    _expect_status(check, status)


def grpc_check_request(service: str) -> bytes:
    """A length-prefixed HealthCheckRequest message (field 1: `string service`)."""
    name = service.encode("utf-8")
    message = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_serving_status(body: bytes) -> int:
    """The ServingStatus in a length-prefixed HealthCheckResponse (0 = UNKNOWN if absent)."""
    if len(body) < 5 or body[0] != 0:
        raise ProbeFailed("no uncompressed gRPC message in the response")
    message = body[5 : 5 + int.from_bytes(body[1:5], "big")]
    status, i = 0, 0
    while i < len(message):  # protobuf: tag varint, then a value by wire type
        tag, i = _read_varint(message, i)
        wire = tag & 7
        if wire == 0:
            value, i = _read_varint(message, i)
            if tag >> 3 == 1:
                status = value
        elif wire == 2:
            size, i = _read_varint(message, i)
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ProbeFailed(f"malformed HealthCheckResponse (wire type {wire})")
    if i != len(message):
        raise ProbeFailed("truncated HealthCheckResponse")
    return status


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ProbeFailed("truncated HealthCheckResponse")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


async def _grpc(check: GrpcHealthCheck, target: ProbeTarget) -> None:
    fields: Headers = [
        (b":method", b"POST"),
        (b":scheme", b"https" if target.dialer.ssl_context else b"http"),
        (b":authority", _host(check.host, target).encode("ascii")),
        (b":path", b"/grpc.health.v1.Health/Check"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"user-agent", _USER_AGENT),
    ]
    status, head, body, trailers = await _h2_request(
        target, fields, grpc_check_request(check.service)
    )
    if status != 200:
        raise ProbeFailed(f"HTTP status {status}")
    # A Trailers-Only answer carries grpc-status in its head (gRPC over HTTP/2 spec).
    grpc_status = header_value(trailers or [], b"grpc-status") or header_value(head, b"grpc-status")
    if grpc_status != b"0":
        code = grpc_status.decode("latin-1") if grpc_status is not None else "missing"
        raise ProbeFailed(f"grpc-status {code}")
    serving = grpc_serving_status(body)
    if serving != _SERVING:
        raise ProbeFailed(f"serving status {serving} (not SERVING)")


async def _h2_request(
    target: ProbeTarget, fields: Headers, body: bytes | None
) -> tuple[int, Headers, bytes, Headers | None]:
    """One request on a fresh HTTP/2 connection: status, head fields, body, trailers."""
    transport, conn = await target.dialer.open(lambda: H2ClientConnection(target.endpoint.key))
    try:
        if target.dialer.ssl_context is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                raise ProbeFailed("the endpoint did not negotiate h2 (ALPN)")
        stream = conn.open_stream(fields, end_stream=body is None)
        if body is not None:
            await stream.send_data(body)
            stream.end()
        head = await stream.head
        data = bytearray()
        while len(data) <= _MAX_BODY and (chunk := await stream.body.read()):
            data += chunk
        return head.status, head.headers, bytes(data), stream.body.trailers
    finally:
        conn.close()
