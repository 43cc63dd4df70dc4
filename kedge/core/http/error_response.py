"""THE error renderer: every edge-made error becomes a response here and nowhere else.

An HTTP error carries the status, `X-Kedge-Error` (one line of reason), `X-Kedge-Error-Type`
(the stable kind), the request ID and a small text body. gRPC errors (trailers-only
responses) are rendered by the HTTP/2 layer from the same KedgeError attributes.
"""

from __future__ import annotations

from http import HTTPStatus

from kedge.core.errors import KedgeError
from kedge.core.http.messages import Headers, ResponseHead

__all__ = ["error_response", "reason_phrase"]


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
    error: KedgeError, request_id: bytes | None, *, close: bool = False
) -> tuple[ResponseHead, bytes]:
    """The response head and body for `error`; `close`: the connection ends after it (also
    implied by the error itself), so the head says `Connection: close`."""
    status = error.http_status
    phrase = reason_phrase(status)
    body = f"{status} {phrase}: {error.reason}\n".encode("utf-8", "replace")
    headers: Headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        # The body can echo client input (an unmatched path): never let a browser sniff
        # it as HTML.
        (b"x-content-type-options", b"nosniff"),
        (b"content-length", str(len(body)).encode()),
        (b"x-kedge-error", _header_safe(error.reason)),
        (b"x-kedge-error-type", error.kind.encode()),
    ]
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    if close or error.close_connection:
        headers.append((b"connection", b"close"))
    return ResponseHead(status, headers, phrase.encode()), body
