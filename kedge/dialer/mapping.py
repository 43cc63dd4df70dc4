"""The mapper: which edge (and which auth sources) a requested `host:port` goes to; pure.

Shared by winch and the dialer. Routes are tried in order and the first match wins; a
route whose `protocol` excludes the request is skipped. IP literals are never mapped
(kEdge: "kedge requires hostname"): credentials follow names, and an address says
nothing about which cluster it belongs to. A regexp route's edge URL is rebuilt from
the request's own labels, so the result is checked again: a host that is not a DNS
name after substitution is no match, never an edge somewhere else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from kedge.core.config_loading import InvalidValue, is_dns_name
from kedge.dialer.config import (
    DialerConfig,
    DirectRule,
    EdgeTls,
    MapRoute,
    RegexpRule,
    RouteProtocol,
    SuffixRule,
)

__all__ = [
    "EdgeTarget",
    "EdgeUrl",
    "Mapped",
    "Mapper",
    "is_ip_like",
    "normalize_host",
    "parse_edge_url",
]

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EDGE_URL_FIX = "write the edge as https://edge.cluster-a.test:8443 (scheme, host, optional port)"
# Ports tried by `is_mapped` for regexp routes, besides the numbers the pattern spells out.
_COMMON_PORTS = (80, 443, 8080, 8443)
_DIGITS = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class EdgeUrl:
    """A parsed edge URL; `host` and `port` may hold `${group}` placeholders (regexp routes)."""

    scheme: str  # "https" or "http"
    host: str  # lower case, no brackets around an IPv6 literal
    port: str  # digits, or a placeholder; the scheme's default port filled in
    placeholders: frozenset[str]


@dataclass(frozen=True, slots=True)
class EdgeTarget:
    """One edge to connect to: the pool key of winch's and the dialer's edge connections."""

    scheme: str
    host: str
    port: int
    tls: EdgeTls

    @property
    def key(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Mapped:
    """A mapped request: the route that matched, its edge, and the requested `host:port`."""

    route: MapRoute
    edge: EdgeTarget
    authority: str  # what the edge routes on (Host / :authority), e.g. "api.ns.internal:443"


def is_ip_like(host: str) -> bool:
    """An IP literal, or a name whose last label is all digits (`127.1`, `10.0.0.300`).

    No top-level domain is numeric (RFC 3696 §2), and resolvers read such names as
    addresses, so they are treated as addresses, never as names to map.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" not in name and not name.rsplit(".", 1)[-1].isdigit():
        # The common case, a name: an IPv4 literal ends in digits, an IPv6 one has a colon.
        # (Saves a ValueError per request: bench/RESULTS.md §10.)
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name.rsplit(".", 1)[-1].isdigit()
    return True


def normalize_host(host: str) -> str | None:
    """The mappable form of a requested host (lower case, no trailing dot), or None.

    None for IP literals (bracketed or not) and anything that is not a DNS name.
    """
    if not host.isascii():  # "\u212aube" would lower-case to "kube": names are ASCII (IDNA)
        return None
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or is_ip_like(name) or not is_dns_name(name) or name.endswith("."):
        return None
    return name


def parse_edge_url(url: str) -> EdgeUrl:
    """`http(s)://host[:port][/]`, no path, query, fragment or userinfo; raises InvalidValue."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise InvalidValue(f"{url!r} is not an https:// or http:// URL", _EDGE_URL_FIX)
    if rest.endswith("/"):
        rest = rest[:-1]
    for char, what in (("@", "user info"), ("/", "a path"), ("?", "a query"), ("#", "a fragment")):
        if char in rest:
            raise InvalidValue(f"edge URL {url!r} has {what}", _EDGE_URL_FIX)
    if rest.startswith("["):
        host, close, after = rest[1:].partition("]")
        if not close or (after and not after.startswith(":")):
            raise InvalidValue(f"edge URL {url!r} has a malformed IPv6 literal", _EDGE_URL_FIX)
        port = after[1:] if after else ""
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidValue(f"{host!r} is not an IPv6 address", _EDGE_URL_FIX) from None
    else:
        host, colon, port = rest.partition(":")
        if colon and not port:
            raise InvalidValue(f"edge URL {url!r} has an empty port", _EDGE_URL_FIX)
        host = host.lower()
        _check_host_template(url, host)
    if not port:
        port = str(_DEFAULT_PORTS[scheme])
    elif not _PLACEHOLDER.fullmatch(port):
        if not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
            raise InvalidValue(f"edge URL {url!r} has an invalid port", "use a port 1-65535")
        port = str(int(port))
    names = frozenset(_PLACEHOLDER.findall(host) + _PLACEHOLDER.findall(port))
    return EdgeUrl(scheme, host, port, names)


def _check_host_template(url: str, host: str) -> None:
    if not host:
        raise InvalidValue(f"edge URL {url!r} has no host", _EDGE_URL_FIX)
    if _PLACEHOLDER.search(host):
        # Each placeholder must sit inside DNS labels: filling it with a letter gives a name.
        probe = _PLACEHOLDER.sub("a", host)
        if "$" in probe or not is_dns_name(probe):
            raise InvalidValue(
                f"edge URL {url!r}: the host is not a DNS name around its ${{...}} placeholders",
                "write e.g. https://edge.${cluster}.test:8443",
            )
        return
    if "$" in host:
        raise InvalidValue(f"edge URL {url!r} has a malformed placeholder", "write ${name}")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if is_ip_like(host) or not is_dns_name(host):
            raise InvalidValue(
                f"edge URL host {host!r} is neither a DNS name nor an IP address", _EDGE_URL_FIX
            ) from None


@dataclass(frozen=True, slots=True)
class _Entry:
    route: MapRoute
    url: EdgeUrl
    tls: EdgeTls
    fixed: EdgeTarget | None  # the edge of a route without placeholders, built once
    probe_ports: tuple[int, ...]  # regexp routes: ports `is_mapped` tries


class Mapper:
    """First-match mapping over a config's routes; immutable after construction."""

    __slots__ = ("_entries",)

    def __init__(self, config: DialerConfig) -> None:
        entries: list[_Entry] = []
        for route in config.routes:
            url = parse_edge_url(route.edge_url)  # validated at load; cannot fail here
            tls = route.tls or config.edge_tls
            fixed = None
            if not url.placeholders:
                fixed = EdgeTarget(url.scheme, url.host, int(url.port), tls)
            entries.append(_Entry(route, url, tls, fixed, _probe_ports(route)))
        self._entries = tuple(entries)

    def map(self, host: str, port: int, *, grpc: bool = False) -> Mapped | None:
        """The first route that maps `host:port` for this kind of request, or None."""
        name = normalize_host(host)
        if name is None or not 1 <= port <= 65535:
            return None
        authority = f"{name}:{port}"
        for entry in self._entries:
            if not _admits(entry.route.protocol, grpc):
                continue
            edge = _match(entry, name, port, authority)
            if edge is not None:
                return Mapped(entry.route, edge, authority)
        return None

    def is_mapped(self, host: str) -> bool:
        """Some route could map `host` on some port (winch's Host allowlist, PAC).

        Exact for direct and suffix routes; a regexp route is tried with the common web
        ports and every number its pattern spells out, since a pattern cannot be asked
        "which ports" without trying them.
        """
        name = normalize_host(host)
        if name is None:
            return False
        for entry in self._entries:
            rule = entry.route.rule
            if isinstance(rule, RegexpRule):
                ports: tuple[int, ...] = entry.probe_ports
            elif isinstance(rule, DirectRule):
                ports = (rule.port or 443,)
            else:
                ports = rule.ports or (443,)
            if any(_match(entry, name, p, f"{name}:{p}") is not None for p in ports):
                return True
        return False


def _admits(protocol: RouteProtocol, grpc: bool) -> bool:
    if protocol is RouteProtocol.ANY:
        return True
    return protocol is (RouteProtocol.GRPC if grpc else RouteProtocol.HTTP)


def _match(entry: _Entry, host: str, port: int, authority: str) -> EdgeTarget | None:
    rule = entry.route.rule
    if isinstance(rule, DirectRule):
        hit = host == rule.host and (rule.port is None or rule.port == port)
        return entry.fixed if hit else None
    if isinstance(rule, SuffixRule):
        hit = host.endswith(rule.suffix) and (not rule.ports or port in rule.ports)
        return entry.fixed if hit else None
    m = rule.pattern.fullmatch(authority)
    if m is None:
        return None
    if entry.fixed is not None:
        return entry.fixed
    return _substituted(entry, {k: v or "" for k, v in m.groupdict().items()})


def _substituted(entry: _Entry, groups: dict[str, str]) -> EdgeTarget | None:
    """The edge URL with the request's groups filled in, or None if that is no clean edge."""

    def fill(template: str) -> str:
        return _PLACEHOLDER.sub(lambda m: groups.get(m.group(1), ""), template)

    host, port_text = fill(entry.url.host), fill(entry.url.port)
    # A group may capture anything its pattern allows ('.', ':', '@' ...): only a plain DNS
    # name may come out, or the request's own text would choose where credentials go.
    if normalize_host(host) != host:
        return None
    if not _DIGITS.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        return None
    return EdgeTarget(entry.url.scheme, host, int(port_text), entry.tls)


def _probe_ports(route: MapRoute) -> tuple[int, ...]:
    if not isinstance(route.rule, RegexpRule):
        return ()
    spelled = {int(d) for d in _DIGITS.findall(route.rule.pattern.pattern)}
    return tuple(sorted({*_COMMON_PORTS, *(p for p in spelled if 1 <= p <= 65535)}))
