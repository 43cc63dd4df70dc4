"""Request-target splitting and the one canonical path used for routing and authorisation.

Hardening rule (reference/hardening.md §2.3): compute ONE canonical path and use it for both
route matching and permission checks, and reject what cannot be canonicalised. The split into
path and query happens exactly once, on the raw target (P13), so a `%3F` in the path never
starts a query and `;` never ends a path (P7).

Canonicalisation (RFC 3986 §6.2.2): percent-decode only *unreserved* characters (§6.2.2.2),
upper-case the hex of every other escape (§6.2.2.1), remove dot segments (§5.2.4; `..` above
the root is refused rather than silently dropped), merge repeated slashes (as nginx does). An
encoded `/` or `\\` is refused instead of decoded, because backends disagree on whether it is a
separator (P3, P6). Decoding happens once: `%252e` stays `%252e` (P4).
"""

from __future__ import annotations

import re

from kedge.core.errors import BadRequest

__all__ = ["canonical_path", "split_target"]

# RFC 3986 §2.3 unreserved, §2.2 sub-delims, and §3.3 pchar = unreserved / pct-encoded /
# sub-delims / ":" / "@". Paths also contain "/"; "%" starts an escape checked separately.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = b"!$&'()*+,;="
_PATH_BYTES = _UNRESERVED + _SUB_DELIMS + b":@/%"
# RFC 3986 §3.4: query = *( pchar / "/" / "?" ).
_QUERY_BYTES = _PATH_BYTES + b"?"
# Hex pairs that decode to an unreserved character; every other valid pair stays escaped.
_UNRESERVED_CHARS = frozenset(_UNRESERVED.decode("ascii"))
_HEX = frozenset("0123456789abcdefABCDEF")

# Fast-path shapes, compiled once (immutable). A path made of non-empty segments that do not
# start with "." and contain no "%" is already canonical: no escape to normalise, no dot
# segment, no "//". Most real paths (including "/app.js") are like this.
_SEGMENT_START = r"A-Za-z0-9\-_~!$&'()*+,;=:@"  # pchar without "%" and "."
_SEGMENT_REST = _SEGMENT_START + "."
_CLEAN_PATH = re.compile(rf"(?:/[{_SEGMENT_START}][{_SEGMENT_REST}]*)+/?|/")
# A whole valid origin-form target; only an invalid one takes the slower, explaining path.
_VALID_TARGET = re.compile(rf"/[{_SEGMENT_REST}%/]*(?:\?[{_SEGMENT_REST}%/?]*)?".encode())


def split_target(target: bytes) -> tuple[str, str]:
    """Split an origin-form request-target (RFC 9112 §3.2.1) into (raw path, raw query).

    The split is on the first "?" only; the query is returned without its "?" and is meant to
    be forwarded unchanged. Raises BadRequest for a target that is not `/path[?query]` made of
    RFC 3986 characters (a fragment `#`, space, CTL and non-ASCII bytes included).
    """
    if _VALID_TARGET.fullmatch(target) is not None:
        path, _, query = target.partition(b"?")
        return path.decode("ascii"), query.decode("ascii")
    # Invalid: find the reason (this path is only taken for a target that will be refused).
    if target[:1] != b"/":
        raise BadRequest("request-target must be an absolute path starting with '/'")
    path, sep, query = target.partition(b"?")
    # bytes.translate(None, allowed) deletes every allowed byte in C: what is left is bad.
    if path.translate(None, _PATH_BYTES):
        raise BadRequest(_describe_bad_bytes(path.translate(None, _PATH_BYTES), "path"))
    if sep and query.translate(None, _QUERY_BYTES):
        raise BadRequest(_describe_bad_bytes(query.translate(None, _QUERY_BYTES), "query"))
    return path.decode("ascii"), query.decode("ascii")


def canonical_path(raw_path: str) -> str:
    """Return the canonical form of an absolute path; raise BadRequest if it has none.

    The result starts with "/", contains no "//", no "." or ".." segment, no escape of an
    unreserved character, and only upper-case escapes. It is a fixed point:
    `canonical_path(canonical_path(p)) == canonical_path(p)`. Matching is case-sensitive
    (P9): only the hex digits of escapes are case-normalised.
    """
    if _CLEAN_PATH.fullmatch(raw_path) is not None:
        return raw_path
    if raw_path[:1] != "/":
        raise BadRequest("path must start with '/'")
    try:
        raw = raw_path.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest("non-ASCII character in path") from None
    bad = raw.translate(None, _PATH_BYTES)
    if bad:
        raise BadRequest(_describe_bad_bytes(bad, "path"))
    # Nothing to decode, and no dot segment can exist without "/.", no empty one without "//".
    if b"%" not in raw and b"/." not in raw and b"//" not in raw:
        return raw_path
    decoded = _normalize_escapes(raw_path) if b"%" in raw else raw_path
    if "/." not in decoded and "//" not in decoded:
        return decoded
    return _remove_dot_segments(decoded)


def _normalize_escapes(path: str) -> str:
    """Decode escapes of unreserved characters, upper-case the rest, refuse dangerous ones."""
    pieces = path.split("%")
    out = [pieces[0]]
    has_non_ascii = False
    for piece in pieces[1:]:
        pair = piece[:2]
        if len(pair) < 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            raise BadRequest("invalid or truncated percent-escape in path")
        value = int(pair, 16)
        char = chr(value)
        if char in _UNRESERVED_CHARS:
            out.append(char)
        elif value == 0x2F:
            raise BadRequest("encoded slash (%2F) in path")
        elif value == 0x5C:
            raise BadRequest("encoded backslash (%5C) in path")
        elif value < 0x20 or value == 0x7F:
            raise BadRequest("encoded control character in path")
        else:
            has_non_ascii = has_non_ascii or value >= 0x80
            out.append("%" + pair.upper())
        out.append(piece[2:])
    result = "".join(out)
    if has_non_ascii:
        _check_utf8(result)
    return result


def _check_utf8(path: str) -> None:
    """Refuse escaped bytes that are not strict UTF-8, e.g. the overlong `%C0%AE` for "." (P8).

    Some decoders accept overlong forms and turn them into "." or "/", reopening traversal.
    """
    raw = bytearray()
    pieces = path.split("%")
    raw += pieces[0].encode("ascii")
    for piece in pieces[1:]:
        raw.append(int(piece[:2], 16))
        raw += piece[2:].encode("ascii")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("percent-encoded bytes in path are not valid UTF-8") from None


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path, with empty segments merged (`//` -> `/`)."""
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if not out:
                raise BadRequest("path climbs above the root with '..'")
            out.pop()
        else:
            out.append(segment)
    # A trailing "/", "/." or "/.." leaves the path ending in "/" (RFC 3986 §5.2.4 step 2).
    last = segments[-1]
    trailing = "/" if out and (last == "" or last == "." or last == "..") else ""
    return "/" + "/".join(out) + trailing


def _describe_bad_bytes(bad: bytes, where: str) -> str:
    """A one-line reason naming the first offending byte class (never echoing raw bytes)."""
    first = bad[0]
    if first == 0x23:
        return f"fragment ('#') in request {where}"
    if first == 0x5C:
        return f"backslash in request {where}"
    if first == 0x3F:
        return f"'?' in {where}"
    if first == 0x00:
        return f"NUL byte in request {where}"
    if first < 0x20 or first == 0x7F:
        return f"control character in request {where}"
    if first == 0x20:
        return f"space in request {where}"
    if first >= 0x80:
        return f"non-ASCII byte in request {where}"
    return f"character {chr(first)!r} not allowed in request {where}"
