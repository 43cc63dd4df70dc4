"""Adhoc rules (kEdge semantics): forward to a name no route lists, if a rule allows it.

Pure part: `match_adhoc` picks the rule and the port, `is_address_allowed` is the IP policy.
I/O part: `resolve_adhoc` resolves the name once and returns the IP to connect to.

As in kEdge, the first rule whose `dns_name` matches decides: a port it does not allow is
refused (403), there is no fall-through to later rules. The port, whether named by the
request or the rule's `default_port`, must be in `allowed_ports` or `allowed_port_ranges`
(kEdge checked the default port too), so a rule with neither allows nothing.

The edge must not become a way into itself or its node (SSRF): loopback, link-local
(169.254.169.254 is the cloud metadata service), unspecified and multicast addresses are
denied unless the rule allows them, including when they are spelled as IPv6 forms that
carry an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, RFC 4291 §2.5.5.2; NAT64
64:ff9b::/96, RFC 6052; deprecated IPv4-compatible ::a.b.c.d), which Python 3.11's
`ipaddress` predicates do not see through. `resolve_adhoc` returns an IP literal and the
caller connects to exactly that IP: resolving again at connect time would let a DNS
answer with a short TTL swap in a denied address after the check (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from kedge.core.errors import Forbidden, UpstreamConnectError
from kedge.edge.config import Address, AdhocRule

__all__ = [
    "AddressClass",
    "AdhocDecision",
    "IpAddress",
    "Resolve",
    "classify_address",
    "is_address_allowed",
    "is_name_match",
    "is_port_allowed",
    "match_adhoc",
    "parse_ip",
    "resolve_adhoc",
    "system_resolve",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class AdhocDecision:
    """The rule that matched, the name to resolve (after replacement) and the port."""

    rule: AdhocRule
    lookup_name: str
    port: int


def is_name_match(pattern: str, name: str) -> bool:
    """Exact, or "*.suffix": any name ending in ".suffix" (not the bare suffix)."""
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def is_port_allowed(port: int, rule: AdhocRule) -> bool:
    return port in rule.allowed_ports or any(
        r.low <= port <= r.high for r in rule.allowed_port_ranges
    )


def match_adhoc(rules: Sequence[AdhocRule], host: str, port: int | None) -> AdhocDecision | None:
    """The first rule matching `host` decides; None if no rule matches.

    Raises Forbidden if that rule does not allow the port, or if its `replace_pattern`
    is not in the name (the rule promises a rewrite it cannot make).
    """
    name = host.lower().removesuffix(".")
    for rule in rules:
        if not is_name_match(rule.dns_name, name):
            continue
        chosen = rule.default_port if port is None else port
        if not is_port_allowed(chosen, rule):
            raise Forbidden(f"adhoc: port {chosen} is not allowed for {rule.dns_name}")
        lookup_name = name
        if rule.replace_pattern:
            if rule.replace_pattern not in name:
                raise Forbidden(
                    f"adhoc: {name} does not contain {rule.replace_pattern!r} "
                    f"required by {rule.dns_name}"
                )
            lookup_name = name.replace(rule.replace_pattern, rule.replace_substitution)
            if not lookup_name:
                raise Forbidden(f"adhoc: {name} rewrites to an empty name for {rule.dns_name}")
        return AdhocDecision(rule, lookup_name, chosen)
    return None


class AddressClass(Enum):
    PUBLIC = "public"
    PRIVATE = "private"  # RFC 1918, RFC 6598 (100.64/10), RFC 4193 (fc00::/7), fec0::/10
    LOOPBACK = "loopback"  # 127/8, ::1, and the unspecified 0.0.0.0/8, :: (they reach this host)
    LINK_LOCAL = "link-local"  # 169.254/16, fe80::/10
    NEVER = "never"  # multicast, broadcast, 240/4: no TCP peer lives there


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 SIIT
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_RESERVED_V4 = ipaddress.IPv4Network("240.0.0.0/4")  # includes 255.255.255.255
_PRIVATE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
_PRIVATE_V6 = tuple(ipaddress.IPv6Network(n) for n in ("fc00::/7", "fec0::/10"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _IPV4_TRANSLATED or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify_address(ip: IpAddress) -> AddressClass:
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = _embedded_ipv4(ip)
        if v4 is not None:
            return classify_address(v4)
        if ip.is_loopback or ip.is_unspecified:
            return AddressClass.LOOPBACK
        if ip.is_link_local:
            return AddressClass.LINK_LOCAL
        if ip.is_multicast:
            return AddressClass.NEVER
        if any(ip in n for n in _PRIVATE_V6):
            return AddressClass.PRIVATE
        return AddressClass.PUBLIC
    if ip.is_loopback or ip in _THIS_NETWORK:
        return AddressClass.LOOPBACK
    if ip.is_link_local:
        return AddressClass.LINK_LOCAL
    if ip.is_multicast or ip in _RESERVED_V4:
        return AddressClass.NEVER
    if any(ip in n for n in _PRIVATE_V4):
        return AddressClass.PRIVATE
    return AddressClass.PUBLIC


def is_address_allowed(ip: IpAddress, rule: AdhocRule) -> bool:
    kind = classify_address(ip)
    if kind is AddressClass.PUBLIC:
        return True
    if kind is AddressClass.PRIVATE:
        return rule.allow_private
    if kind is AddressClass.LOOPBACK:
        return rule.allow_loopback
    if kind is AddressClass.LINK_LOCAL:
        return rule.allow_link_local
    return False


def parse_ip(text: str) -> IpAddress | None:
    """An IP literal ("[v6]" brackets allowed), or None if `text` is not one."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def system_resolve(name: str) -> list[str]:
    """The system resolver's addresses for `name` (getaddrinfo), in its order, unique."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_adhoc(
    decision: AdhocDecision, resolve: Resolve = system_resolve, *, lookup_timeout: float = 5.0
) -> Address:
    """The address to connect to: the first allowed IP of the name (IP literals as is).

    Raises UpstreamConnectError if the name does not resolve (within `lookup_timeout` seconds)
    and Forbidden if every address it resolves to is denied.
    """
    name = decision.lookup_name
    literal = parse_ip(name)
    if literal is not None:
        candidates = [literal]
    else:
        try:
            async with asyncio.timeout(lookup_timeout):
                found = await resolve(name)
        except OSError as exc:  # socket.gaierror, TimeoutError
            raise UpstreamConnectError(f"adhoc: cannot resolve {name}") from exc
        candidates = [ip for ip in map(parse_ip, found) if ip is not None]
        if not candidates:
            raise UpstreamConnectError(f"adhoc: cannot resolve {name}")
    for ip in candidates:
        if is_address_allowed(ip, decision.rule):
            return Address(str(ip), decision.port)
    raise Forbidden(f"adhoc: {name} resolves only to denied addresses")
