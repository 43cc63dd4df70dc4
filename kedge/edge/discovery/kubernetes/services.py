"""Route discovery: labelled Services to generated routes and backends. Pure.

A Service labelled `<prefix>kedge-exposed` (any value) is published on each port whose
name says its protocol, as in kEdge: `http`/`http-*` (HTTP/1.1), `https*`/`httptls*`
(HTTP/1.1 over TLS), `grpc*` (h2c) and `grpctls*` (HTTP/2 over TLS); other ports are
skipped. Each published port becomes a backend (a `k8s` resolver on the Service's named
port, so all ports of a Service share one EndpointSlice watch) and a route matching the
host `<service>.<namespace>.<domain_suffix>` (or the `<prefix>host` annotation) and the
Service port; gRPC ports match gRPC calls only, on the `<prefix>grpc-methods` globs
(default `*`). `<prefix>permissions` (comma-separated, any of) and `<prefix>anonymous`
("true") set the route's auth policy.

Generated routes come after the hand-written ones, ordered by namespace, Service and port:
the same input always gives the same table (kEdge re-sorted everything, unstably). A bad
Service is reported and skipped; it never holds up the others. A generated route whose
host and port a hand-written route (or an earlier generated one) already serves is
reported as a conflict and left out: the hand-written route wins. A route without `port`
serves every port of its host, one without gRPC methods serves gRPC calls too, and a
hand-written `*.suffix` or host-less route serves every name it matches, so a generated
route it would shadow (first match wins) is reported too. Routes with paths or headers
take only part of a host's requests, and `forward`/`connect` routes take no reverse-proxy
requests: they shadow nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kedge.core.config_loading import InvalidValue
from kedge.edge.config import (
    BackendConfig,
    BackendTlsConfig,
    DiscoveryConfig,
    K8sResolverConfig,
    PermissionMode,
    ProxyMode,
    RouteAuth,
    RouteConfig,
    RouteMatch,
    UpstreamProtocol,
)
from kedge.edge.routing.rules import parse_grpc_method

__all__ = ["Generated", "Problem", "generate"]

_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Problem:
    service: str  # "<namespace>/<name>"
    kind: str  # "invalid" (the Service is skipped) or "conflict" (one port is skipped)
    message: str


@dataclass(frozen=True, slots=True)
class Generated:
    routes: tuple[RouteConfig, ...]
    backends: tuple[BackendConfig, ...]
    problems: tuple[Problem, ...]
    services: int  # Services that produced at least one route


@dataclass(frozen=True, slots=True)
class _Kind:
    protocol: UpstreamProtocol
    tls: bool
    grpc: bool


def _port_kind(name: str) -> _Kind | None:
    def named(base: str) -> bool:
        return name == base or name.startswith(base + "-")

    if named("grpctls"):
        return _Kind(UpstreamProtocol.H2, tls=True, grpc=True)
    if named("grpc"):
        return _Kind(UpstreamProtocol.H2C, tls=False, grpc=True)
    if named("httptls") or named("https"):
        return _Kind(UpstreamProtocol.HTTP1, tls=True, grpc=False)
    if named("http"):
        return _Kind(UpstreamProtocol.HTTP1, tls=False, grpc=False)
    return None


class _Invalid(ValueError):
    pass


def _host(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _Invalid(f"host {value!r} is not a DNS name")
    return host


def _auth(annotations: Mapping[str, str], prefix: str) -> RouteAuth | None:
    anonymous = annotations.get(prefix + "anonymous")
    perms = annotations.get(prefix + "permissions")
    if anonymous is not None and anonymous not in ("true", "false"):
        raise _Invalid(f"{prefix}anonymous must be true or false, not {anonymous!r}")
    if anonymous == "true":
        if perms:
            raise _Invalid(f"{prefix}anonymous and {prefix}permissions exclude each other")
        return RouteAuth(anonymous=True)
    if perms:
        items = tuple(p.strip() for p in perms.split(","))
        if not all(items):
            raise _Invalid(f"{prefix}permissions has an empty entry")
        return RouteAuth(permissions=items, permission_mode=PermissionMode.ANY_OF)
    return None


def _grpc_methods(annotations: Mapping[str, str], prefix: str) -> tuple[str, ...]:
    text = annotations.get(prefix + "grpc-methods", "*")
    globs = tuple(g.strip() for g in text.split(","))
    for glob in globs:
        try:
            parse_grpc_method(glob)
        except InvalidValue as exc:
            raise _Invalid(f"{prefix}grpc-methods: {exc.problem}") from None
    return globs


def _strings(node: object) -> dict[str, str]:
    if not isinstance(node, dict):
        return {}
    return {k: v for k, v in node.items() if isinstance(k, str) and isinstance(v, str)}


def _service(
    svc: Mapping[str, Any], cfg: DiscoveryConfig, has_auth: bool
) -> list[tuple[RouteConfig, BackendConfig]]:
    meta = svc.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise _Invalid("no metadata.name or metadata.namespace")
    annotations = _strings(meta.get("annotations"))
    prefix = cfg.label_prefix
    host = _host(annotations.get(prefix + "host") or f"{name}.{namespace}.{cfg.domain_suffix}")
    auth = _auth(annotations, prefix)
    if auth is not None and not has_auth:
        raise _Invalid(f"{prefix}permissions/anonymous need the edge's `auth:` section")
    ports = (svc.get("spec") or {}).get("ports") or []
    out: list[tuple[RouteConfig, BackendConfig]] = []
    for port in ports if isinstance(ports, list) else []:
        if not isinstance(port, dict):
            continue
        port_name, number = port.get("name", ""), port.get("port")
        kind = _port_kind(port_name) if isinstance(port_name, str) else None
        if kind is None or not isinstance(number, int) or port.get("protocol", "TCP") != "TCP":
            continue
        backend = BackendConfig(
            # ':' and '/' never appear in hand-written backend names: no clash possible.
            name=f"k8s:{namespace}/{name}:{port_name}",
            resolver=K8sResolverConfig(namespace, name, port_name),
            protocol=kind.protocol,
            # Pods serve certificates no public CA signs; like kEdge, discovered TLS
            # backends are encrypted but not verified (hand-write the backend to verify).
            tls=BackendTlsConfig(insecure_skip_verify=True) if kind.tls else None,
        )
        match = RouteMatch(
            host=host,
            port=number,
            grpc_methods=_grpc_methods(annotations, prefix) if kind.grpc else (),
        )
        route = RouteConfig(
            name=f"discovered:{namespace}/{name}:{port_name}",
            backend=backend.name,
            match=match,
            auth=auth,
        )
        out.append((route, backend))
    if not out:
        raise _Invalid("no port is named http*, https*, httptls*, grpc* or grpctls*")
    return out


def _key(route: RouteConfig) -> tuple[str | None, int | None, bool]:
    return route.match.host, route.match.port, bool(route.match.grpc_methods)


def _served_by(route: RouteConfig) -> list[tuple[str | None, int | None, bool]]:
    """The keys of earlier routes that take `route`'s requests: the same host on its port
    or on any port (no `port`); for a gRPC route, also plain routes, which match gRPC
    calls too. Exact keys first, so the report names the closest owner."""
    host, port, grpc = _key(route)
    return [(host, p, g) for g in ((True, False) if grpc else (False,)) for p in (port, None)]


def _shadows(route: RouteConfig) -> bool:
    """A hand-written route that takes every reverse-proxy request for its host and port."""
    m = route.match
    return not m.paths and not m.headers and m.proxy_mode in (ProxyMode.ANY, ProxyMode.REVERSE)


def _wildcard_serves(wild: RouteConfig, route: RouteConfig) -> bool:
    """`wild` (host `*.suffix`, or none: any host) comes first and takes `route`'s requests."""
    host, port, grpc = _key(route)
    w = wild.match
    if w.host is not None and (host is None or not host.endswith(w.host[1:])):
        return False
    if w.port is not None and w.port != port:
        return False
    return grpc or not w.grpc_methods  # a gRPC-only route takes no plain requests


def generate(
    services: Iterable[Mapping[str, Any]],
    cfg: DiscoveryConfig,
    hand_written: Iterable[RouteConfig],
    *,
    has_auth: bool,
) -> Generated:
    taken: dict[tuple[str | None, int | None, bool], str] = {}
    wild: list[RouteConfig] = []  # hand-written `*.suffix` and host-less routes, in order
    for r in hand_written:
        if not _shadows(r):
            continue
        if r.match.host is None or r.match.host.startswith("*."):
            wild.append(r)
        else:
            taken.setdefault(_key(r), r.name)

    def order(s: Mapping[str, Any]) -> tuple[str, str]:
        meta = s.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    routes: list[RouteConfig] = []
    backends: list[BackendConfig] = []
    problems: list[Problem] = []
    published = 0
    for svc in sorted(services, key=order):
        ident = "/".join(order(svc))
        try:
            pairs = _service(svc, cfg, has_auth)
        except _Invalid as exc:
            problems.append(Problem(ident, "invalid", str(exc)))
            continue
        kept = 0
        for route, backend in pairs:
            owner = next((taken[k] for k in _served_by(route) if k in taken), None)
            if owner is None:
                owner = next((w.name for w in wild if _wildcard_serves(w, route)), None)
            if owner is not None:
                problems.append(
                    Problem(
                        ident,
                        "conflict",
                        f"{route.match.host}:{route.match.port} is already served by "
                        f"route {owner!r}; this port is not published",
                    )
                )
                continue
            taken[_key(route)] = route.name
            routes.append(route)
            backends.append(backend)
            kept += 1
        published += kept > 0
    return Generated(tuple(routes), tuple(backends), tuple(problems), published)
