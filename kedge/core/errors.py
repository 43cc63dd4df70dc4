"""Typed errors: every failure the edge can report, with its HTTP and gRPC status.

Foreign exceptions (OSError, ssl.SSLError, httptools.HttpParserError, asyncio.TimeoutError)
are translated into these at the boundary where they enter; `kedge.core.http.error_response`
renders them, and nothing else does. `kind` is the stable, machine-readable value of the
`X-Kedge-Error-Type` header and of the `kind` label in metrics; never rename a kind.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthUnavailable",
    "BadGateway",
    "BadRequest",
    "BodyTooLarge",
    "ClientDisconnected",
    "ConfigError",
    "CredentialTooLarge",
    "CredentialUnavailable",
    "ExpectationFailed",
    "Forbidden",
    "HeaderTooLarge",
    "InternalError",
    "KedgeError",
    "MethodNotAllowed",
    "MisdirectedRequest",
    "NoEndpoints",
    "NoRoute",
    "NotImplementedByEdge",
    "PermissionDenied",
    "ProxyAuthRequired",
    "RequestTimeout",
    "ServiceDraining",
    "Unauthenticated",
    "UpstreamConnectError",
    "UpstreamProtocolError",
    "UpstreamReset",
    "UpstreamTimeout",
    "UriTooLong",
    "VersionNotSupported",
    "all_error_kinds",
]


class KedgeError(Exception):
    """Base of every error the edge reports to a client.

    `reason` is one line, safe to show to a client (it never contains secrets or a
    traceback). `close_connection` says the connection cannot be reused afterwards,
    e.g. because framing is lost.
    """

    kind: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[int] = 13  # INTERNAL
    close_connection: ClassVar[bool] = False
    # Extra fields for the HTTP rendering (e.g. a 401's challenge); set per instance.
    response_headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        # One line only: the reason goes into a header (RFC 9110 §5.5 forbids CR/LF).
        self.reason = " ".join(reason.split())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class BadRequest(KedgeError):
    """Malformed request: framing, syntax, or a value the edge refuses to forward."""

    kind = "bad-request"
    http_status = 400
    grpc_status = 13  # INTERNAL: gRPC has no "bad request"; grpc-go uses INTERNAL here
    close_connection = True


class RequestTimeout(KedgeError):
    """The client did not send its headers (or body) in time."""

    kind = "request-timeout"
    http_status = 408
    grpc_status = 4  # DEADLINE_EXCEEDED
    close_connection = True


class UriTooLong(KedgeError):
    kind = "uri-too-long"
    http_status = 414
    grpc_status = 8  # RESOURCE_EXHAUSTED
    close_connection = True


class HeaderTooLarge(KedgeError):
    kind = "header-too-large"
    http_status = 431
    grpc_status = 8
    close_connection = True


class BodyTooLarge(KedgeError):
    kind = "body-too-large"
    http_status = 413
    grpc_status = 8
    close_connection = True


class ExpectationFailed(KedgeError):
    kind = "expectation-failed"
    http_status = 417
    grpc_status = 13
    close_connection = True


class NotImplementedByEdge(KedgeError):
    """A feature the request needs that the edge does not provide (e.g. a transfer coding)."""

    kind = "not-implemented"
    http_status = 501
    grpc_status = 12  # UNIMPLEMENTED
    close_connection = True


class VersionNotSupported(KedgeError):
    kind = "version-not-supported"
    http_status = 505
    grpc_status = 13
    close_connection = True


class Forbidden(KedgeError):
    """The request is well-formed but policy refuses it (e.g. an adhoc rule denies the port)."""

    kind = "forbidden"
    http_status = 403
    grpc_status = 7  # PERMISSION_DENIED


class PermissionDenied(Forbidden):
    """Authenticated, but the route's policy does not admit this principal."""

    kind = "permission-denied"


class Unauthenticated(KedgeError):
    """No valid credential for a route that needs one.

    HTTP: 401 with a Bearer challenge (RFC 9110 §11.6.1, RFC 6750 §3) in WWW-Authenticate,
    or in Proxy-Authenticate when the listener takes the edge's credential from
    Proxy-Authorization (RFC 9110 §11.7.1). gRPC: UNAUTHENTICATED.
    """

    kind = "unauthenticated"
    http_status = 401
    grpc_status = 16  # UNAUTHENTICATED

    def __init__(self, reason: str, challenge: tuple[bytes, bytes] | None = None) -> None:
        super().__init__(reason)
        if challenge is not None:
            self.response_headers = (challenge,)


class ProxyAuthRequired(Unauthenticated):
    """Unauthenticated, for a request that addresses the edge as a proxy (CONNECT): 407
    Proxy Authentication Required with the challenge in Proxy-Authenticate (RFC 9110
    §15.5.8, §11.7.1), which proxy clients (curl, winch) answer with Proxy-Authorization."""

    kind = "proxy-auth-required"
    http_status = 407


class AuthUnavailable(KedgeError):
    """The edge cannot check a credential right now (its issuer's keys are unavailable):
    the caller may retry; the token itself was not found wrong."""

    kind = "auth-unavailable"
    http_status = 503
    grpc_status = 14  # UNAVAILABLE


class CredentialTooLarge(KedgeError):
    """A bearer token above the configured size cap: refused before any parsing."""

    kind = "credential-too-large"
    http_status = 431
    grpc_status = 16  # UNAUTHENTICATED: the call carries no usable credential


class MisdirectedRequest(KedgeError):
    kind = "misdirected-request"
    http_status = 421
    grpc_status = 14  # UNAVAILABLE


class NoRoute(KedgeError):
    """No route and no adhoc rule matches the request."""

    kind = "no-route"
    http_status = 404
    grpc_status = 12  # UNIMPLEMENTED, as kEdge and Envoy answer for an unknown service


class NoEndpoints(KedgeError):
    """The route's backend has no usable endpoint right now."""

    kind = "no-endpoints"
    http_status = 503
    grpc_status = 14  # UNAVAILABLE


class ServiceDraining(KedgeError):
    kind = "draining"
    http_status = 503
    grpc_status = 14
    close_connection = True


class BadGateway(KedgeError):
    """Generic upstream failure; subclasses say which."""

    kind = "upstream-error"
    http_status = 502
    grpc_status = 14


class UpstreamConnectError(BadGateway):
    """Could not open a connection to any endpoint (refused, unreachable, TLS failure)."""

    kind = "upstream-connect"


class UpstreamReset(BadGateway):
    """The endpoint closed or reset the connection before a complete response."""

    kind = "upstream-reset"


class UpstreamProtocolError(BadGateway):
    """The endpoint answered with something that is not valid HTTP (smuggling, bad framing)."""

    kind = "upstream-protocol"


class UpstreamTimeout(KedgeError):
    kind = "upstream-timeout"
    http_status = 504
    grpc_status = 4  # DEADLINE_EXCEEDED


class InternalError(KedgeError):
    """A bug in the edge. The reason shown to the client is generic; the log has the details."""

    kind = "internal"
    http_status = 500
    grpc_status = 13
    close_connection = True


class ConfigError(Exception):
    """A configuration file is invalid: names the file, the key path and the fix.

    Not a KedgeError: it never reaches a client, only an operator's terminal or log.
    """

    def __init__(self, file: str, key_path: str, problem: str, fix: str = "") -> None:
        self.file = file
        self.key_path = key_path
        self.problem = problem
        self.fix = fix
        where = f"{file}: {key_path}" if key_path else file
        text = f"{where}: {problem}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


def all_error_kinds() -> dict[str, type[KedgeError]]:
    """Every concrete error kind, for the documented table and its test."""
    found: dict[str, type[KedgeError]] = {}
    stack: list[type[KedgeError]] = list(KedgeError.__subclasses__())
    while stack:
        cls = stack.pop()
        found.setdefault(cls.kind, cls)
        stack.extend(cls.__subclasses__())
    return found


class MethodNotAllowed(KedgeError):
    """A method the edge does not proxy on this path (CONNECT before tunnel support)."""

    kind = "method-not-allowed"
    http_status = 405
    grpc_status = 12
    close_connection = True


class ClientDisconnected(KedgeError):
    """The client went away before the response was complete (logged as nginx's 499)."""

    kind = "client-disconnected"
    http_status = 499
    grpc_status = 1  # CANCELLED
    close_connection = True


class CredentialUnavailable(KedgeError):
    """The dialer or winch could not obtain the credential a route sends (token endpoint down,
    login needed, kubeconfig user missing). 502: the caller's request was fine, the gateway's
    own upstream (the credential source) failed. gRPC UNAUTHENTICATED rather than UNAVAILABLE,
    so retrying clients do not spin on a login that only a person can complete."""

    kind = "credential-unavailable"
    http_status = 502
    grpc_status = 16  # UNAUTHENTICATED
