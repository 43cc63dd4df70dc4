"""The upstream HTTP/2 header block for an exchange (h2 or h2c backends).

Pseudo-headers from the canonical head (RFC 9113 §8.3.1), the same forwarded headers as
HTTP/1.1, plus `te: trailers` when the client asked for trailers (gRPC requires it;
hardening G9/H8). The stream itself is driven by kedge.core.net.h2_forward.
"""

from __future__ import annotations

from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import Headers, header_value
from kedge.edge.forwarding.request_headers import upstream_headers

__all__ = ["request_fields"]


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
