"""gRPC-over-HTTP/2 helpers (pure): timeouts, status names and message encoding.

Follows the gRPC over HTTP/2 protocol description (PROTOCOL-HTTP2.md in grpc/grpc):
`grpc-timeout` is 1 to 8 ASCII digits and a unit; `grpc-message` is percent-encoded
UTF-8. The edge renders its own errors as trailers-only responses in
`kedge.core.http.error_response`.
"""

from __future__ import annotations

from typing import Protocol

from kedge.core.http.messages import RequestHead

__all__ = [
    "GRPC_STATUS_NAMES",
    "format_grpc_timeout",
    "grpc_deadline",
    "grpc_message",
    "parse_grpc_timeout",
]

GRPC_STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class HasHead(Protocol):
    @property
    def head(self) -> RequestHead: ...


_UNIT_SECONDS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
# Largest first: the coarsest unit that keeps the value within 8 digits loses least.
_UNITS_FINE_FIRST = ((b"n", 1e9), (b"u", 1e6), (b"m", 1e3), (b"S", 1.0), (b"M", 1 / 60))
_MAX_DIGITS_VALUE = 99_999_999


def parse_grpc_timeout(value: bytes) -> float | None:
    """Seconds from a `grpc-timeout` value, or None when malformed.

    Strict: 1-8 digits then one unit letter; nothing else (no sign, no fraction, no
    spaces). Eight digits bound the value, so no overflow is possible (hardening G1).
    """
    if not 2 <= len(value) <= 9:
        return None
    unit = _UNIT_SECONDS.get(value[-1])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or not digits.isascii():
        return None
    return int(digits) * unit


def grpc_deadline(ex: HasHead, cap: float) -> float | None:
    """Seconds the call may take: its valid `grpc-timeout`, at most `cap` (0: no cap);
    None when neither limits it. A malformed value is ignored (hardening G1: use the
    route's limit rather than refuse the call)."""
    asked: float | None = None
    for name, value in ex.head.headers:
        if name == b"grpc-timeout":
            asked = parse_grpc_timeout(value)
            break
    if asked is None:
        return None  # no deadline asked: a 10-minute stream lives on (idle timeouts apply)
    return min(asked, cap) if cap > 0 else asked


def format_grpc_timeout(seconds: float) -> bytes:
    """A `grpc-timeout` value for `seconds` (> 0), as precise as 8 digits allow."""
    seconds = max(seconds, 1e-9)
    for unit, per_second in _UNITS_FINE_FIRST:
        amount = int(seconds * per_second)
        if amount <= _MAX_DIGITS_VALUE:
            return b"%d%s" % (max(amount, 1), unit)
    return b"%dH" % min(int(seconds / 3600), _MAX_DIGITS_VALUE)


def grpc_message(text: str) -> bytes:
    """Percent-encode `text` for `grpc-message`: UTF-8, with bytes outside printable ASCII
    and '%' itself escaped (PROTOCOL-HTTP2.md, "Responses")."""
    out = bytearray()
    for byte in text.encode("utf-8", "replace"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)
