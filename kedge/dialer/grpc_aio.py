"""grpc.aio through kedge: `grpc_channel(dialer, "svc.ns.cluster-a.internal:443")`.

grpcio is an optional dependency: only this module imports it.

The target is mapped (as gRPC, so `protocol: grpc` routes apply) and the channel reaches
the route's edge, not the target:

- through the dialer's private relay (kedge.dialer.edge_relay): the channel speaks
  HTTP/2 in plaintext to a 0600 Unix socket of this process, and the relay carries each
  connection over TLS to the edge, verified against the route's `edge_tls` CA and the
  edge's name, with ALPN `h2` and the client certificate of `cert_file`/`key_file` or of
  the proxy auth source (a kubeconfig certificate user, read per connection);
- `grpc.default_authority` = the target, so every call's `:authority` is the service's
  `host:port` and the edge routes on it;
- client interceptors add `proxy-authorization` and `authorization` to every call from the
  route's auth sources, replacing the caller's own values of those keys (hardening X5;
  call credentials could only add to them, and grpcio sends them only on channels it
  secures itself), so tokens are refreshed as they expire without a new channel. They run
  on the channel's event loop, where the auth sources live. A failed source fails the call
  with an AioRpcError carrying the source's reason (never a token) and UNAUTHENTICATED,
  the `credential-unavailable` kind's gRPC status.

Why a relay rather than grpcio's own TLS: on a TLS channel grpcio checks every call's
`:authority` against the server's certificate (or, with `ssl_target_name_override`,
against the channel's authority without its port), so `svc.ns.cluster-a.internal:50051`
would only pass with an edge certificate that names every service. grpc-go, which kEdge
used, has no such check.

Every call multiplexes on one HTTP/2 connection to the edge (kEdge dialed a new TLS
connection per call).

An `http://` edge gets a plain channel with the same authority override; the config
allows no credentials on such routes, and the channel adds none. An unmapped target raises
NotMapped (`unmapped: refuse`) or, with `unmapped: direct`, gives a channel to the target
itself with no credentials: insecure unless `direct_credentials` are given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from kedge.core.errors import CredentialUnavailable, KedgeError
from kedge.dialer.dialer import Dialer
from kedge.dialer.mapping import EdgeTarget, Mapped

__all__ = ["grpc_channel", "split_target"]

# Channel options this module sets itself; a caller's value would send calls elsewhere.
_OWN_OPTIONS = frozenset({"grpc.default_authority", "grpc.ssl_target_name_override"})


def split_target(target: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` (an optional `dns:///` prefix) as (host, port); the port
    defaults to 443, as in gRPC's naming (doc/naming.md)."""
    text = target.removeprefix("dns:///")
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"gRPC target {target!r} has a malformed IPv6 literal")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":") if ":" in text else (text, "", "")
        rest = colon + port_text
    if not host or "/" in host:
        raise ValueError(f"gRPC target {target!r} is not host:port")
    if not rest:
        return host, 443
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"gRPC target {target!r} has an invalid port")
    return host, int(port_text)


def grpc_channel(
    dialer: Dialer,
    target: str,
    *,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    direct_credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` through its edge; use it on one event loop (its
    interceptors fetch credentials from the dialer's sources there)."""
    for key, _ in options:
        if key in _OWN_OPTIONS:
            raise ValueError(f"grpc_channel sets the channel option {key!r} itself")
    host, port = split_target(target)
    mapped = dialer.map(host, port, grpc=True)
    if mapped is None:  # unmapped, `unmapped: direct`: the target itself, nothing added
        if direct_credentials is None:
            return grpc.aio.insecure_channel(target, options, compression, interceptors)
        return grpc.aio.secure_channel(
            target, direct_credentials, options, compression, interceptors
        )
    edge = mapped.edge
    own: list[tuple[str, Any]] = [("grpc.default_authority", mapped.authority)]
    if edge.scheme != "https":
        route = mapped.route
        if route.proxy_auth is not None or route.backend_auth is not None:
            raise CredentialUnavailable(
                f"route {route.name!r} sends credentials to an http:// edge; "
                "credentials are only sent over TLS: use an https:// edge URL"
            )
        return grpc.aio.insecure_channel(
            _address(edge), [*options, *own], compression, interceptors
        )
    chain = list(interceptors or ())
    if mapped.route.proxy_auth is not None or mapped.route.backend_auth is not None:
        chain.extend(_interceptors(dialer, mapped))  # last: innermost, after the caller's
    relay = dialer.relay(mapped)
    # Plaintext to our own 0600 socket; the relay does the TLS to the edge.
    return grpc.aio.insecure_channel(f"unix:{relay.path}", [*options, *own], compression, chain)


def _address(edge: EdgeTarget) -> str:
    host = f"[{edge.host}]" if ":" in edge.host else edge.host
    return f"{host}:{edge.port}"


class _Injector:
    """Adds the route's credentials to a call's metadata; shared by the four interceptors."""

    def __init__(self, dialer: Dialer, mapped: Mapped) -> None:
        self._dialer = dialer
        self._route = mapped.route
        self._edge = mapped.edge
        self._checks: set[asyncio.Task[None]] = set()

    async def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        try:
            # A client certificate goes in the relay's TLS handshake, not in metadata.
            headers, _ = await self._dialer.credentials(self._route, self._edge)
        except KedgeError as exc:
            raise grpc.aio.AioRpcError(
                _status(exc.grpc_status), grpc.aio.Metadata(), grpc.aio.Metadata(), exc.reason
            ) from exc
        replaced = {name for name, _ in headers}
        metadata = grpc.aio.Metadata(
            *((k, v) for k, v in (details.metadata or ()) if k.lower() not in replaced)
        )
        for name, value in headers:
            metadata.add(name, value)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )

    async def call(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Start the call with the credentials; a call the edge or the service answers
        UNAUTHENTICATED drops the cached ones, so the next call fetches new ones (as a 401
        or 407 does for HTTP)."""
        call = await continuation(await self.details(details), request)
        call.add_done_callback(self._done)
        return call

    def _done(self, call: Any) -> None:
        if not call.cancelled():
            task = asyncio.get_running_loop().create_task(self._check(call))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _check(self, call: Any) -> None:
        if await call.code() == grpc.StatusCode.UNAUTHENTICATED:
            self._dialer.invalidate(self._route)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._injector.call(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._injector.call(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._injector.call(continuation, client_call_details, requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._injector.call(continuation, client_call_details, requests)


def _interceptors(dialer: Dialer, mapped: Mapped) -> list[grpc.aio.ClientInterceptor]:
    # grpc.aio files each interceptor under the first of the four kinds it is an instance
    # of, so one object cannot serve all four.
    injector = _Injector(dialer, mapped)
    return [
        _UnaryUnary(injector),
        _UnaryStream(injector),
        _StreamUnary(injector),
        _StreamStream(injector),
    ]


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
