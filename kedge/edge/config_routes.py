"""Parsing of the route and adhoc-rule sections of the edge config (see config_parser).

Routes: host patterns, path rules, header matches, proxy mode and gRPC method globs, checked
for the forms the route table can compile, with a named key path and a fix for every
refusal. Adhoc rules: kEdge's DNS-name patterns, ports and name replacement.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from kedge.core.config_loading import (
    InvalidValue,
    Node,
    claim_name,
    closest,
    dataclass_keys,
    header_name,
    node_list,
)
from kedge.core.errors import BadRequest
from kedge.core.http.paths import canonical_path
from kedge.edge.config import (
    AdhocRule,
    BackendConfig,
    HeaderMatch,
    PortRange,
    ProxyMode,
    RouteConfig,
    RouteMatch,
)
from kedge.edge.config_auth import parse_route_auth
from kedge.edge.routing.rules import parse_grpc_method

__all__ = ["parse_adhoc_rule", "parse_routes"]

_PATH_CHARS = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")  # RFC 3986 §3.3 pchar
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 §2.1


def parse_routes(node: Node | None, backends: Iterable[BackendConfig]) -> tuple[RouteConfig, ...]:
    known = [b.name for b in backends]
    seen: dict[str, str] = {}
    out: list[RouteConfig] = []
    for i, item in enumerate(node_list(node)):
        f = item.as_mapping(("name", "backend", "match", "max_request_body_bytes", "auth"))
        name = f.get_str("name", f"routes[{i}]")
        claim_name(seen, name, f.get("name") or item, "route")
        backend_node = f.require("backend", "name the backend this route sends requests to")
        backend = backend_node.as_str()
        if backend not in known:
            near = closest(backend, known)
            hint = f"did you mean {near[0]!r}? " if near else ""
            fix = (
                f"{hint}known backends: {', '.join(known)}"
                if known
                else f"define a backend named {backend!r} under `backends:`"
            )
            raise backend_node.error(f"unknown backend {backend!r}", fix)
        base = RouteConfig(name, backend)
        limit = f.get("max_request_body_bytes")
        out.append(
            RouteConfig(
                name=name,
                backend=backend,
                match=_match(n) if (n := f.get("match")) else base.match,
                max_request_body_bytes=limit.as_size() if limit else base.max_request_body_bytes,
                auth=parse_route_auth(n) if (n := f.get("auth")) else None,
            )
        )
    return tuple(out)


def _match(node: Node) -> RouteMatch:
    f = node.as_mapping(dataclass_keys(RouteMatch))
    d = RouteMatch()
    match = RouteMatch(
        host=_host_pattern(n) if (n := f.get("host")) else d.host,
        port=n.as_port() if (n := f.get("port")) else d.port,
        paths=tuple(_path(p) for p in n.as_list()) if (n := f.get("paths")) else d.paths,
        headers=_headers(n) if (n := f.get("headers")) else d.headers,
        proxy_mode=f.get_enum("proxy_mode", ProxyMode, d.proxy_mode),
        grpc_methods=_grpc_methods(n) if (n := f.get("grpc_methods")) else d.grpc_methods,
    )
    if match.proxy_mode is ProxyMode.CONNECT:
        # A CONNECT has no path, and its header fields are the proxy's, not the service's
        # (RFC 9110 §9.3.6): such a matcher could never say what the tunnel carries.
        for key in ("paths", "headers", "grpc_methods"):
            if key in f:
                raise node.child(key).error(
                    f"a `proxy_mode: connect` route cannot match on {key}",
                    "match CONNECT tunnels on host and port only",
                )
    return match


def _host_pattern(node: Node) -> str:
    """An exact host or "*.suffix", as `kedge.core.http.authority` normalises request hosts.

    Lower-cased, one trailing dot removed; labels are letters, digits and inner hyphens
    (RFC 1123), IPv6 literals are compressed. A pattern no request host can have is an
    error here rather than a route that silently never matches.
    """
    text = node.as_str()
    host = text.lower().removesuffix(".")
    body = host.removeprefix("*.")
    if host == "*":
        raise node.error("'*' alone is not a host pattern", "remove the key to match every host")
    if "*" in body:
        raise node.error(
            f"{text!r}: '*' is only allowed as a whole first label",
            "write '*.example.test' (matches a.example.test and a.b.example.test)",
        )
    if ":" in body:
        try:
            return ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]")).compressed
        except ValueError:
            raise node.error(
                f"{text!r} contains a port or ':'", "give the host alone and the port as `port:`"
            ) from None
    labels = body.split(".")
    if len(body) > 253 or not all(labels):
        raise node.error(f"{text!r} has an empty label or is too long", "e.g. demo.local")
    for label in labels:
        if not _HOST_LABEL.fullmatch(label):
            raise node.error(
                f"{text!r}: label {label!r} cannot appear in a request's host",
                "use letters, digits and inner '-' (at most 63 per label; no '_')",
            )
    return host


def _path(node: Node) -> str:
    """ "/exact", "/prefix/*" or "/*", already in the canonical form requests are compared in."""
    path = node.as_str()
    fix = "write '/exact', '/prefix/*' or '/*'"
    if "?" in path or "#" in path:
        raise node.error(
            f"{path!r} contains a query or fragment", "match the path only, without '?' or '#'"
        )
    if not _PATH_CHARS.fullmatch(path):
        raise node.error(
            f"{path!r} must start with '/' and use only URI path characters",
            f"{fix}; percent-encode other characters (RFC 3986 §3.3)",
        )
    if "*" in path.removesuffix("/*"):
        raise node.error(f"{path!r}: '*' is only allowed as a final '/*'", fix)
    # Requests are routed on kedge.core.http.paths.canonical_path; a rule in another form
    # would never match, and a rule that cannot be canonicalised matches no valid request.
    try:
        canonical = canonical_path(path)
    except BadRequest as exc:
        raise node.error(f"{path!r} can never match a request: {exc.reason}", fix) from None
    if canonical != path:
        raise node.error(
            f"{path!r} is not in canonical form, so it would never match",
            f"write {canonical!r} (no '//', '.' or '..' segments, unreserved characters unescaped)",
        )
    return path


def _grpc_methods(node: Node) -> tuple[str, ...]:
    """A list of method globs, or one glob as a string (see rules.parse_grpc_method).

    An empty list is refused: it would silently turn a gRPC-only route into one that
    matches every request.
    """
    items = [node] if isinstance(node.value, str) else node.as_list(allow_empty=False)
    out: list[str] = []
    for item in items:
        text = item.as_str()
        try:
            parse_grpc_method(text)
        except InvalidValue as exc:
            raise item.error(exc.problem, exc.fix) from None
        out.append(text)
    return tuple(out)


def _headers(node: Node) -> tuple[HeaderMatch, ...]:
    """`{name: exact}` or a list of `{name, exact}` / `{name, regex}`; every one must match."""
    if isinstance(node.value, dict):
        f = node.as_mapping()
        return tuple(
            HeaderMatch(header_name(k, node.child(k)), exact=_header_value(node.child(k)))
            for k in f
        )
    if not isinstance(node.value, list):
        raise node.error(
            "expected a mapping of header name to value, or a list of {name, exact|regex}",
            "e.g. `headers: {x-env: prod}`",
        )
    out: list[HeaderMatch] = []
    for item in node.as_list():
        g = item.as_mapping(dataclass_keys(HeaderMatch))
        name_node = g.require("name", "e.g. `name: x-env`")
        name = header_name(name_node.as_str(), name_node)
        if ("exact" in g) == ("regex" in g):
            raise item.error(
                "give exactly one of exact or regex", "e.g. `{name: x-env, exact: prod}`"
            )
        if (n := g.get("exact")) is not None:
            out.append(HeaderMatch(name, exact=_header_value(n)))
            continue
        regex_node = item.child("regex")
        pattern = regex_node.as_str()
        try:
            re.compile(pattern)
        except re.error as exc:
            raise regex_node.error(
                f"invalid regular expression: {exc}",
                "fix the pattern (Python re, matched against the whole value)",
            ) from None
        out.append(HeaderMatch(name, regex=pattern))
    return tuple(out)


def _header_value(node: Node) -> str:
    value = node.as_str(allow_empty=True)
    # RFC 9110 §5.5: no CR/LF/NUL, and parsers strip surrounding whitespace, so such a
    # value could never match.
    if any(c in value for c in "\r\n\0") or value != value.strip(" \t"):
        raise node.error(
            f"{value!r} can never match a header value",
            "remove control characters and outer spaces",
        )
    return value


# --- adhoc ------------------------------------------------------------------------------


def parse_adhoc_rule(item: Node) -> AdhocRule:
    f = item.as_mapping(
        (
            "dns_name",
            "port",
            "replace",
            "allow_loopback",
            "allow_link_local",
            "allow_private",
            "connect_timeout",
            "allow_connect",
        )
    )
    d = AdhocRule(_host_pattern(f.require("dns_name", "e.g. `dns_name: '*.pods.internal'`")))
    default_port, allowed, ranges = d.default_port, d.allowed_ports, d.allowed_port_ranges
    if (n := f.get("port")) is not None:
        g = n.as_mapping(("default", "allowed", "allowed_ranges"))
        default_port = g.get_int("default", default_port, minimum=1, maximum=65535)
        allowed = tuple(p.as_port() for p in node_list(g.get("allowed")))
        ranges = tuple(_port_range(r) for r in node_list(g.get("allowed_ranges")))
        # kEdge checks the default port against the allow lists too; a default outside
        # non-empty lists would refuse every request without a port, surely a mistake.
        # (Empty lists are a deliberate deny rule: the first match decides, with 403.)
        if (
            (allowed or ranges)
            and default_port not in allowed
            and not any(r.low <= default_port <= r.high for r in ranges)
        ):
            raise n.child("default").error(
                f"default port {default_port} is not in allowed or allowed_ranges",
                f"add {default_port} to port.allowed",
            )
    pattern, substitution = d.replace_pattern, d.replace_substitution
    if (n := f.get("replace")) is not None:
        g = n.as_mapping(("pattern", "substitution"))
        pattern = g.require("pattern", "e.g. `pattern: .pods.internal`").as_str()
        substitution = g.get_str("substitution", substitution, allow_empty=True)
    return AdhocRule(
        dns_name=d.dns_name,
        default_port=default_port,
        allowed_ports=allowed,
        allowed_port_ranges=ranges,
        replace_pattern=pattern,
        replace_substitution=substitution,
        allow_loopback=f.get_bool("allow_loopback", d.allow_loopback),
        allow_link_local=f.get_bool("allow_link_local", d.allow_link_local),
        allow_private=f.get_bool("allow_private", d.allow_private),
        connect_timeout=f.get_duration("connect_timeout", d.connect_timeout, allow_zero=False),
        allow_connect=f.get_bool("allow_connect", d.allow_connect),
    )


def _port_range(node: Node) -> PortRange:
    f = node.as_mapping(("from", "to"))
    low = f.require("from", "e.g. `{from: 9000, to: 9100}`").as_port()
    high = f.require("to", "e.g. `{from: 9000, to: 9100}`").as_port()
    if low > high:
        raise node.error(f"from ({low}) is greater than to ({high})", "make from <= to")
    return PortRange(low, high)
