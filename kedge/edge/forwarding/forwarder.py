"""Forwarding an exchange to an endpoint: connect, stream both ways, retry only when safe.

Retry rule: the edge tries another endpoint only when nothing of the request reached the
previous one. A connect failure proves that for every method (the request never left, so
even a POST is safe, as Envoy's `connect-failure` policy assumes); a reused keep-alive
connection that the endpoint had already closed (reset before any response byte) is retried
once on a fresh connection only for idempotent methods without a body (RFC 9110 §9.2.2),
because the request may have arrived. Nothing is retried once a response byte was seen.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

from kedge.core.codec.client_h1 import H1ClientConnection
from kedge.core.codec.client_h2 import StreamRefused
from kedge.core.errors import (
    BadGateway,
    BodyTooLarge,
    KedgeError,
    NoEndpoints,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from kedge.core.http.body import BodyStream
from kedge.core.http.exchange import Exchange
from kedge.core.http.grpc import format_grpc_timeout, grpc_deadline
from kedge.core.http.headers import forward_response_headers
from kedge.core.http.messages import Headers, ResponseHead, field_lines, header_value, last_chunk
from kedge.core.net.h2_forward import exchange_h2
from kedge.core.net.h2_pool import H2EndpointPool
from kedge.edge.balancing.outlier import Outcome
from kedge.edge.config import BackendTimeouts
from kedge.edge.forwarding.backend import Backend
from kedge.edge.forwarding.forward_h2 import request_fields
from kedge.edge.forwarding.pool import EndpointPool
from kedge.edge.forwarding.remote import RemoteCluster
from kedge.edge.forwarding.request_headers import upstream_headers

__all__ = ["IDEMPOTENT_METHODS", "Forwarder"]

log = logging.getLogger("kedge.forward")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _StaleConnection(Exception):
    """A reused connection died before any response byte; safe to retry on a fresh one."""

    def __init__(self, error: KedgeError) -> None:
        self.error = error


def _refuse_oversize_body(ex: Exchange, body_limit: int) -> None:
    """Refuse before connecting, so not even the head reaches an endpoint: a Content-Length
    over this route's limit, or body bytes that already arrived over it (a chunked body that
    came with its head). A body that crosses the limit later is stopped by the pump."""
    body = ex.body
    if not body_limit or body is None:
        return
    cl = header_value(ex.head.headers, b"content-length")
    if cl is not None and int(cl) > body_limit:
        raise BodyTooLarge(f"Content-Length {cl.decode()} exceeds the limit of {body_limit} bytes")
    if body.total > body_limit:
        raise BodyTooLarge(f"request body larger than the limit of {body_limit} bytes")


def _per_try(timeouts: BackendTimeouts, per_try: float) -> BackendTimeouts:
    """The timeouts of one try: the response head within `per_try` when it is shorter."""
    if per_try and (not timeouts.response_header or per_try < timeouts.response_header):
        return replace(timeouts, response_header=per_try)
    return timeouts


def _remote_credential(remote: RemoteCluster) -> Headers | None:
    try:
        return remote.request_headers()
    except OSError as exc:  # nothing was sent: another endpoint may take the request
        raise UpstreamConnectError(
            f"cannot read the token for cluster {remote.config.name}: {exc.strerror or exc}"
        ) from None


def _latency(ex: Exchange, started: float, failed: bool, timeouts: BackendTimeouts) -> float | None:
    """The latency sample for balancing: time to the response head; a failure counts as at
    least the connect timeout, so a quickly refusing endpoint never looks fast (Finagle's
    failure penalty); None when the client left first (no signal about the endpoint)."""
    if ex.head_at >= started:
        return ex.head_at - started
    if failed:
        return max(time.monotonic() - started, timeouts.connect)
    return None


class Forwarder:
    """Sends exchanges to backends' endpoints over pooled HTTP/1.1 connections."""

    def __init__(
        self,
        on_retry: Callable[[str], None] | None = None,
        on_connect_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._on_retry = on_retry
        self._on_connect_failure = on_connect_failure

    def request_head(self, ex: Exchange, hop: Headers | None = None) -> tuple[bytes, bool]:
        """The upstream request head and whether its body is sent chunked. `hop`: fields
        for this endpoint only (a remote edge's credential)."""
        h = ex.head
        authority = h.authority
        headers = upstream_headers(ex, hop, upgrade=ex.upgrade)
        chunked = ex.body is not None and header_value(h.headers, b"content-length") is None
        start = f"{h.method} {h.path_and_query} HTTP/1.1\r\nhost: {authority}\r\n"
        end = b"transfer-encoding: chunked\r\n\r\n" if chunked else b"\r\n"
        return start.encode("latin-1") + field_lines(headers) + end, chunked

    async def forward(self, ex: Exchange, backend: Backend, body_limit: int) -> None:
        timeouts = backend.config.timeouts
        deadline = grpc_deadline(ex, timeouts.max_grpc_timeout) if ex.grpc else None
        if deadline is None:
            await self._attempts(ex, backend, body_limit, None)
            return
        # gRPC: the whole call, every attempt included, ends at the client's deadline
        # (capped); the endpoint is told what is left of it.
        loop = asyncio.get_running_loop()
        expires = loop.time() + deadline
        try:
            async with asyncio.timeout_at(expires):
                await self._attempts(ex, backend, body_limit, expires)
        except TimeoutError:
            raise UpstreamTimeout(f"gRPC deadline of {deadline:g}s exceeded") from None

    async def _attempts(
        self, ex: Exchange, backend: Backend, body_limit: int, expires: float | None
    ) -> None:
        retry = backend.config.retries
        timeouts = _per_try(backend.config.timeouts, retry.per_try_timeout)
        attempts = max(1, retry.attempts)
        # A reset or a timeout is retried only if the request can be sent again as it was:
        # idempotent (RFC 9110 §9.2.2), no body to replay, not an upgrade.
        replayable = ex.body is None and ex.upgrade is None and ex.head.method in IDEMPOTENT_METHODS
        budget = backend.retry_budget
        budget.record_request()
        h1_head: tuple[bytes, bool] | None = None
        tried: list[str] = []
        last_error: KedgeError | None = None
        for n in range(attempts):
            if n:
                assert last_error is not None
                if not budget.try_withdraw():
                    raise last_error  # the budget is spent: no retry storm
                if self._on_retry is not None:
                    self._on_retry(backend.name)
                # Full jitter (exponential, capped): retries of many requests spread out.
                await asyncio.sleep(
                    random.uniform(0, min(retry.backoff_max, retry.backoff_base * 2 ** (n - 1)))
                )
            try:
                endpoint = backend.pick(tried, last=n > 0 and n == attempts - 1)
            except NoEndpoints:
                if last_error is not None:
                    raise last_error from None
                raise
            tried.append(endpoint.key)
            ex.endpoint = endpoint.key
            pool = backend.pool(endpoint)
            key = endpoint.key
            started = backend.loads.begin(key)
            failed = False
            # For outlier detection; None: no signal about the endpoint (the client left,
            # a GOAWAY'd stream, the gRPC deadline of the caller).
            outcome: Outcome | None = None
            remote = backend.remotes.get(key)
            try:
                # Another cluster's edge gets its own credential; the Host stays.
                hop = _remote_credential(remote) if remote is not None else None
                if isinstance(pool, H2EndpointPool):
                    left = None
                    if expires is not None:
                        left = format_grpc_timeout(expires - asyncio.get_running_loop().time())
                    tls = remote.config.tls if remote is not None else backend.config.tls
                    scheme = b"https" if tls is not None else b"http"
                    fields = request_fields(ex, scheme, left, hop)
                    await exchange_h2(ex, pool, fields, timeouts.response_header, body_limit)
                else:
                    if hop is not None:
                        head_bytes, chunked = self.request_head(ex, hop)
                    else:
                        if h1_head is None:
                            h1_head = self.request_head(ex)
                        head_bytes, chunked = h1_head
                    await self.forward_to(ex, pool, head_bytes, chunked, timeouts, body_limit)
                if ex.status:  # the endpoint's own response head
                    outcome = Outcome.SERVER_ERROR if ex.status >= 500 else Outcome.SUCCESS
                return
            except (UpstreamConnectError, StreamRefused) as exc:
                # Nothing reached the endpoint (or it says it processed nothing).
                failed = True
                if isinstance(exc, UpstreamConnectError):
                    outcome = Outcome.GATEWAY_FAILURE
                if isinstance(exc, StreamRefused) and ex.head_sent:
                    raise
                last_error = exc
                if self._on_connect_failure is not None and isinstance(exc, UpstreamConnectError):
                    self._on_connect_failure(backend.name)
            except (UpstreamReset, UpstreamTimeout) as exc:
                failed = True
                outcome = Outcome.GATEWAY_FAILURE
                if ex.head_sent or not replayable:
                    raise
                last_error = exc  # nothing reached the client: another endpoint may answer
            except BadGateway:
                failed = True  # the endpoint's fault: a latency sample with a penalty
                outcome = Outcome.GATEWAY_FAILURE  # a protocol error (not retried)
                raise
            finally:
                backend.loads.end(key, started, _latency(ex, started, failed, timeouts))
                if outcome is not None:
                    backend.health.record(key, outcome)
        assert last_error is not None
        raise last_error

    async def forward_to(
        self,
        ex: Exchange,
        pool: EndpointPool,
        head_bytes: bytes,
        chunked: bool,
        timeouts: BackendTimeouts,
        body_limit: int,
    ) -> None:
        """One endpoint: a pooled connection, and one fresh retry if it proves stale."""
        _refuse_oversize_body(ex, body_limit)
        conn, reused = await pool.acquire()
        try:
            await self._exchange(ex, pool, conn, head_bytes, chunked, timeouts, body_limit, reused)
        except _StaleConnection as stale:
            log.debug("stale pooled connection to %s, retrying on a new one", pool.key)
            conn = await pool.connect()
            try:
                await self._exchange(
                    ex, pool, conn, head_bytes, chunked, timeouts, body_limit, False
                )
            except _StaleConnection:
                raise stale.error from None

    async def _exchange(
        self,
        ex: Exchange,
        pool: EndpointPool,
        conn: H1ClientConnection,
        head_bytes: bytes,
        chunked: bool,
        timeouts: BackendTimeouts,
        body_limit: int,
        reused: bool,
    ) -> None:
        done = False
        tunnel = False
        pump: asyncio.Task[None] | None = None
        try:
            body = ex.body
            # A complete body is within the limit here (_refuse_oversize_body).
            streaming = body is not None and not body.is_complete
            conn.start(
                head_bytes,
                is_head_request=ex.head.method == "HEAD",
                # Like Envoy's route timeout, the wait for the response head starts once
                # the whole request is sent: a slow upload is not a slow backend (the
                # client side has its own body-idle timeout).
                response_timeout=0.0 if streaming else timeouts.response_header,
                on_interim=ex.send_interim,
            )
            if body is not None:
                if not streaming:
                    data = body.take_all()
                    if chunked:
                        data = (b"%x\r\n%s\r\n" % (len(data), data) if data else b"") + (
                            last_chunk(body.trailers)
                        )
                    conn.write(data)
                else:
                    pump = asyncio.get_running_loop().create_task(
                        self._pump(body, conn, chunked, body_limit, timeouts.response_header)
                    )
            try:
                start = await conn.response()
            except KedgeError as exc:
                if pump is not None and pump.done() and not pump.cancelled():
                    client_error = pump.exception()
                    if isinstance(client_error, KedgeError):
                        raise client_error from None
                if (
                    reused
                    and not conn.received_any
                    and isinstance(exc, UpstreamReset)
                    and body is None
                    and ex.head.method in IDEMPOTENT_METHODS
                ):
                    raise _StaleConnection(exc) from None
                raise
            head = start.head
            if head.status == 101:
                self._switch_protocols(ex, pool, conn, head)
                tunnel = True
                return
            headers = forward_response_headers(
                head.headers, request_id=ex.request_id, version=head.version
            )
            ex.respond(
                ResponseHead(head.status, headers, head.reason),
                start.content_length,
                start.has_body,
            )
            if timeouts.idle > 0:
                conn.set_deadline(timeouts.idle)
            rbody = start.body
            if start.has_body and rbody is not None and rbody.is_complete:
                # The whole response is here (the common small one): body and end of
                # stream leave together (one DATA frame with END_STREAM on HTTP/2).
                await ex.send_last(rbody.take_all(), rbody.trailers)
            elif start.has_body and rbody is not None:
                await self._stream_response(ex, conn, rbody, timeouts.idle)
                if ex.finished:  # aborted mid-body
                    return
                ex.end(rbody.trailers)
            else:
                ex.end()
            if pump is not None and not pump.done():
                # The endpoint answered before taking the whole request body: the
                # connection's framing is unknown now, so it is not reused.
                conn.reusable = False
            done = True
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
            if tunnel:
                pass  # the connection belongs to the tunnel now
            elif done and conn.response_complete:
                pool.release(conn)  # kept only if still reusable
            else:
                pool.discard(conn)

    async def _stream_response(
        self, ex: Exchange, conn: H1ClientConnection, rbody: BodyStream, idle: float
    ) -> None:
        try:
            while True:
                data = await rbody.read()
                if not data:
                    return
                if idle > 0:
                    conn.set_deadline(idle)
                await ex.send_body(data)
        except KedgeError as exc:
            if not ex.head_sent or exc.kind == "client-disconnected":
                raise
            # The head is out: the only honest signal left is truncation (RFC 9112 §8).
            ex.error_kind = exc.kind
            log.info("response truncated: %s", exc.reason, extra={"request_id": ex.request_id})
            ex.abort(exc)
            conn.abort()

    async def _pump(
        self,
        body: BodyStream,
        conn: H1ClientConnection,
        chunked: bool,
        body_limit: int,
        response_timeout: float,
    ) -> None:
        """Request body from client to endpoint, with backpressure both ways."""
        try:
            async for data in body.within(body_limit):
                conn.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                await conn.drain()
            if chunked:
                conn.write(last_chunk(body.trailers))
            conn.expect_head_within(response_timeout)
        except KedgeError:
            conn.abort()
            raise

    def _switch_protocols(
        self, ex: Exchange, pool: EndpointPool, conn: H1ClientConnection, head: ResponseHead
    ) -> None:
        upgrade = header_value(head.headers, b"upgrade")
        if ex.upgrade is None or upgrade is None or upgrade.strip().lower() != ex.upgrade:
            # Go's ReverseProxy rule: switch only to the protocol that was asked for.
            raise UpstreamProtocolError("endpoint switched to a protocol that was not requested")
        headers = forward_response_headers(
            head.headers, request_id=ex.request_id, upgrade=ex.upgrade
        )
        ex.respond(ResponseHead(101, headers, head.reason), None, has_body=False)
        up_end = conn.tunnel_end()
        client_end = ex.start_tunnel(up_end)
        conn.start_tunnel(client_end)
        ex.finished = True
        pool.detach(conn)
