"""Header rewriting for forwarded messages: hop-by-hop removal and the edge's own headers.

Pure functions over header lists (lower-case names). Order matters and follows the lesson
of golang/go#50580: names nominated by the client's `Connection` header are removed from
the *client's* headers first, and only then does the edge add its own headers, so a
nomination such as `Connection: X-Forwarded-For` can never remove what the edge adds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import lru_cache

from kedge.core.http.messages import Headers

__all__ = [
    "DEBUG_HEADER",
    "HOP_BY_HOP",
    "RequestIdGenerator",
    "connection_tokens",
    "forward_request_headers",
    "forward_response_headers",
    "is_valid_request_id",
]

# RFC 9110 §7.6.1 plus the legacy ones every proxy strips (Go's ReverseProxy list), and
# Proxy-Authorization: the credential for this hop must never leak to a backend.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
    }
)

# Names the edge sets itself; the client's copies are dropped or appended to, never trusted.
# Host is written first by the forwarder from the canonical authority; Expect is answered by
# the edge itself (it sends 100 Continue when it wants the body, as nginx does).
_EDGE_SET = frozenset(
    {b"host", b"expect", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}
)
_EDGE_APPEND = frozenset({b"x-forwarded-for", b"forwarded", b"via"})
# Identity headers only the edge may produce (the auth layer sets them); always stripped
# from clients, including underscore spellings that some backends fold into dashes.
_SPOOFABLE_IDENTITY = frozenset(
    {
        b"x-kedge-principal",
        b"x_kedge_principal",
        b"x-forwarded-client-cert",
        b"x_forwarded_client_cert",
    }
)
# A Connection nomination of these is ignored (RFC 9110 §7.6.1 lets a proxy refuse to
# treat end-to-end fields as hop-by-hop): removing them would change the message itself.
_PROTECTED = frozenset({b"host", b"content-length", b"authorization", b"cookie", b"content-type"})

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")
_TOKEN_SPLIT = re.compile(rb"[ \t]*,[ \t]*")
# RFC 9110 §7.6.3: the protocol version this hop received, then our pseudonym.
_VIA = {"1.1": b"1.1 kedge", "1.0": b"1.0 kedge", "2": b"2 kedge"}


def is_valid_request_id(value: bytes) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


class RequestIdGenerator:
    """Unique, cheap request IDs: a random per-process prefix and a counter.

    Replicas pick independent 64-bit prefixes, so IDs do not collide across an edge fleet.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(8).hex()
        self._counter = 0

    def next(self) -> bytes:
        self._counter += 1
        return f"{self._prefix}-{self._counter:x}".encode()


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-case option names listed in all Connection headers (RFC 9110 §7.6.1)."""
    found: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in _TOKEN_SPLIT.split(value.strip().lower()):
                if token:
                    found.add(token)
    return frozenset(found)


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Every name the request rewrite treats specially: one set lookup for the common header.
# Read by the edge itself, never forwarded: winch's debug-mode tag (kEdge's
# X-Kedge-Info-Logs), which makes the edge log the request at info level.
DEBUG_HEADER = b"x-kedge-debug"
_SPECIAL_REQUEST = HOP_BY_HOP | _EDGE_SET | _EDGE_APPEND | _SPOOFABLE_IDENTITY | {DEBUG_HEADER}
_SPECIAL_RESPONSE = HOP_BY_HOP | {b"via", b"x-request-id"}
# Tokens whose nomination changes nothing: protected names, names removed anyway, and
# `close`, an option rather than a field (the usual `Connection: keep-alive` costs nothing).
_NOT_NOMINATABLE = _PROTECTED | HOP_BY_HOP | {b"close"}


def _quote_forwarded(value: str) -> str:
    # RFC 7239 §4: a value that is not a token (e.g. contains ':' or '[') is a quoted-string.
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=4096)
def _forwarded_element(client_ip: str, proto: str, authority: str) -> bytes:
    """This hop's Forwarded element (RFC 7239 §4); cached: clients repeat themselves."""
    for_value = f"[{client_ip}]" if ":" in client_ip else client_ip
    return (
        f"for={_quote_forwarded(for_value)};proto={proto};host={_quote_forwarded(authority)}"
    ).encode()


def _split(
    headers: Headers, special: frozenset[bytes], appended: dict[bytes, list[bytes]]
) -> tuple[Headers, bool]:
    """Pass-through headers, the values of names the edge appends to, and whether the
    client sent Connection (whose nominations `_drop_nominated` then applies)."""
    out: Headers = []
    has_connection = False
    for item in headers:
        name = item[0]
        if name not in special:
            out.append(item)
        elif name in appended:
            appended[name].append(item[1])
        elif name == b"connection":
            has_connection = True
    return out, has_connection


def _drop_nominated(headers: Headers, out: Headers, appended: dict[bytes, list[bytes]]) -> Headers:
    """Remove names listed in Connection from the sender's headers only, before the edge
    adds its own (golang/go#50580)."""
    nominated = connection_tokens(headers) - _NOT_NOMINATABLE
    if not nominated:
        return out
    for name in nominated & appended.keys():
        appended[name].clear()
    return [item for item in out if item[0] not in nominated]


def _finish(
    out: Headers, via: list[bytes], request_id: bytes, upgrade: bytes | None, version: str
) -> Headers:
    via.append(_VIA.get(version, b"1.1 kedge"))
    out.append((b"via", b", ".join(via)))
    out.append((b"x-request-id", request_id))
    if upgrade is not None:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", upgrade))
    return out


def forward_request_headers(
    headers: Headers,
    *,
    client_ip: str,
    proto: str,
    authority: str,
    request_id: bytes,
    upgrade: bytes | None = None,
    version: str = "1.1",
) -> Headers:
    """The headers to send upstream for a client request (`version`: the client's HTTP
    version, for Via).

    `upgrade` is the protocol of an upgrade the edge is passing through (e.g. b"websocket");
    then `Connection: upgrade` and `Upgrade` are kept, everything else hop-by-hop is removed.
    X-Forwarded-For, Forwarded and Via are appended to; X-Forwarded-Proto, X-Forwarded-Host
    and X-Request-Id reflect what this edge saw (it is the first trusted hop).
    """
    appended: dict[bytes, list[bytes]] = {b"x-forwarded-for": [], b"forwarded": [], b"via": []}
    out, has_connection = _split(headers, _SPECIAL_REQUEST, appended)
    if has_connection:
        out = _drop_nominated(headers, out, appended)
    xff = appended[b"x-forwarded-for"]
    xff.append(client_ip.encode())
    fwd = appended[b"forwarded"]
    fwd.append(_forwarded_element(client_ip, proto, authority))
    out.append((b"x-forwarded-for", b", ".join(xff)))
    out.append((b"x-forwarded-proto", proto.encode()))
    out.append((b"x-forwarded-host", authority.encode()))
    out.append((b"forwarded", b", ".join(fwd)))
    return _finish(out, appended[b"via"], request_id, upgrade, version)


def forward_response_headers(
    headers: Headers, *, request_id: bytes, upgrade: bytes | None = None, version: str = "1.1"
) -> Headers:
    """The headers to send to the client for a backend response (hop-by-hop removed;
    `version`: the backend's HTTP version, for Via)."""
    appended: dict[bytes, list[bytes]] = {b"via": []}
    out, has_connection = _split(headers, _SPECIAL_RESPONSE, appended)
    if has_connection:
        out = _drop_nominated(headers, out, appended)
    return _finish(out, appended[b"via"], request_id, upgrade, version)
