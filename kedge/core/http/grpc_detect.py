"""Whether a request is a gRPC call, from its content-type (pure).

gRPC over HTTP/2 (PROTOCOL-HTTP2.md in grpc/grpc) sends `content-type: application/grpc`,
optionally followed by a message subtype (`+proto`, `+json`, ...) or parameters (`;...`).
`application/grpc-web` and `application/grpc-web-text` are gRPC-Web: plain HTTP requests
to the edge (as in kEdge), routed like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["is_grpc_content_type", "is_grpc_request"]

_GRPC = b"application/grpc"


def is_grpc_content_type(value: bytes) -> bool:
    """`application/grpc` exactly, or followed by '+' or ';' (case-sensitive, as gRPC sends it)."""
    return value.startswith(_GRPC) and value[len(_GRPC) : len(_GRPC) + 1] in (b"", b"+", b";")


def is_grpc_request(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the first `content-type` field (lower-case names, raw values) says gRPC."""
    for name, value in headers:
        if name == b"content-type":
            return is_grpc_content_type(value)
    return False
