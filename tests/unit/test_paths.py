"""Tests for kedge.core.http.paths: target splitting and the canonical routing path."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedge.core.errors import BadRequest
from kedge.core.http.paths import canonical_path, split_target

# --- split_target ------------------------------------------------------------------------

SPLIT_OK = [
    (b"/", ("/", "")),
    (b"/a/b", ("/a/b", "")),
    (b"/a?", ("/a", "")),
    (b"/a?x=1&y=2", ("/a", "x=1&y=2")),
    # P13: split once on the raw target; %3F stays in the path, later '?' stay in the query,
    # ';' in the query is forwarded as sent (Go CVE-2022-2880).
    (b"/a%3fb?x=1;y=2?z", ("/a%3fb", "x=1;y=2?z")),
    (b"/a;b=c/d", ("/a;b=c/d", "")),
    (b"/~user/:@!$&'()*+,=", ("/~user/:@!$&'()*+,=", "")),
    (b"/a?q=/path/:@", ("/a", "q=/path/:@")),
    (b"/a%zz", ("/a%zz", "")),  # escapes are checked by canonical_path, not here
]


@pytest.mark.parametrize(("target", "expected"), SPLIT_OK)
def test_split_target_accepts(target: bytes, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


SPLIT_BAD = [
    (b"", "absolute path"),
    (b"*", "absolute path"),  # P12: OPTIONS * is not an origin-form path
    (b"example.test:443", "absolute path"),  # P12: CONNECT authority-form
    (b"http://a.test/", "absolute path"),  # absolute-form has its own parser
    (b"a/b", "absolute path"),
    (b"/a#frag", "fragment"),  # P8
    (b"/a?q#frag", "fragment"),
    (b"/a b", "space"),  # P8
    (b"/a\x00b", "NUL"),  # P8
    (b"/a\tb", "control"),
    (b"/a\x7fb", "control"),
    (b"/a\r\nb", "control"),
    (b"/caf\xc3\xa9", "non-ASCII"),  # P8
    (b"/api\\..\\admin", "backslash"),  # P6
    (b'/a"b', "not allowed"),
    (b"/a<b>", "not allowed"),
    (b"/a?q=\x00", "NUL"),
    (b"/a?q=a b", "space"),
    (b"/a?q=\xff", "non-ASCII"),
]


@pytest.mark.parametrize(("target", "reason"), SPLIT_BAD)
def test_split_target_rejects(target: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        split_target(target)


_PCHAR = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%")
_TARGET_BYTES = st.binary(max_size=30) | st.lists(
    st.sampled_from([*sorted(_PCHAR), *b"/?#\\ \x00\x7f\xff"]), max_size=30
).map(bytes)


@given(_TARGET_BYTES)
def test_split_target_total(target: bytes) -> None:
    """Any bytes: BadRequest exactly when RFC 3986 says so, else a lossless split on '?'."""
    path_part, sep, query_part = target.partition(b"?")
    valid = (
        target[:1] == b"/"
        and set(path_part) <= _PCHAR | {ord("/")}
        and set(query_part) <= _PCHAR | {ord("/"), ord("?")}
    )
    try:
        path, query = split_target(target)
    except BadRequest as exc:
        assert not valid
        assert "\n" not in exc.reason
        return
    assert valid
    assert (path + ("?" + query if sep else "")).encode("ascii") == target


# --- canonical_path ----------------------------------------------------------------------

CANONICAL = [
    ("/", "/"),
    ("/a/b/c", "/a/b/c"),
    ("/app.js", "/app.js"),
    ("/a/", "/a/"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a/...", "/a/..."),
    ("/a/..b/c", "/a/..b/c"),
    # P1: dot segments are removed before routing
    ("/api/../admin/x", "/admin/x"),
    ("/a/b/../c", "/a/c"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a/./b", "/a/b"),
    ("/a/b/../..", "/"),
    # P2: encoded dots are unreserved: decoded first, then removed
    ("/api/%2e%2e/admin/x", "/admin/x"),
    ("/api/.%2e/admin", "/admin"),
    ("/api/%2E%2E/admin", "/admin"),
    ("/api/%2e/admin", "/api/admin"),
    # P4: decode once only; %25 is not unreserved so it stays escaped
    ("/%252e%252e%252f", "/%252e%252e%252f"),
    ("/api/%252e%252e/admin", "/api/%252e%252e/admin"),
    ("/%25", "/%25"),
    # P5: slashes merged, consistently with dot removal
    ("//admin/x", "/admin/x"),
    ("/api//x", "/api/x"),
    ("/./admin", "/admin"),
    ("/a//", "/a/"),
    ("//", "/"),
    ("/a//../b", "/b"),
    # P7: ';' is an ordinary segment character
    ("/api;x=1/../admin", "/admin"),
    ("/admin;/x", "/admin;/x"),
    ("/admin;", "/admin;"),
    # P9: case of the path is kept; only escape hex is upper-cased (RFC 3986 §6.2.2.1)
    ("/ADMIN/x", "/ADMIN/x"),
    ("/a%3fb", "/a%3Fb"),  # P13: an encoded '?' stays encoded and in the path
    ("/a%20b", "/a%20b"),
    ("/a%2a", "/a%2A"),
    # unreserved escapes decoded (RFC 3986 §6.2.2.2)
    ("/%41%62%7e%2d%5f%30", "/Ab~-_0"),
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/%e2%82%ac", "/%E2%82%AC"),
]


@pytest.mark.parametrize(("raw", "expected"), CANONICAL)
def test_canonical_path(raw: str, expected: str) -> None:
    assert canonical_path(raw) == expected


def test_canonical_path_fast_path_returns_same_object() -> None:
    clean = "/svc/v1/items/42/app.js"
    assert canonical_path(clean) is clean


CANONICAL_BAD = [
    ("", "start with '/'"),
    ("a/b", "start with '/'"),
    ("*", "start with '/'"),
    ("/..", "above the root"),  # RFC 3986 would drop it; we refuse
    ("/a/../..", "above the root"),
    ("/../admin", "above the root"),
    ("/%2e%2e/admin", "above the root"),
    # P3: encoded slash refused, in either case
    ("/api/..%2fadmin/x", "encoded slash"),
    ("/api/..%2Fadmin/x", "encoded slash"),
    ("/%252e%252e%2f", "encoded slash"),
    # P6: backslash, raw or encoded
    ("/api\\..\\admin", "backslash"),
    ("/api/..%5cadmin", "encoded backslash"),
    ("/api/..%5Cadmin", "encoded backslash"),
    # P8: NUL/CTL/space/'#', non-ASCII, encoded controls, overlong UTF-8
    ("/a\x00", "NUL"),
    ("/a\x01", "control"),
    ("/a b", "space"),
    ("/a#b", "fragment"),
    ("/a?b", "'?'"),
    ("/café", "non-ASCII"),
    ("/a%00", "encoded control"),
    ("/a%0d%0a", "encoded control"),
    ("/a%7f", "encoded control"),
    ("/api/%c0%ae%c0%ae/admin", "UTF-8"),
    ("/%c0%af", "UTF-8"),
    ("/%ff", "UTF-8"),
    ("/%ed%a0%80", "UTF-8"),  # a UTF-16 surrogate
    # invalid or truncated escapes
    ("/a%", "percent-escape"),
    ("/a%2", "percent-escape"),
    ("/a%zz", "percent-escape"),
    ("/a%g0", "percent-escape"),
    ("/a%%41", "percent-escape"),
    ("/a%٣٣", "non-ASCII"),  # Arabic-Indic digits are not hex
]


@pytest.mark.parametrize(("raw", "reason"), CANONICAL_BAD)
def test_canonical_path_rejects(raw: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(reason)):
        canonical_path(raw)


# --- properties --------------------------------------------------------------------------

_PLAIN = ["a", "b", "Z", "0", "-", "_", "~", ";", "=", ":", "@", "!", ".", ".."]
_ESCAPED = ["%2e", "%2E", "%41", "%7e", "%25", "%3f", "%C3%A9", "%20", "%2a"]
_SEGMENT_CHARS = st.sampled_from([*_PLAIN, *_ESCAPED])
_SEGMENT = st.lists(_SEGMENT_CHARS, max_size=4).map("".join)
_PATHS = st.lists(_SEGMENT, min_size=1, max_size=6).map(lambda s: "/" + "/".join(s))


@given(_PATHS)
def test_canonical_path_properties(raw: str) -> None:
    try:
        canonical = canonical_path(raw)
    except BadRequest as exc:
        assert "above the root" in exc.reason  # the only way these generated paths fail
        return
    assert canonical.startswith("/")
    assert canonical_path(canonical) == canonical  # idempotent
    assert "//" not in canonical
    assert "/./" not in canonical and "/../" not in canonical
    assert not canonical.endswith("/.") and not canonical.endswith("/..")
    for escape in re.findall(r"%(..)", canonical):
        assert escape == escape.upper()
        assert chr(int(escape, 16)) not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        assert chr(int(escape, 16)) not in "0123456789-._~"


@given(_PATHS, st.data())
def test_canonical_path_ignores_escaping_of_unreserved(raw: str, data: st.DataObject) -> None:
    """Escaping an unreserved character, or changing escape hex case, never changes routing."""
    chars = list(raw)
    for i, char in enumerate(chars):
        if char.isalnum() and char.isascii() and data.draw(st.booleans()):
            chars[i] = f"%{ord(char):02x}" if data.draw(st.booleans()) else f"%{ord(char):02X}"
    variant = "".join(chars)
    # Escapes already in `raw` may have had a hex digit re-escaped ("%2e" -> "%%32e"): skip.
    if re.search(r"%(?![0-9A-Fa-f]{2})", variant):
        return
    try:
        expected = canonical_path(raw)
    except BadRequest:
        with pytest.raises(BadRequest):
            canonical_path(variant)
        return
    assert canonical_path(variant) == expected


@given(st.text(max_size=30))
def test_canonical_path_total(raw: str) -> None:
    """Arbitrary text never raises anything but BadRequest, and never leaves traversal."""
    try:
        canonical = canonical_path(raw)
    except BadRequest:
        return
    assert canonical.startswith("/") and "//" not in canonical
    assert ".." not in canonical.split("/") and "." not in canonical.split("/")


@given(st.lists(st.sampled_from(["api", "..", ".", "", "%2e%2e", "%2e", "x"]), max_size=8))
def test_canonical_path_never_climbs_out_of_a_prefix_silently(segments: list[str]) -> None:
    """A path under /api/ that canonicalises outside /api must have had a '..' step."""
    raw = "/api/" + "/".join(segments)
    try:
        canonical = canonical_path(raw)
    except BadRequest:
        return
    if not (canonical == "/api" or canonical.startswith("/api/")):
        assert any(s in ("..", "%2e%2e") for s in segments)
