"""One exchange over a multiplexed HTTP/2 connection to an endpoint (h2 or h2c backends).

The request becomes a stream: pseudo-headers from the canonical head (RFC 9113 §8.3.1),
the same forwarded headers as HTTP/1.1, plus `te: trailers` when the client asked for
trailers (gRPC requires it; hardening G9/H8). The body and the response stream both ways
with flow control; a client that goes away resets the upstream stream (CANCEL), and an
upstream reset after the response head reaches the client as a reset (or, for gRPC,
as trailers with the status).
"""

from __future__ import annotations

import asyncio
import logging

from kedge.core.codec.client_h2 import UpstreamStream
from kedge.core.errors import KedgeError, UpstreamTimeout
from kedge.core.http.body import BodyStream
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import forward_response_headers
from kedge.core.http.messages import Headers, ResponseHead, header_value
from kedge.edge.config import BackendTimeouts
from kedge.edge.forwarding.h2_pool import H2EndpointPool
from kedge.edge.forwarding.request_headers import upstream_headers

__all__ = ["exchange_h2", "request_fields"]

log = logging.getLogger("kedge.forward")


def request_fields(
    ex: Exchange, scheme: bytes, grpc_timeout: bytes | None, hop: Headers | None = None
) -> Headers:
    """The upstream header block: pseudo-headers first (RFC 9113 §8.3), then the rest.
    `hop`: fields for this endpoint only (a remote edge's credential)."""
    h = ex.head
    authority = h.authority
    headers = upstream_headers(ex, hop, upgrade=None)
    fields: Headers = [
        (b":method", h.method.encode("ascii")),
        (b":scheme", scheme),
        (b":authority", authority.encode("ascii")),
        (b":path", h.path_and_query.encode("latin-1")),
    ]
    if header_value(h.headers, b"te") is not None or ex.grpc:
        fields.append((b"te", b"trailers"))
    for item in headers:
        if item[0] == b"grpc-timeout":
            if grpc_timeout is None:
                fields.append(item)
        else:
            fields.append(item)
    if grpc_timeout is not None:
        fields.append((b"grpc-timeout", grpc_timeout))
    return fields


async def exchange_h2(
    ex: Exchange,
    pool: H2EndpointPool,
    fields: Headers,
    timeouts: BackendTimeouts,
    body_limit: int,
) -> None:
    conn = await pool.acquire()
    body = ex.body
    stream = conn.open_stream(fields, end_stream=body is None)
    stream.interim = ex.send_interim
    pump: asyncio.Task[None] | None = None
    done = False
    try:
        head_timeout = timeouts.response_header
        if body is not None:
            if body.is_complete:
                data = body.take_all()
                if data:
                    await stream.send_data(data)
                stream.end(body.trailers)
            else:
                # Like HTTP/1.1, the response-head wait starts when the request is sent;
                # a streaming call (gRPC bidi) may get its head at any time before that.
                head_timeout = 0.0
                pump = asyncio.get_running_loop().create_task(_pump(body, stream, body_limit))
        try:
            if head_timeout > 0:
                async with asyncio.timeout(head_timeout):
                    head = await stream.head
            else:
                head = await stream.head
        except TimeoutError:
            raise UpstreamTimeout(
                f"no response head from {pool.key} within {head_timeout:g}s"
            ) from None
        except KedgeError:
            if pump is not None and pump.done() and not pump.cancelled():
                client_error = pump.exception()
                if isinstance(client_error, KedgeError):
                    raise client_error from None
            raise
        rbody = stream.body
        has_body = not (rbody.at_eof and rbody.trailers is None)
        cl = header_value(head.headers, b"content-length")
        ex.respond(
            ResponseHead(
                head.status,
                forward_response_headers(head.headers, request_id=ex.request_id, version="2"),
            ),
            int(cl) if cl is not None and cl.isdigit() else None,
            has_body,
        )
        if has_body and rbody.is_complete:
            await ex.send_last(rbody.take_all(), rbody.trailers)  # one frame when it fits
        else:
            if has_body:
                await _stream_response(ex, rbody)
                if ex.finished:
                    return
            ex.end(rbody.trailers)
        done = True
    finally:
        if pump is not None and not pump.done():
            pump.cancel()
        if not done:
            stream.cancel()  # RST_STREAM(CANCEL) upstream: nobody wants the answer now


async def _stream_response(ex: Exchange, rbody: BodyStream) -> None:
    try:
        while True:
            data = await rbody.read()
            if not data:
                return
            await ex.send_body(data)
    except KedgeError as exc:
        if exc.kind == "client-disconnected":
            raise
        ex.error_kind = exc.kind
        log.info("response truncated: %s", exc.reason, extra={"request_id": ex.request_id})
        ex.abort(exc)


async def _pump(body: BodyStream, stream: UpstreamStream, body_limit: int) -> None:
    """Request body from client to endpoint; the client's own window waits on this."""
    try:
        async for data in body.within(body_limit):
            await stream.send_data(data)
        stream.end(body.trailers)
    except KedgeError as exc:
        stream.fail(exc)  # wakes the exchange waiting for the response head
        stream.cancel()
        raise
