"""grpc.aio through kedge: `grpc_channel(dialer, "svc.ns.cluster-a.internal:443")`.

grpcio is an optional dependency: only this module imports it.

The target is mapped (as gRPC, so `protocol: grpc` routes apply) and the channel dials the
route's edge, not the target:

- TLS to the edge with `grpc.ssl_channel_credentials` built from the route's `edge_tls`
  (CA, optional client certificate from `cert_file`/`key_file`), verified against the
  edge's TLS name (`grpc.ssl_target_name_override`);
- `grpc.default_authority` = the target, so every call's `:authority` is the service's
  `host:port` and the edge routes on it (see the grpcio limit below);
- client interceptors add `proxy-authorization` and `authorization` to every call from the
  route's auth sources, replacing the caller's own values of those keys (hardening X5;
  call credentials could only add to them), so tokens are refreshed as they expire without
  a new channel. They run on the channel's event loop, where the auth sources live. A
  failed source fails the call with an AioRpcError carrying the source's reason (never a
  token) and UNAUTHENTICATED, the `credential-unavailable` kind's gRPC status.

The grpcio limit: on a TLS channel grpcio checks every call's `:authority` against the
server's certificate, or, when `ssl_target_name_override` is set, compares it with the
channel's authority *without its port*; a `host:port` authority therefore only passes when
the edge's certificate covers the service's name (e.g. a `*.ns.cluster-a.internal` SAN),
and otherwise the call fails UNAUTHENTICATED "call host does not match SSL server name".
For port 443 the authority is sent without the port (the same authority: 443 is the https
default port, RFC 9110 §4.2.2, and the edge reads a missing port so), which always passes.
A service on another port behind an edge whose certificate names only the edge is reached
through winch instead (`grpc.http_proxy`, or a channel to winch with the authority set).

The channel is HTTP/2 with grpcio's own connection management: every call multiplexes on
one connection to the edge (kEdge dialed a new TLS connection per call).

An `http://` edge gets an insecure channel with the same authority override; the config
allows no credentials on such routes, and the channel adds none. An unmapped target raises
NotMapped (`unmapped: refuse`) or, with `unmapped: direct`, gives a channel to the target
itself with no credentials: insecure unless `direct_credentials` are given.

A proxy auth source that yields a client certificate (a kubeconfig user with
`client-certificate-data`) is not supported here, since grpcio fixes the certificate when
the channel is made; calls on such a route fail with a message saying so. Put the
certificate in the route's `tls:` block instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from kedge.core.errors import CredentialUnavailable, KedgeError
from kedge.dialer.config import EdgeTls, MapRoute
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
    own: list[tuple[str, Any]] = [("grpc.default_authority", _authority(mapped))]
    address = _address(edge)
    if edge.scheme != "https":
        route = mapped.route
        if route.proxy_auth is not None or route.backend_auth is not None:
            raise CredentialUnavailable(
                f"route {route.name!r} sends credentials to an http:// edge; "
                "credentials are only sent over TLS: use an https:// edge URL"
            )
        return grpc.aio.insecure_channel(address, [*options, *own], compression, interceptors)
    own.append(("grpc.ssl_target_name_override", edge.tls.server_name or edge.host))
    chain = list(interceptors or ())
    if mapped.route.proxy_auth is not None or mapped.route.backend_auth is not None:
        chain.extend(_interceptors(dialer, mapped))  # last: innermost, after the caller's
    return grpc.aio.secure_channel(
        address, _channel_credentials(edge.tls), [*options, *own], compression, chain
    )


def _authority(mapped: Mapped) -> str:
    """The call's `:authority`: without the port when it is 443 (see the grpcio limit)."""
    if mapped.edge.scheme == "https" and mapped.authority.endswith(":443"):
        return mapped.authority.removesuffix(":443")
    return mapped.authority


def _address(edge: EdgeTarget) -> str:
    host = f"[{edge.host}]" if ":" in edge.host else edge.host
    return f"{host}:{edge.port}"


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _channel_credentials(tls: EdgeTls) -> grpc.ChannelCredentials:
    # None roots: grpcio's bundled roots (or GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.key_file),
        certificate_chain=_read(tls.cert_file),
    )


class _Injector:
    """Adds the route's credentials to a call's metadata; shared by the four interceptors."""

    def __init__(self, dialer: Dialer, mapped: Mapped) -> None:
        self._dialer = dialer
        self._route = mapped.route
        self._edge = mapped.edge

    async def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        try:
            headers, client_cert = await self._dialer.credentials(self._route, self._edge)
            if client_cert is not None:
                raise CredentialUnavailable(_cert_refusal(self._route))
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


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(await self._injector.details(client_call_details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(await self._injector.details(client_call_details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        details = await self._injector.details(client_call_details)
        return await continuation(details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, injector: _Injector) -> None:
        self._injector = injector

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        details = await self._injector.details(client_call_details)
        return await continuation(details, request_iterator)


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


def _cert_refusal(route: MapRoute) -> str:
    return (
        f"auth source {route.proxy_auth!r} gives a client certificate, which a grpc channel "
        "cannot take per call; put the certificate in the route's tls: cert_file/key_file"
    )
