"""Validation of an HTTP/1.1 request head: the checks llhttp leaves to the edge (pure).

llhttp (via httptools) already rejects the framing attacks it can see alone. What needs
knowledge of the whole head is decided here, without I/O, so it can be tested table-driven:
HTTP/0.9 and 2.0 request lines, Transfer-Encoding rules (RFC 9112 §6.1, §6.3), Host rules
(RFC 9112 §3.2), target forms, the canonical authority and path, keep-alive, Expect and
upgrades, and CONNECT's authority-form target (RFC 9112 §3.2.3). Every refusal is a typed
KedgeError.
"""

from __future__ import annotations

from functools import lru_cache

from kedge.core.errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    NotImplementedByEdge,
    VersionNotSupported,
)
from kedge.core.http.authority import names_port, parse_absolute_form, parse_authority
from kedge.core.http.headers import connection_tokens, is_valid_request_id
from kedge.core.http.messages import Headers, RequestHead, connect_head
from kedge.core.http.paths import canonical_path, split_target

__all__ = ["ValidRequest", "validate_request"]


class ValidRequest:
    """A request head that passed validation, with what the codec needs to frame it."""

    __slots__ = ("expect_continue", "has_body", "head", "keep_alive", "request_id", "upgrade")

    def __init__(
        self,
        head: RequestHead,
        *,
        keep_alive: bool,
        has_body: bool,
        expect_continue: bool,
        request_id: bytes | None,
        upgrade: bytes | None,
    ) -> None:
        self.head = head
        self.keep_alive = keep_alive  # what the client asked for (Connection, version)
        self.has_body = has_body
        self.expect_continue = expect_continue  # answer 100 Continue when the body is wanted
        self.request_id = request_id  # the client's, when valid; None: generate one
        self.upgrade = upgrade  # b"websocket" for an upgrade the edge may pass through


@lru_cache(maxsize=4096)
def _host_header(value: bytes, default_port: int) -> tuple[str, int]:
    """parse_authority for a Host header, memoised: a pure function of two values, and an
    edge sees the same few hosts over and over. Errors are not cached (they raise)."""
    return parse_authority(value.decode("latin-1"), default_port)


def validate_request(
    *,
    version: str,
    method: str,
    target: bytes,
    headers: Headers,
    scheme: str,
    max_body: int,
) -> ValidRequest:
    """Check one parsed head; `headers` have lower-case names; `max_body` 0 = no limit."""
    if version not in ("1.1", "1.0"):
        if version in ("0.9", ""):
            raise BadRequest("HTTP/0.9 requests are not accepted")
        raise VersionNotSupported(f"HTTP/{version} is not supported on this connection")
    host_values: list[bytes] = []
    te: bytes | None = None
    content_length: int | None = None
    expect: bytes | None = None
    request_id: bytes | None = None
    upgrade: bytes | None = None
    tokens: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name == b"host":
            host_values.append(value)
        elif name == b"content-length":
            content_length = int(value)  # llhttp validated digits and uniqueness
        elif name == b"transfer-encoding":
            te = value
        elif name == b"expect":
            expect = value.lower()
        elif name == b"x-request-id":
            if request_id is None and is_valid_request_id(value):
                request_id = value
        elif name == b"upgrade":
            upgrade = value.strip().lower()
        elif name == b"connection":
            tokens = connection_tokens(headers)
    if te is not None and version == "1.0":
        # RFC 9112 §6.1: TE in HTTP/1.0 is a framing fault; nginx answers 400 too.
        raise BadRequest("Transfer-Encoding is not allowed in HTTP/1.0")
    if te is not None and te.strip().lower() != b"chunked":
        if te.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
            # RFC 9112 §6.3: chunked not final, so the body length is unknowable.
            raise BadRequest("Transfer-Encoding does not end with chunked")
        # `gzip, chunked` frames fine, but the edge decodes no other coding and must not
        # forward a still-coded body without its TE: RFC 9112 §6.1 says 501.
        raise NotImplementedByEdge("only the chunked transfer coding is supported")
    if len(host_values) > 1:
        raise BadRequest("more than one Host header")
    if method == "CONNECT":
        return _connect_request(
            version=version,
            target=target,
            headers=headers,
            scheme=scheme,
            host_value=host_values[0] if host_values else None,
            framed=te is not None or content_length is not None,
            request_id=request_id,
        )
    absolute = target[:1] != b"/"
    if absolute:
        if target == b"*":
            raise BadRequest("asterisk-form request target is not proxied")
        scheme, authority, path_and_query = parse_absolute_form(target)
        default_port = 443 if scheme == "https" else 80
        host, port = parse_authority(authority, default_port)
        if host_values:
            # RFC 9112 §3.2.2 says to ignore Host here; like HAProxy we refuse a
            # mismatch instead, so nothing downstream can route on the other one.
            if parse_authority(host_values[0].decode("latin-1"), default_port) != (host, port):
                raise BadRequest("Host header does not match the absolute-form target")
        elif version == "1.1":
            raise BadRequest("missing Host header")
        explicit_port = names_port(authority.encode("latin-1"))
        raw_path, query = split_target(path_and_query.encode("latin-1"))
    else:
        if not host_values:
            raise BadRequest("missing Host header")
        host, port = _host_header(host_values[0], 443 if scheme == "https" else 80)
        explicit_port = names_port(host_values[0])
        raw_path, query = split_target(target)
    path = canonical_path(raw_path)
    if version == "1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    has_body = te is not None or (content_length is not None and content_length > 0)
    limit = max_body
    if limit and content_length is not None and content_length > limit:
        # RFC 9110 §15.5.14: refuse before reading a byte; with Expect the client
        # has not sent the body yet.
        raise BodyTooLarge(f"Content-Length {content_length} exceeds the limit of {limit} bytes")
    if expect is not None and version == "1.1" and expect != b"100-continue":
        raise ExpectationFailed("only Expect: 100-continue is supported")
    ws_upgrade: bytes | None = None
    if upgrade is not None and b"upgrade" in tokens:
        if has_body:
            raise BadRequest("an upgrade request must not have a body")
        if upgrade == b"websocket" and method == "GET":
            ws_upgrade = upgrade
        # Any other upgrade (h2c among them: BishopFox's h2c smuggling) is ignored:
        # Upgrade is hop-by-hop and is never forwarded.
    head = RequestHead(
        method,
        target,
        version,
        headers,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        query=query,
        absolute_form=absolute,
        explicit_port=explicit_port,
    )
    return ValidRequest(
        head,
        keep_alive=keep_alive,
        has_body=has_body,
        expect_continue=expect is not None and version == "1.1",
        request_id=request_id,
        upgrade=ws_upgrade,
    )


def _connect_request(
    *,
    version: str,
    target: bytes,
    headers: Headers,
    scheme: str,
    host_value: bytes | None,
    framed: bool,
    request_id: bytes | None,
) -> ValidRequest:
    """A CONNECT (RFC 9110 §9.3.6): the target is `host:port` and names the tunnel's far end.

    It has no content, so any framing header is refused: a body the edge would not read
    could otherwise be taken for the first tunnel bytes, or a tunnel byte for a body. The
    port is required (RFC 9112 §3.2.3) and userinfo is refused like everywhere else. Host,
    when sent, must name the same place (a port-less Host is taken to mean the target's
    port), so nothing can route or authorise on the other one.
    """
    if framed:
        raise BadRequest("a CONNECT request has no content: Content-Length or Transfer-Encoding")
    if target[:1] == b"/" or not names_port(target):
        raise BadRequest("a CONNECT target is host:port (RFC 9112 §3.2.3)")
    host, port = parse_authority(target.decode("latin-1"), 0)
    if host_value is not None and _host_header(host_value, port) != (host, port):
        raise BadRequest("Host header does not match the CONNECT target")
    return ValidRequest(
        connect_head(target, version, headers, scheme=scheme, host=host, port=port),
        keep_alive=False,  # the connection becomes the tunnel, or closes after a refusal
        has_body=False,
        expect_continue=False,
        request_id=request_id,
        upgrade=None,
    )
