"""THE error renderer: every edge-made error becomes a response here and nowhere else.

An HTTP error carries the status, `X-Kedge-Error` (one line of reason), `X-Kedge-Error-Type`
(the stable kind), the request ID and a small text body. A gRPC call gets a trailers-only
response instead (HTTP 200, `grpc-status` and `grpc-message`, the same kind and request ID),
or, once its response headers were sent, the same fields as trailers.
"""

from __future__ import annotations

from http import HTTPStatus

from kedge.core.errors import KedgeError
from kedge.core.http.grpc import grpc_message
from kedge.core.http.messages import Headers, ResponseHead

__all__ = ["error_response", "grpc_error_fields", "grpc_error_response", "reason_phrase"]


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _header_safe(text: str) -> bytes:
    # Field values are visible ASCII and SP (RFC 9110 §5.5); anything else is replaced so
    # a reason built from client input can never inject a header or a line.
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:512].encode("ascii")


def error_response(
    error: KedgeError, request_id: bytes | None, *, close: bool = False, origin: bytes = b"kedge"
) -> tuple[ResponseHead, bytes]:
    """The response head and body for `error`; `close`: the connection ends after it (also
    implied by the error itself), so the head says `Connection: close`. `origin` names who
    made the error in the header names: `X-Kedge-Error` from the edge, `X-Winch-Error` from
    winch, so a client can tell which hop failed."""
    status = error.http_status
    phrase = reason_phrase(status)
    body = f"{status} {phrase}: {error.reason}\n".encode("utf-8", "replace")
    headers: Headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        # The body can echo client input (an unmatched path): never let a browser sniff
        # it as HTML.
        (b"x-content-type-options", b"nosniff"),
        (b"content-length", str(len(body)).encode()),
        (b"x-" + origin + b"-error", _header_safe(error.reason)),
        (b"x-" + origin + b"-error-type", error.kind.encode()),
    ]
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    headers.extend(error.response_headers)
    if close or error.close_connection:
        headers.append((b"connection", b"close"))
    return ResponseHead(status, headers, phrase.encode()), body


def grpc_error_fields(
    error: KedgeError, request_id: bytes | None, origin: bytes = b"kedge"
) -> Headers:
    """The status fields of a gRPC error: the trailers of a call whose headers are out."""
    fields: Headers = [
        (b"grpc-status", b"%d" % error.grpc_status),
        (b"grpc-message", grpc_message(error.reason[:512])),
        (b"x-" + origin + b"-error-type", error.kind.encode()),
    ]
    if request_id is not None:
        fields.append((b"x-request-id", request_id))
    return fields


def grpc_error_response(
    error: KedgeError, request_id: bytes | None, origin: bytes = b"kedge"
) -> ResponseHead:
    """A trailers-only gRPC response: HTTP 200 whose one HEADERS frame ends the stream
    (PROTOCOL-HTTP2.md: "Trailers-Only"); gRPC clients read the status from it."""
    headers: Headers = [(b"content-type", b"application/grpc")]
    headers += grpc_error_fields(error, request_id, origin)
    return ResponseHead(200, headers)
