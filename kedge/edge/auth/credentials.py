"""Finding the edge's bearer token in a request, and the request headers after auth. Pure.

`Proxy-Authorization` is always the edge's: it is hop-by-hop and never forwarded. An
`Authorization` token is the edge's only when the listener accepts it there and the token
names one of the edge's issuers and audiences; any other `Authorization` (a backend's own
credential) passes untouched. A token is one `Bearer` credential (RFC 6750 §2.1; the scheme
is case-insensitive, RFC 9110 §11.1); two of the edge's headers are ambiguous and refused
(hardening J13). The size cap applies before anything decodes the token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from kedge.core.errors import BadRequest, CredentialTooLarge, Unauthenticated
from kedge.core.http.messages import Headers
from kedge.edge.config import CredentialSource

__all__ = ["Credential", "carries_edge_token", "challenge", "find_credential", "strip_headers"]

_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *")
_NAMES = {
    CredentialSource.PROXY_AUTHORIZATION: b"proxy-authorization",
    CredentialSource.AUTHORIZATION: b"authorization",
}


@dataclass(frozen=True, slots=True)
class Credential:
    token: str
    source: CredentialSource


def challenge(source: CredentialSource, error: str | None = None) -> tuple[bytes, bytes]:
    """A Bearer challenge (RFC 6750 §3) in the header that matches where the client should
    put its token: Proxy-Authenticate for Proxy-Authorization (RFC 9110 §11.7.1)."""
    name = (
        b"proxy-authenticate"
        if source is CredentialSource.PROXY_AUTHORIZATION
        else b"www-authenticate"
    )
    value = 'Bearer realm="kedge"'
    if error is not None:
        safe = "".join(c for c in error if " " <= c <= "~" and c not in '"\\')[:200]
        value += f', error="invalid_token", error_description="{safe}"'
    return name, value.encode("ascii")


@lru_cache(maxsize=4096)
def _bearer(value: bytes, source: CredentialSource, max_bytes: int) -> str:
    # Cached: a client repeats the same header on every request, and matching a long
    # token against the pattern costs microseconds (failures raise and are not cached).
    if len(value) > max_bytes + 7:  # "Bearer " and the token
        raise CredentialTooLarge(f"the bearer token is larger than {max_bytes} bytes")
    m = _BEARER.fullmatch(value)
    if m is None:
        raise Unauthenticated(
            f"{_NAMES[source].decode()} is not one Bearer token", challenge(source, None)
        )
    return m.group(1).decode("ascii")


def find_credential(
    headers: Headers,
    sources: tuple[CredentialSource, ...],
    addressed_to_edge: Callable[[str], bool],
    max_bytes: int,
) -> Credential | None:
    """The edge's credential in `headers`, by the listener's order of sources."""
    for source in sources:
        name = _NAMES[source]
        values = [v for n, v in headers if n == name]
        if not values:
            continue
        if source is CredentialSource.PROXY_AUTHORIZATION:
            if len(values) > 1:
                raise BadRequest("more than one Proxy-Authorization header")
            return Credential(_bearer(values[0], source, max_bytes), source)
        ours = [t for v in values if (t := _edge_token(v)) is not None and addressed_to_edge(t)]
        if ours:
            if len(values) > 1:
                raise BadRequest("more than one Authorization header with the edge's token")
            return Credential(_bearer(values[0], source, max_bytes), source)
    return None


def carries_edge_token(headers: Headers, addressed_to_edge: Callable[[str], bool]) -> bool:
    """Whether an `Authorization` header holds a token addressed to the edge. On a listener
    that reads `Authorization`, such a header never reaches a backend, even when the request
    proved itself with `Proxy-Authorization` instead."""
    return any(
        n == b"authorization" and (t := _edge_token(v)) is not None and addressed_to_edge(t)
        for n, v in headers
    )


def _edge_token(value: bytes) -> str | None:
    m = _BEARER.fullmatch(value)
    return m.group(1).decode("ascii") if m is not None else None


def strip_headers(headers: Headers, strip: frozenset[bytes], drop_authorization: bool) -> Headers:
    """The client's headers without configured identity headers and, when it carried the
    edge's token, without `Authorization` (the edge adds its own identity header later,
    after every client copy is gone)."""
    return [
        item
        for item in headers
        if item[0] not in strip and not (drop_authorization and item[0] == b"authorization")
    ]
