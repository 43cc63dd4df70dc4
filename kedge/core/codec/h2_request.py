"""Validation of an HTTP/2 request head: what python-hyper h2 lets through (pure).

h2 already refuses upper-case names, connection-specific fields, `te` other than
`trailers`, CR/LF/NUL in values, misplaced, unknown or repeated pseudo-headers, `host`
differing from `:authority`, and a Content-Length that disagrees with the DATA received
(hardening.md F5). It accepts a `:path` without a leading '/' (`hello`) and any `:scheme`
(`http://localhost/?`), and it does not canonicalise the authority or the path. Those are
checked here (HAProxy's h2_desync_attacks cases), with the same authority and path rules as
HTTP/1.1 so routing sees one canonical form whatever the protocol (RFC 9113 §8.3.1).
"""

from __future__ import annotations

import re
from functools import lru_cache

from kedge.core.errors import BadRequest, BodyTooLarge
from kedge.core.http.authority import names_port, parse_authority
from kedge.core.http.grpc_detect import is_grpc_content_type
from kedge.core.http.headers import is_valid_request_id
from kedge.core.http.messages import Headers, RequestHead, connect_head
from kedge.core.http.paths import canonical_path, split_target

__all__ = ["ValidH2Request", "validate_h2_request"]

_METHOD = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}")  # RFC 9110 §9.1: a token


class ValidH2Request:
    """A request head that passed validation, plus what the HTTP/2 driver needs."""

    __slots__ = ("grpc", "head", "request_id")

    def __init__(self, head: RequestHead, request_id: bytes | None, grpc: bool) -> None:
        self.head = head
        self.request_id = request_id  # the client's, when valid; None: generate one
        self.grpc = grpc  # content-type application/grpc[+...|;...] (not grpc-web)


@lru_cache(maxsize=4096)
def _authority(value: bytes, default_port: int) -> tuple[str, int, bool]:
    host, port = parse_authority(value.decode("latin-1"), default_port)
    return host, port, names_port(value)


def _connect(
    req_scheme: bytes | None,
    path: bytes | None,
    authority: bytes | None,
    content_length: bytes | None,
    headers: Headers,
    request_id: bytes | None,
    scheme: str,
) -> ValidH2Request:
    """A CONNECT stream (RFC 9113 §8.5): `:authority` names `host:port`, and there is no
    `:scheme` or `:path`; the stream's DATA frames are the tunnel's bytes, both ways.
    (Extended CONNECT, with `:protocol`, is refused above: it is not offered.)"""
    if req_scheme is not None or path is not None:
        raise BadRequest("a CONNECT has no :scheme or :path (RFC 9113 §8.5)")
    if not authority:
        raise BadRequest("a CONNECT needs :authority host:port (RFC 9113 §8.5)")
    if content_length is not None:
        raise BadRequest("a CONNECT has no content-length: its DATA frames are the tunnel")
    host_name, port, explicit_port = _authority(authority, 0)
    if not explicit_port:
        raise BadRequest("a CONNECT :authority is host:port (RFC 9113 §8.5)")
    head = connect_head(authority, "2", headers, scheme=scheme, host=host_name, port=port)
    return ValidH2Request(head, request_id, False)


def validate_h2_request(
    fields: Headers, *, scheme: str, end_stream: bool, max_body: int
) -> ValidH2Request:
    """Check the decoded header block of a new stream (pseudo-headers first, as h2 ensures).

    `scheme` is the listener's ("http" or "https"): like HTTP/1.1, a missing port defaults
    from how the client reached the edge. Regular fields keep their order; `cookie` crumbs
    are joined into one field (RFC 9113 §8.2.3) so an HTTP/1.1 backend sees one header.
    """
    method = path = authority = req_scheme = None
    headers: Headers = []
    cookies: list[bytes] = []
    host: bytes | None = None
    content_length: bytes | None = None
    request_id: bytes | None = None
    content_type: bytes | None = None
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                req_scheme = value
            else:
                # `:protocol` (extended CONNECT) is not offered (no ENABLE_CONNECT_PROTOCOL).
                raise BadRequest(f"pseudo-header {name.decode('latin-1')} is not supported")
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            host = value
            continue  # :authority (or this value) is written by the forwarder
        if name == b"content-length":
            content_length = value
        elif name == b"content-type":
            if content_type is not None:
                # RFC 9110 §8.3: a single value. Two would let the edge and a backend
                # disagree on whether this is a gRPC call.
                raise BadRequest("more than one content-type field")
            content_type = value
        elif name == b"x-request-id" and request_id is None and is_valid_request_id(value):
            request_id = value
        headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if method is None or _METHOD.fullmatch(method) is None:
        raise BadRequest("missing or invalid :method")
    if method == b"CONNECT":
        return _connect(
            req_scheme, path, authority or host, content_length, headers, request_id, scheme
        )
    if req_scheme not in (b"http", b"https"):
        raise BadRequest("missing or invalid :scheme (http or https)")
    if path is None or path[:1] != b"/":
        # RFC 9113 §8.3.1: origin-form or "*" (OPTIONS only); "*" is not proxied.
        raise BadRequest("missing or invalid :path (must start with '/')")
    if authority is None:
        authority = host  # RFC 9113 §8.3.1 allows Host instead of :authority
    if not authority:
        raise BadRequest("missing :authority")
    host_name, port, explicit_port = _authority(authority, 443 if scheme == "https" else 80)
    raw_path, query = split_target(path)
    canonical = canonical_path(raw_path)
    if content_length is not None:
        if not content_length.isdigit():
            raise BadRequest("invalid content-length")
        if max_body and int(content_length) > max_body:
            raise BodyTooLarge(
                f"content-length {int(content_length)} exceeds the limit of {max_body} bytes"
            )
        if end_stream and int(content_length) != 0:
            raise BadRequest("content-length does not match the request body")
    head = RequestHead(
        method.decode("ascii"),
        path,
        "2",
        headers,
        scheme=scheme,
        host=host_name,
        port=port,
        path=canonical,
        query=query,
        absolute_form=False,
        explicit_port=explicit_port,
    )
    grpc = content_type is not None and is_grpc_content_type(content_type)
    return ValidH2Request(head, request_id, grpc)
