"""JWTs as the edge accepts them: strict compact JWS parsing and claim checks, pure.

Only the compact serialization (RFC 7515 §7.1) with exactly three unpadded base64url parts
is accepted; JSON serialization, JWE and nested tokens are not (hardening J10). The
header's `jku`, `x5u`, `x5c` and `jwk` are never used to find a key: keys come only from
the issuer's configured JWKS (RFC 8725 §3.10). A `crit` header is refused, since the edge
understands no extension (RFC 7515 §4.1.11). Claims are checked by type first: a
NumericDate is a JSON number, not a string that looks like one (hardening J6).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from kedge.edge.auth.jwk import b64url_decode
from kedge.edge.config import IssuerConfig

__all__ = [
    "ParsedToken",
    "TokenRejected",
    "audience_matches",
    "check_claims",
    "claim_strings",
    "parse_token",
    "peek_issuer",
]

_MAX_KID = 256
_TYP_OK = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})


class TokenRejected(ValueError):
    """The token is not acceptable; the message is one line, safe to show the client."""


@dataclass(frozen=True, slots=True)
class ParsedToken:
    alg: str
    kid: str | None
    claims: dict[str, object]
    signing_input: bytes  # ASCII of "header.payload", what the signature covers
    signature: bytes


def _no_duplicates(pairs: Sequence[tuple[str, object]]) -> dict[str, object]:
    # Two parsers that pick different copies of a duplicated member disagree on what the
    # token says (RFC 7515 §4: a JWS with duplicate header names must be rejected).
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise TokenRejected(f"duplicate member {key!r}")
        out[key] = value
    return out


def _json_object(segment: str, what: str) -> dict[str, object]:
    try:
        value = json.loads(b64url_decode(segment), object_pairs_hook=_no_duplicates)
    except TokenRejected:
        raise
    except (ValueError, RecursionError):
        # RecursionError: a few KiB of nested brackets exhaust the decoder's stack; that is
        # a malformed token (401), not an edge failure (500).
        raise TokenRejected(f"the {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise TokenRejected(f"the {what} is not a JSON object")
    return value


def parse_token(token: str) -> ParsedToken:
    """Split and decode a compact JWS; the signature is not checked here."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("not a compact JWS (three dot-separated parts)")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(header_b64, "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenRejected("the header has no alg")
    if "crit" in header:
        raise TokenRejected("the header has crit extensions the edge does not understand")
    if "enc" in header:
        raise TokenRejected("encrypted tokens (JWE) are not accepted")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYP_OK):
        raise TokenRejected(f"typ {typ!r} is not a JWT")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID):
        raise TokenRejected("kid is not a short string")
    claims = _json_object(payload_b64, "payload")
    try:
        signature = b64url_decode(signature_b64)
    except ValueError:
        raise TokenRejected("the signature is not base64url") from None
    return ParsedToken(alg, kid, claims, f"{header_b64}.{payload_b64}".encode("ascii"), signature)


def peek_issuer(token: str) -> tuple[str, object] | None:
    """(iss, aud) of a token without verifying anything, or None if it is no JWT: decides
    whether an `Authorization` token is addressed to the edge at all."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = _json_object(parts[1], "payload")
    except TokenRejected:
        return None
    iss = claims.get("iss")
    return (iss, claims.get("aud")) if isinstance(iss, str) else None


def _numeric(claims: dict[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"claim {name} is not a number")
    # Python's json reads 1e400 as inf and accepts NaN; an int may be too large for a
    # float. None of these is a NumericDate (RFC 7519 §2), and NaN compares false with
    # every time, so a NaN `exp` would never expire.
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise TokenRejected(f"claim {name} is not a finite number")
    return number


def audience_matches(aud: object, accepted: Sequence[str]) -> bool:
    """RFC 7519 §4.1.3: `aud` is one string or a list of strings; one must be ours."""
    if isinstance(aud, str):
        return aud in accepted
    if isinstance(aud, list):
        return any(isinstance(a, str) and a in accepted for a in aud)
    return False


def check_claims(claims: dict[str, object], issuer: IssuerConfig, now: float) -> float:
    """Check iss, aud, exp, nbf, iat and the lifetime cap; returns `exp`."""
    if claims.get("iss") != issuer.issuer:
        raise TokenRejected("wrong issuer")
    if not audience_matches(claims.get("aud"), issuer.audiences):
        raise TokenRejected("the token is not meant for this edge (aud)")
    exp = _numeric(claims, "exp")
    if exp is None:
        raise TokenRejected("the token has no exp")
    nbf = _numeric(claims, "nbf")
    iat = _numeric(claims, "iat")
    leeway = issuer.leeway
    if now > exp + leeway:
        raise TokenRejected("the token has expired")
    if nbf is not None and nbf > now + leeway:
        raise TokenRejected("the token is not valid yet (nbf)")
    if iat is not None and iat > now + leeway:
        raise TokenRejected("the token was issued in the future (iat)")
    if issuer.max_lifetime and exp - (iat if iat is not None else now) > issuer.max_lifetime:
        raise TokenRejected("the token lives longer than this edge allows")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenRejected("the token has no sub")
    return exp


def claim_strings(claims: dict[str, object], path: str) -> frozenset[str]:
    """The strings at a dotted claim path: a list of strings, or one string holding
    space-separated values (as OAuth `scope` does, RFC 8693 §4.2). A missing claim is
    empty; any other type is refused rather than guessed at (hardening J12)."""
    node: object = claims
    if path in claims:  # a top-level name with dots in it (e.g. a namespaced URL claim)
        node = claims[path]
    else:
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return frozenset()
            node = node[part]
    if isinstance(node, str):
        return frozenset(node.split())
    if isinstance(node, list) and all(isinstance(v, str) for v in node):
        return frozenset(v for v in node if isinstance(v, str))
    raise TokenRejected(f"claim {path} is neither a string nor a list of strings")
