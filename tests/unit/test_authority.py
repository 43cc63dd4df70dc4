"""Tests for kedge.core.http.authority: strict host[:port] and absolute-form parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedge.core.errors import BadRequest
from kedge.core.http.authority import parse_absolute_form, parse_authority

AUTHORITY_OK = [
    ("api.example.test", 80, ("api.example.test", 80)),
    ("api.example.test:8080", 80, ("api.example.test", 8080)),
    ("api.example.test", 443, ("api.example.test", 443)),
    ("api.example.test:", 443, ("api.example.test", 443)),  # empty port = default (§3.2.3)
    ("api.example.test:00080", 80, ("api.example.test", 80)),
    ("a:1", 80, ("a", 1)),
    ("a:65535", 80, ("a", 65535)),
    # A3: case and one trailing dot are normalised before any vhost match
    ("API.Example.TEST", 80, ("api.example.test", 80)),
    ("evil.com.", 80, ("evil.com", 80)),
    ("Evil.Com.:8443", 80, ("evil.com", 8443)),
    ("localhost", 80, ("localhost", 80)),
    ("xn--bcher-kva.example.test", 80, ("xn--bcher-kva.example.test", 80)),  # punycode IDN
    ("svc-1.ns-2.svc.cluster.internal", 80, ("svc-1.ns-2.svc.cluster.internal", 80)),
    ("127.0.0.1", 80, ("127.0.0.1", 80)),
    ("10.0.0.255:9000", 80, ("10.0.0.255", 9000)),
    ("0.0.0.0", 80, ("0.0.0.0", 80)),
    ("1a.example.test", 80, ("1a.example.test", 80)),
    ("example.123a", 80, ("example.123a", 80)),  # last label not all digits: a name
    # A3: IPv6 literals come back without brackets, in RFC 5952 form
    ("[::1]", 80, ("::1", 80)),
    ("[::1]:8080", 80, ("::1", 8080)),
    ("[::1]:", 443, ("::1", 443)),
    ("[2001:DB8:0:0::1]", 443, ("2001:db8::1", 443)),
    ("[::ffff:192.0.2.1]", 80, ("::ffff:c000:201", 80)),
]


@pytest.mark.parametrize(("value", "default", "expected"), AUTHORITY_OK)
def test_parse_authority(value: str, default: int, expected: tuple[str, int]) -> None:
    assert parse_authority(value, default) == expected


AUTHORITY_BAD = [
    # A3
    ("a@evil/x", "userinfo"),
    ("user:pass@api.example.test", "userinfo"),
    ("@api.example.test", "userinfo"),
    ("evil:80:80", "more than one ':'"),
    ("evil.com/x", "path characters"),
    ("evil.com?x", "path characters"),
    ("evil.com#x", "path characters"),
    ("evil.com\\x", "path characters"),
    ("bücher.example.test", "non-ASCII"),  # IDN must arrive as punycode
    ("", "empty authority"),
    (":80", "empty host"),
    (".", "empty host"),
    ("evil.com..", "empty label"),
    ("a..b", "empty label"),
    (".a", "empty label"),
    ("under_score.test", "invalid character"),
    ("sp ace.test", "invalid character"),
    ("tab\t.test", "invalid character"),
    ("crlf\r\n.test", "invalid character"),
    ("nul\x00.test", "invalid character"),
    ("a*.test", "invalid character"),
    ("-lead.test", "'-'"),
    ("trail-.test", "'-'"),
    ("a" * 64 + ".test", "63"),
    (".".join(["a" * 50] * 5), "253"),
    ("api.example.test:0", "1..65535"),
    ("api.example.test:65536", "1..65535"),
    ("api.example.test:123456", "1..65535"),
    ("api.example.test:-1", "1..65535"),
    ("api.example.test:+80", "1..65535"),
    ("api.example.test:8o", "1..65535"),
    ("api.example.test: 80", "1..65535"),
    ("api.example.test:²", "non-ASCII"),
    # numeric hosts that resolvers would read as IPv4 in another notation
    ("127.1", "IPv4"),
    ("2130706433", "IPv4"),
    ("0x7f.0.0.1", "IPv4"),
    ("a.0x7f", "IPv4"),
    ("127.000.000.001", "IPv4"),
    ("010.0.0.1", "IPv4"),
    ("256.0.0.1", "IPv4"),
    ("1.2.3.4.5", "IPv4"),
    ("example.123", "IPv4"),
    # IPv6 literal problems
    ("::1", "more than one ':'"),
    ("[::1", "unterminated"),
    ("[]", "IPv6"),
    ("[::1]x", "after IPv6"),
    ("[::1]:99999", "1..65535"),
    ("[fe80::1%25eth0]", "IPv6"),  # no zone ids in HTTP
    ("[fe80::1%eth0]", "IPv6"),
    ("[v1.fe]", "IPv6"),  # IPvFuture
    ("[1.2.3.4]", "IPv6"),
    ("[::g]", "IPv6"),
    ("[1:2:3:4:5:6:7:8:9]", "IPv6"),
]


@pytest.mark.parametrize(("value", "reason"), AUTHORITY_BAD)
def test_parse_authority_rejects(value: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_authority(value, 80)
    assert reason in info.value.reason
    assert "\n" not in info.value.reason


ABSOLUTE_OK = [
    (b"http://api.example.test/a?b=1", ("http", "api.example.test", "/a?b=1")),
    (b"HTTP://api.example.test/a", ("http", "api.example.test", "/a")),
    (b"https://API.example.test:8443/x/y", ("https", "API.example.test:8443", "/x/y")),
    (b"http://api.example.test", ("http", "api.example.test", "/")),  # empty path -> "/"
    (b"http://api.example.test?q=1", ("http", "api.example.test", "/?q=1")),
    (b"http://[::1]:8080/p", ("http", "[::1]:8080", "/p")),
    (b"http://a.test/x@y:z", ("http", "a.test", "/x@y:z")),  # '@' in the path is fine
    # P11: the target's authority is what the caller compares with Host
    (b"http://other-host.test/admin", ("http", "other-host.test", "/admin")),
]


@pytest.mark.parametrize(("target", "expected"), ABSOLUTE_OK)
def test_parse_absolute_form(target: bytes, expected: tuple[str, str, str]) -> None:
    assert parse_absolute_form(target) == expected


ABSOLUTE_BAD = [
    (b"ftp://a.test/", "http:// or https://"),
    (b"ws://a.test/", "http:// or https://"),
    (b"http:/a.test/", "http:// or https://"),
    (b"/a", "http:// or https://"),
    (b"*", "http:// or https://"),  # P12
    (b"a.test:443", "http:// or https://"),  # P12: authority-form belongs to CONNECT
    (b"http://", "empty authority"),
    (b"http:///a", "empty authority"),
    (b"http://user@a.test/", "userinfo"),
    (b"http://a.test@evil.test/", "userinfo"),
    (b"http://a.test:80:80/", "more than one ':'"),
    (b"http://a.test/#frag", "fragment"),
    (b"http://a.test#frag", "fragment"),
    (b"http://a.test/a b", "space"),
    (b"http://a.test/\xff", "non-ASCII"),
    (b"http://a.test/a\\b", "backslash"),
    (b"http://a_b.test/", "invalid character"),
]


@pytest.mark.parametrize(("target", "reason"), ABSOLUTE_BAD)
def test_parse_absolute_form_rejects(target: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_absolute_form(target)
    assert reason in info.value.reason


_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_NAME = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)


@given(_NAME, st.booleans(), st.one_of(st.none(), st.integers(1, 65535)))
def test_parse_authority_normalises_names(name: str, dot: bool, port: int | None) -> None:
    last = name.rsplit(".", 1)[-1].lower()
    if last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])):
        return  # a numeric last label (decimal, or 0x-hex as WHATWG reads it) is an IPv4 question
    value = name + ("." if dot else "") + (f":{port}" if port is not None else "")
    host, parsed_port = parse_authority(value, 80)
    assert host == name.lower()
    assert parsed_port == (port if port is not None else 80)


@given(st.text(max_size=24))
def test_parse_authority_total_and_idempotent(value: str) -> None:
    """Arbitrary text: BadRequest or a normalised result that parses to itself."""
    try:
        host, port = parse_authority(value, 80)
    except BadRequest:
        return
    assert 1 <= port <= 65535
    assert host == host.lower() and not host.endswith(".") and host
    rendered = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert parse_authority(rendered, 1) == (host, port)


@given(st.binary(max_size=40))
def test_parse_absolute_form_total(target: bytes) -> None:
    try:
        scheme, authority, rest = parse_absolute_form(target)
    except BadRequest:
        return
    assert scheme in ("http", "https")
    assert rest.startswith("/")
    parse_authority(authority, 80)
