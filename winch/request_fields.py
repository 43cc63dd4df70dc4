"""The HTTP/2 header block winch sends an edge for a client's request (pure).

The client's end-to-end headers pass; hop-by-hop ones (RFC 9110 §7.6.1, and every name
the client's Connection header nominates) do not, and neither does the client's
Proxy-Authorization (it was for winch) nor, when the route injects a backend credential,
the client's Authorization (hardening X5/X6: the injected credential is the only one, and
a `Connection: Authorization` nomination cannot remove it since it is added afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass

from kedge.core.http.headers import DEBUG_HEADER, HOP_BY_HOP, connection_tokens
from kedge.core.http.messages import Headers, RequestHead, header_value

__all__ = ["Injected", "client_fields", "edge_request_fields"]

# Set by winch itself (or carried in pseudo-headers): a client's copy is dropped.
_WINCH_SET = frozenset({b"host", b"x-request-id", b"expect", b"via"})
# A Connection nomination of these is ignored: they are the message, not the hop.
_NOT_NOMINATABLE = frozenset({b"authorization", b"content-length"})


@dataclass(frozen=True, slots=True)
class Injected:
    """What winch adds: the edge's and the service's credentials, a debug tag, Via."""

    proxy_authorization: str | None = None
    authorization: str | None = None
    debug_tag: str | None = None


def client_fields(head: RequestHead, *, drop_authorization: bool) -> Headers:
    """The client's end-to-end headers, in order: what winch passes on, to an edge or (with
    `unmapped: direct`) to the name itself."""
    drop = HOP_BY_HOP | _WINCH_SET | (connection_tokens(head.headers) - _NOT_NOMINATABLE)
    if drop_authorization:
        drop = drop | {b"authorization"}
    return [item for item in head.headers if item[0] not in drop]


def edge_request_fields(
    head: RequestHead, *, grpc: bool, request_id: bytes, injected: Injected
) -> Headers:
    """Pseudo-headers first (RFC 9113 §8.3), the service's authority as `:authority` (the
    edge routes on it), then the filtered client headers and winch's own."""
    fields: Headers = [
        (b":method", head.method.encode("ascii")),
        (b":scheme", head.scheme.encode("ascii")),
        (b":authority", head.authority.encode("ascii")),
        (b":path", head.path_and_query.encode("latin-1")),
    ]
    te = header_value(head.headers, b"te")
    if grpc or (te is not None and b"trailers" in te.lower()):
        fields.append((b"te", b"trailers"))  # the only TE value HTTP/2 allows (RFC 9113 §8.2.2)
    fields += client_fields(head, drop_authorization=injected.authorization is not None)
    fields.append((b"x-request-id", request_id))
    if injected.proxy_authorization is not None:
        fields.append((b"proxy-authorization", injected.proxy_authorization.encode("latin-1")))
    if injected.authorization is not None:
        fields.append((b"authorization", injected.authorization.encode("latin-1")))
    if injected.debug_tag is not None:
        fields.append((DEBUG_HEADER, injected.debug_tag.encode("latin-1")))
    via = header_value(head.headers, b"via")
    hop = b"2 winch" if head.version == "2" else b"1.1 winch"
    fields.append((b"via", via + b", " + hop if via else hop))
    return fields
