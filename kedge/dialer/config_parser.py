"""DialerConfig from YAML: the mapper's routes, auth sources and edge TLS, checked key by key.

Winch and the dialer read the same file; the `winch:` section belongs to winch and is
accepted here unread. Defaults live only in the dataclasses of `kedge.dialer.config`.
Relative file paths are read from the config file's directory, `~` is expanded, and
every file a source or TLS block names must exist when the config is loaded, so a typo
fails at startup rather than at the first request that needs the credential.
"""

from __future__ import annotations

import os
import re
import ssl

from kedge.core.config_loading import (
    Fields,
    InvalidValue,
    Node,
    claim_name,
    closest,
    existing_file,
    is_dns_name,
    load_yaml,
    node_list,
    parse_yaml_text,
)
from kedge.core.net.tls import client_context
from kedge.dialer.config import (
    AuthSourceConfig,
    DialerConfig,
    DirectRule,
    EdgeTls,
    MapRoute,
    MatchRule,
    RegexpRule,
    RouteProtocol,
    SuffixRule,
    Unmapped,
)
from kedge.dialer.config_auth_sources import parse_auth_sources
from kedge.dialer.mapping import is_ip_like, parse_edge_url
from kedge.dialer.pac import js_regexp_source

__all__ = ["load_dialer_config", "parse_dialer_config", "parse_dialer_config_text"]

_TOP_KEYS = ("edge_tls", "unmapped", "refresh_margin", "routes", "auth_sources", "winch")
_RULE_KEYS = ("direct", "suffix", "regexp")
_ROUTE_KEYS = ("name", *_RULE_KEYS, "ports", "edge", "proxy_auth", "backend_auth", "protocol")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name")


def load_dialer_config(path: str) -> DialerConfig:
    """Read, parse and validate a winch/dialer config file; any problem is a ConfigError."""
    return parse_dialer_config(load_yaml(path), base_dir=os.path.dirname(os.path.abspath(path)))


def parse_dialer_config_text(
    text: str, source: str = "<text>", *, base_dir: str | None = None
) -> DialerConfig:
    """Parse YAML text (tests, embedded configs); `base_dir` anchors relative paths."""
    return parse_dialer_config(parse_yaml_text(text, source), base_dir=base_dir)


def parse_dialer_config(node: Node, *, base_dir: str | None = None) -> DialerConfig:
    """Validate a loaded YAML document. `base_dir` anchors relative paths (default: cwd)."""
    if node.value is None:
        raise node.error("the config is empty", "start from configs/winch.yaml")
    f = node.as_mapping(_TOP_KEYS)
    base = DialerConfig(node.file, (), {})
    sources = parse_auth_sources(f.get("auth_sources"), base_dir)
    edge_tls = base.edge_tls
    if (n := f.get("edge_tls")) is not None:
        edge_tls = _edge_tls(n, base.edge_tls, base_dir)
    seen: dict[str, str] = {}
    routes = tuple(
        _route(item, i, seen, sources, edge_tls, base_dir)
        for i, item in enumerate(node_list(f.get("routes")))
    )
    return DialerConfig(
        source=node.file,
        routes=routes,
        auth_sources=sources,
        edge_tls=edge_tls,
        unmapped=f.get_enum("unmapped", Unmapped, base.unmapped),
        refresh_margin=f.get_duration("refresh_margin", base.refresh_margin),
    )


# --- edge TLS -------------------------------------------------------------------------


def _edge_tls(node: Node, inherited: EdgeTls, base_dir: str | None) -> EdgeTls:
    """A TLS block; absent keys keep `inherited`'s values (a route's block over `edge_tls`).

    cert_file and key_file are one unit: a route that names either replaces both.
    """
    f = node.as_mapping(_TLS_KEYS)
    ca_file = inherited.ca_file
    if (n := f.get("ca_file")) is not None:
        ca_file = existing_file(n, base_dir)
    cert, key = f.get("cert_file"), f.get("key_file")
    cert_file, key_file = inherited.cert_file, inherited.key_file
    if (cert is None) != (key is None):
        missing = "key_file" if key is None else "cert_file"
        raise node.child(missing).error(
            "cert_file and key_file go together",
            "give both the client certificate (PEM) and its private key, or neither",
        )
    if cert is not None and key is not None:
        cert_file, key_file = existing_file(cert, base_dir), existing_file(key, base_dir)
    server_name = inherited.server_name
    if (n := f.get("server_name")) is not None:
        server_name = _dns_name(n, "the name in the edge's certificate, e.g. edge.cluster-a.test")
    tls = EdgeTls(ca_file, cert_file, key_file, server_name)
    if tls != inherited and (ca_file or cert_file):
        try:  # the PEM files must load, now rather than at the first connection
            client_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise node.error(
                f"the TLS files do not load: {exc}",
                "ca_file must hold PEM CA certificates, cert_file a PEM certificate chain and "
                "key_file its private key",
            ) from None
    return tls


# --- routes ---------------------------------------------------------------------------


def _route(
    item: Node,
    index: int,
    seen: dict[str, str],
    sources: dict[str, AuthSourceConfig],
    edge_tls: EdgeTls,
    base_dir: str | None,
) -> MapRoute:
    f = item.as_mapping((*_ROUTE_KEYS, "tls"))
    name = f.get_str("name", f"routes[{index}]")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise item.child("name").error(
            "the route name has control characters", "use letters, digits, '-' and '.'"
        )
    claim_name(seen, name, f.get("name") or item, "route")
    rule = _rule(f, item)
    edge_node = f.require("edge", "e.g. `edge: https://edge.cluster-a.test:8443`")
    edge_url = edge_node.as_str()
    try:
        url = parse_edge_url(edge_url)
    except InvalidValue as exc:
        raise edge_node.error(exc.problem, exc.fix) from None
    if isinstance(rule, RegexpRule):
        unknown = sorted(url.placeholders - set(rule.pattern.groupindex))
        if unknown:
            groups = ", ".join(sorted(rule.pattern.groupindex)) or "none"
            raise edge_node.error(
                f"${{{unknown[0]}}} is not a named group of the regexp (its groups: {groups})",
                "name the group in the pattern, e.g. (?P<cluster>[a-z0-9-]+)",
            )
    elif url.placeholders:
        raise edge_node.error(
            "${...} placeholders are only filled in by regexp routes",
            "write the edge's full URL, or use `regexp:` with named groups",
        )
    proxy_auth = _source_ref(f, "proxy_auth", sources)
    backend_auth = _source_ref(f, "backend_auth", sources)
    if (proxy_auth or backend_auth) and url.scheme != "https":
        key = "proxy_auth" if proxy_auth else "backend_auth"
        raise edge_node.error(
            f"the route sends credentials ({key}) to an http:// edge; "
            "credentials are never sent in the clear",
            "use an https:// edge URL, or remove proxy_auth and backend_auth",
        )
    tls = None
    if f.is_null("tls"):
        raise item.child("tls").error("`tls` has no value", "fill in the tls keys or remove `tls`")
    if (n := f.get("tls")) is not None:
        if url.scheme != "https":
            raise n.error("`tls` on an http:// edge", "use an https:// edge URL or remove `tls`")
        tls = _edge_tls(n, edge_tls, base_dir)
    return MapRoute(
        name=name,
        rule=rule,
        edge_url=edge_url,
        proxy_auth=proxy_auth,
        backend_auth=backend_auth,
        protocol=f.get_enum("protocol", RouteProtocol, RouteProtocol.ANY),
        tls=tls,
    )


def _rule(f: Fields, item: Node) -> MatchRule:
    given = [k for k in _RULE_KEYS if k in f]
    if len(given) != 1:
        problem = "has no match rule" if not given else f"has {' and '.join(given)}"
        raise item.error(
            f"the route {problem}", "give exactly one of direct, suffix or regexp per route"
        )
    kind = given[0]
    node = f.require(kind, "")
    if kind != "suffix" and "ports" in f:
        raise item.child("ports").error(
            f"`ports` is for suffix routes, not {kind}",
            "write the port in the rule: direct `host:443`, or in the regexp",
        )
    if kind == "direct":
        return _direct(node)
    if kind == "suffix":
        return _suffix(node, f.get("ports"))
    return _regexp(node)


def _direct(node: Node) -> DirectRule:
    text = node.as_str()
    port = None
    if ":" in text:
        host, port = node.as_address()
    else:
        host = text.lower()
    host = host.lower().removesuffix(".")
    if is_ip_like(host):
        raise node.error(
            f"{host!r} is an IP address; kedge maps host names only",
            "write the service's DNS name, e.g. kubernetes.cluster-a.internal:443",
        )
    if not is_dns_name(host):
        raise node.error(f"{host!r} is not a valid DNS name", "e.g. kubernetes.cluster-a.internal")
    return DirectRule(host, port)


def _suffix(node: Node, ports_node: Node | None) -> SuffixRule:
    text = node.as_str().lower().removesuffix(".")
    fix = 'write "*." and a domain, e.g. "*.cluster-a.internal" (quoted: YAML reads * as alias)'
    if not text.startswith("*.") or not is_dns_name(text[2:]) or text[2:].endswith("."):
        raise node.error(f"{text!r} is not a suffix pattern", fix)
    if is_ip_like(text[2:]):
        raise node.error(f"{text!r} ends in a number; no DNS name does", fix)
    ports: list[int] = []
    for p in node_list(ports_node):
        port = p.as_port()
        if port in ports:
            raise p.error(f"port {port} is listed twice", "list each port once")
        ports.append(port)
    return SuffixRule(text[1:], tuple(ports))


def _regexp(node: Node) -> RegexpRule:
    text = node.as_str()
    try:
        js_regexp_source(text)  # the PAC file runs the same pattern as a JavaScript RegExp
    except ValueError as exc:
        raise node.error(
            f"the regexp uses syntax JavaScript reads differently: {exc}",
            "use plain groups, classes and quantifiers; named groups as (?P<name>...)",
        ) from None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise node.error(f"the regexp does not compile: {exc}", "correct the pattern") from None
    return RegexpRule(pattern)


def _source_ref(f: Fields, key: str, sources: dict[str, AuthSourceConfig]) -> str | None:
    node = f.get(key)
    if node is None:
        return None
    name = node.as_str()
    if name not in sources:
        known = ", ".join(sorted(sources)) or "none defined"
        near = closest(name, sources)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise node.error(
            f"no auth source called {name!r}",
            f"{hint}name one under `auth_sources` (known: {known})",
        )
    return name


def _dns_name(node: Node, fix: str) -> str:
    name = node.as_str().lower().removesuffix(".")
    if not is_dns_name(name) or is_ip_like(name) or name.endswith("."):
        raise node.error(f"{name!r} is not a valid DNS name", fix)
    return name
