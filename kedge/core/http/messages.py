"""Protocol-neutral HTTP message heads: RequestHead and ResponseHead.

Header names are stored lower-case (as bytes): HTTP field names are case-insensitive
(RFC 9110 §5.1) and HTTP/2 requires lower case, so one form serves every protocol.
Like HAProxy, the edge sends lower-case names to HTTP/1.1 peers too.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "Headers",
    "RequestHead",
    "ResponseHead",
    "connect_head",
    "field_lines",
    "header_value",
    "header_values",
    "last_chunk",
]

Headers = list[tuple[bytes, bytes]]


def field_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """HTTP/1.1 field lines, each ending in CRLF (RFC 9112 §5); b"" for no fields."""
    return b"".join([name + b": " + value + b"\r\n" for name, value in headers])


def last_chunk(trailers: Iterable[tuple[bytes, bytes]] | None) -> bytes:
    """The last chunk and trailer section that end a chunked body (RFC 9112 §7.1)."""
    return b"0\r\n" + field_lines(trailers or ()) + b"\r\n"


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of `name` (lower-case), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


class RequestHead:
    """A parsed, validated request head.

    `host`, `port` and `path` are canonical (see kedge.core.http.authority and .paths):
    the one form used for routing, policy and forwarding. `port` is the scheme's default
    when the client named none; `explicit_port` says whether it did (adhoc rules apply
    their own default port then, as in kEdge). `query` is the raw query
    (without '?'), forwarded unchanged. `absolute_form` is True for a forward-proxy request
    (RFC 9112 §3.2.2), whose authority came from the request target.
    """

    __slots__ = (
        "_authority",
        "absolute_form",
        "explicit_port",
        "headers",
        "host",
        "method",
        "path",
        "port",
        "query",
        "scheme",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: Headers,
        *,
        scheme: str,
        host: str,
        port: int,
        path: str,
        query: str,
        absolute_form: bool,
        explicit_port: bool = True,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.query = query
        self.absolute_form = absolute_form
        self.explicit_port = explicit_port
        self._authority: str | None = None

    @property
    def authority(self) -> str:
        """host[:port] as the client addressed it, with the port only when not the default."""
        authority = self._authority
        if authority is None:
            host = f"[{self.host}]" if ":" in self.host else self.host
            default = 443 if self.scheme == "https" else 80
            authority = host if self.port == default else f"{host}:{self.port}"
            self._authority = authority  # read by the forwarder and the access log
        return authority

    @property
    def path_and_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __repr__(self) -> str:
        return (
            f"RequestHead({self.method} {self.authority}{self.path_and_query} HTTP/{self.version})"
        )


def connect_head(
    target: bytes, version: str, headers: Headers, *, scheme: str, host: str, port: int
) -> RequestHead:
    """The head of a CONNECT (RFC 9110 §9.3.6; RFC 9113 §8.5 for HTTP/2): `target` is the
    `host:port` it names; there is no path, the tunnel carries whatever the client sends."""
    return RequestHead(
        "CONNECT",
        target,
        version,
        headers,
        scheme=scheme,
        host=host,
        port=port,
        path="",
        query="",
        absolute_form=False,
        explicit_port=True,
    )


class ResponseHead:
    __slots__ = ("headers", "reason", "status", "version")

    def __init__(
        self, status: int, headers: Headers, reason: bytes = b"", version: str = "1.1"
    ) -> None:
        self.status = status
        self.headers = headers
        self.reason = reason
        self.version = version

    def __repr__(self) -> str:
        return f"ResponseHead({self.status})"
