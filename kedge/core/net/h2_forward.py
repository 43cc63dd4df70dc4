"""Forwarding one exchange as a stream over a pooled HTTP/2 connection (edge and winch).

The caller builds the header block (pseudo-headers first, RFC 9113 §8.3); the body and
the response stream both ways with flow control. A client that goes away resets the
upstream stream (CANCEL); an upstream reset after the response head reaches the client
as a reset (or, for gRPC, as trailers with the status).
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
from kedge.core.net.h2_pool import H2EndpointPool

__all__ = ["exchange_h2"]

log = logging.getLogger("kedge.forward")


async def exchange_h2(
    ex: Exchange,
    pool: H2EndpointPool,
    fields: Headers,
    response_header_timeout: float,
    body_limit: int,
) -> tuple[ResponseHead, Headers | None]:
    """Send `fields` (and the exchange's body) as one stream on a pooled connection and
    stream the answer back to the exchange; `response_header_timeout` 0 means none.

    Returns the upstream's response head and trailers (None if there were none, or the
    response was cut short), for callers that look at the outcome (gRPC's status)."""
    conn = await pool.acquire()
    body = ex.body
    stream = conn.open_stream(fields, end_stream=body is None)
    stream.interim = ex.send_interim
    pump: asyncio.Task[None] | None = None
    done = False
    try:
        head_timeout = response_header_timeout
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
                    return head, None  # truncated (aborted): the stream is cancelled below
            ex.end(rbody.trailers)
        done = True
        return head, rbody.trailers
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
