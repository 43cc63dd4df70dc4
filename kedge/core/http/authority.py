"""Strict parsing of `host[:port]` authorities (Host, :authority, absolute-form targets).

Hardening rule A3 (reference/hardening.md §2.4): parse the authority strictly as RFC 3986
§3.2.2 host plus §3.2.3 port, and normalise case and one trailing dot *before* any vhost match,
so `Host: API.Example.test.` and `Host: api.example.test` route alike while `a@evil/x` or
`evil:80:80` are refused. Userinfo is never accepted (RFC 9110 §4.2.4 forbids it in http(s)
URIs). Host names are restricted to the DNS LDH rule (RFC 1123 §2.1): letters, digits and
hyphens in dot-separated labels; `_` is refused because some backends fold it into `-`.
A name whose last label is numeric (`127.1`, `0x7f.1`, `2130706433`) is what resolvers and
the WHATWG URL parser treat as an IPv4 address, so it must be a plain dotted quad.
"""

from __future__ import annotations

import ipaddress

from kedge.core.errors import BadRequest
from kedge.core.http.paths import split_target

__all__ = ["names_port", "parse_absolute_form", "parse_authority"]

_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789abcdef")
_IPV6_CHARS = frozenset("0123456789abcdef:.")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_NAME = 253  # RFC 1035 §2.3.4, without the trailing dot
_MAX_LABEL = 63


def names_port(authority: bytes) -> bool:
    """Whether a validated authority names a port: `h:80` yes; `h`, `h:`, `[::1]` no."""
    colon = authority.rfind(b":")
    return colon > authority.rfind(b"]") and colon < len(authority) - 1


def parse_authority(value: str, default_port: int) -> tuple[str, int]:
    """Parse `host[:port]` into (lower-case host, port); IPv6 comes back without brackets.

    Raises BadRequest for userinfo, path characters, an empty or malformed host, several
    ports, a non-numeric port or one outside 1..65535. An empty port (`host:`) is the
    default port (RFC 3986 §3.2.3).
    """
    if not value:
        raise BadRequest("empty authority")
    if not value.isascii():
        raise BadRequest("non-ASCII authority (send IDNs in punycode)")
    if "@" in value:
        raise BadRequest("userinfo ('@') is not allowed in the authority")
    if value[0] == "[":
        end = value.find("]")
        if end < 0:
            raise BadRequest("unterminated IPv6 literal in authority")
        host = _parse_ipv6(value[1:end])
        rest = value[end + 1 :]
        if rest and rest[0] != ":":
            raise BadRequest("unexpected characters after IPv6 literal in authority")
        port = _parse_port(rest[1:], default_port) if rest else default_port
        return host, port
    host, colon, port_text = value.partition(":")
    if colon and ":" in port_text:
        raise BadRequest("more than one ':' in authority (IPv6 needs brackets)")
    port = _parse_port(port_text, default_port) if colon else default_port
    return _parse_reg_name(host), port


def parse_absolute_form(target: bytes) -> tuple[str, str, str]:
    """Split an absolute-form target (RFC 9112 §3.2.2) into (scheme, authority, path_and_query).

    Only `http` and `https` are accepted (case-insensitive; returned lower-case). The
    authority is returned as sent, after checking it with `parse_authority`, so the caller
    can compare it with Host (P11). An empty path becomes "/" (RFC 9112 §3.2.2); the path
    and query are checked like an origin-form target and otherwise returned unchanged.
    """
    if not target.isascii():
        raise BadRequest("non-ASCII byte in request-target")
    text = target.decode("ascii")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise BadRequest("absolute-form target must start with http:// or https://")
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, path_and_query = rest[:end], rest[end:]
    if "#" in path_and_query:
        raise BadRequest("fragment ('#') in request-target")
    parse_authority(authority, _DEFAULT_PORTS[scheme])
    if not path_and_query.startswith("/"):
        path_and_query = "/" + path_and_query  # "" -> "/", "?q" -> "/?q"
    split_target(path_and_query.encode("ascii"))
    return scheme, authority, path_and_query


def _parse_port(text: str, default_port: int) -> int:
    if not text:
        return default_port
    # str.isdigit() also accepts e.g. superscript digits; check ASCII digits explicitly.
    if len(text) > 5 or not _DIGITS.issuperset(text):
        raise BadRequest("port in authority is not a number in 1..65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise BadRequest("port in authority is not a number in 1..65535")
    return port


def _parse_ipv6(text: str) -> str:
    text = text.lower()
    # No zone ids (RFC 6874 is not for HTTP, RFC 9110 §4.2) and no IPvFuture literals.
    if not text or not _IPV6_CHARS.issuperset(text):
        raise BadRequest("invalid IPv6 literal in authority")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise BadRequest("invalid IPv6 literal in authority") from None
    return address.compressed


def _parse_reg_name(host: str) -> str:
    if not host:
        raise BadRequest("empty host in authority")
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]  # the absolute form of a DNS name names the same host
    if not host:
        raise BadRequest("empty host in authority")
    if not _LDH.issuperset(host):
        if "/" in host or "?" in host or "#" in host or "\\" in host:
            raise BadRequest("path characters in authority")
        raise BadRequest("invalid character in host name")
    if len(host) > _MAX_NAME:
        raise BadRequest("host name longer than 253 characters")
    labels = host.split(".")
    for label in labels:
        if not label:
            raise BadRequest("empty label in host name")
        if len(label) > _MAX_LABEL:
            raise BadRequest("host name label longer than 63 characters")
        if label[0] == "-" or label[-1] == "-":
            raise BadRequest("host name label starts or ends with '-'")
    last = labels[-1]
    if _DIGITS.issuperset(last) or (last.startswith("0x") and _HEX_DIGITS.issuperset(last[2:])):
        _check_dotted_quad(labels)
    return host


def _check_dotted_quad(labels: list[str]) -> None:
    """RFC 3986 §3.2.2 IPv4address: four dec-octets, no leading zeros (which mean octal)."""
    if len(labels) != 4:
        raise BadRequest("invalid IPv4 address in authority")
    for label in labels:
        if (
            not _DIGITS.issuperset(label)
            or len(label) > 3
            or (len(label) > 1 and label[0] == "0")
            or int(label) > 255
        ):
            raise BadRequest("invalid IPv4 address in authority")
