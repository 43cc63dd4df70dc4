"""The compiled route table: first match in file order, found without scanning every route.

Semantics are those of a linear scan: the first route, in list order, whose host, port,
paths, headers, proxy mode and gRPC methods all match the request wins (a route with gRPC
methods matches only gRPC requests; one without matches gRPC and plain requests alike). The
table is compiled once per config (an immutable snapshot; a reload compiles a new one and
swaps the reference) so the per-request cost does not grow with the number of routes:

- exact hosts live in a dict; each entry is the host's *complete* candidate list: its own
  routes, the wildcard routes whose suffix covers it, and (when there are few) the host-less
  routes, merged by route index so file order is preserved. An exact hit is one dict lookup.
- "*.suffix" routes live in a dict keyed by suffix; each entry is likewise pre-merged with
  the wildcards on shorter suffixes and the host-less routes, so a wildcard hit walks the
  request host's label suffixes, longest first, and stops at the first key found.
- host-less routes are kept aside. If there are many, they are not copied into every entry
  (that would cost memory per host) but merged by index at match time.
- a long candidate list (one host serving many paths, or many host-less routes) is split
  by the first path segment, so the scan stays short however many paths a host has.

Candidate lists are usually a handful of routes; only port, path, header and mode checks
run per candidate, with regexes compiled here rather than at match time. A gRPC route's
method check hides behind its mode check (see `_GrpcGate`), so routes without gRPC methods
cost nothing more per candidate than before gRPC routing existed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from kedge.core.config_loading import InvalidValue
from kedge.core.errors import ConfigError
from kedge.edge.config import ProxyMode, RouteConfig
from kedge.edge.routing.rules import (
    GrpcMethodRule,
    HeaderRule,
    HostKind,
    PathRules,
    compile_grpc_methods,
    compile_header_match,
    compile_host_pattern,
    compile_path_rules,
    parse_grpc_method,
)

__all__ = ["RouteRequest", "RouteTable"]

# Up to this many host-less routes are copied into every host's candidate list.
_MERGE_HOSTLESS_LIMIT = 32
# Candidate lists longer than this get an index by the request path's first segment.
_PATH_INDEX_MIN = 8


class RouteRequest:
    """What routing looks at: canonical host and path, port, request form and headers.

    `host` comes from `parse_authority` (lower case, no trailing dot, IPv6 unbracketed),
    `path` from `canonical_path`; `mode` is REVERSE (origin-form) or FORWARD (absolute-form),
    never ANY. Header names are lower-case bytes, values raw bytes, in arrival order.
    `grpc` is True for a gRPC call (HTTP/2 with content-type application/grpc, not grpc-web).
    A plain slots class, not a frozen dataclass: one is built per request, and a frozen
    dataclass's __init__ costs several times more.
    """

    __slots__ = ("grpc", "headers", "host", "mode", "path", "port")

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        mode: ProxyMode,
        headers: Sequence[tuple[bytes, bytes]] = (),
        grpc: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.mode = mode
        self.headers = headers
        self.grpc = grpc

    def __repr__(self) -> str:
        kind = " grpc" if self.grpc else ""
        return f"RouteRequest({self.host}:{self.port}{self.path} {self.mode.value}{kind})"


def _first_segment(path: str) -> str:
    """First path segment ("/a/b" -> "a", "/" -> ""); every path a rule matches shares it."""
    end = path.find("/", 1)
    return path[1:end] if end > 0 else path[1:]


class _GrpcGate:
    """A gRPC route's request conditions: a gRPC call, the route's proxy mode, its methods.

    It stands in the candidate's `mode` slot, where it is never the request's mode, so the
    one mode comparison every candidate makes anyway sends gRPC routes here and lets routes
    without gRPC methods through at no extra cost (see `_first_match`).
    """

    __slots__ = ("mode", "rule")

    def __init__(self, rule: GrpcMethodRule, mode: ProxyMode | None) -> None:
        self.rule = rule
        self.mode = mode  # None: any form

    def admits(self, req: RouteRequest) -> bool:
        return (
            req.grpc
            and (self.mode is None or self.mode is req.mode)
            and self.rule.matches(req.path)
        )


class _Candidate:
    """One route compiled for matching; the host was already matched by the table lookup.

    Path rules are flattened onto the candidate (not a PathRules method call) because the
    candidate loop is the hot path and a call costs more than the checks themselves.
    """

    __slots__ = ("any_path", "config", "exact_paths", "grpc", "headers", "index", "mode",
                 "port", "prefixes", "segments")  # fmt: skip

    def __init__(
        self,
        index: int,
        config: RouteConfig,
        port: int | None,
        mode: ProxyMode | None,
        paths: PathRules | None,
        headers: tuple[HeaderRule, ...],
        grpc: GrpcMethodRule | None = None,
    ) -> None:
        self.index = index
        self.config = config
        self.port = port
        self.grpc = _GrpcGate(grpc, mode) if grpc is not None else None
        # None: any form; a gRPC route's gate, which checks its mode itself.
        self.mode: ProxyMode | _GrpcGate | None = mode if self.grpc is None else self.grpc
        self.any_path = paths is None or paths.match_all
        self.exact_paths = paths.exact if paths is not None else frozenset()
        self.prefixes = paths.prefixes if paths is not None else ()
        self.headers = headers
        # First segments of the paths this route can match; None: any path. Prefix bases are
        # in `exact_paths`, and "/p/*" only matches paths whose first segment is that of "/p".
        segments = None if self.any_path else frozenset(map(_first_segment, self.exact_paths))
        # A gRPC call's first segment is its service. Method globs are ANDed with path rules,
        # so the route can only match segments both allow. "pkg.*" (services is None) is a
        # prefix inside the segment, not a segment: it must not narrow the index.
        services = grpc.services if grpc is not None else None
        if services is not None:
            segments = services if segments is None else segments & services
        self.segments: frozenset[str] | None = segments


def _index(candidate: _Candidate) -> int:
    return candidate.index


def _merge(lists: Sequence[Sequence[_Candidate]]) -> tuple[_Candidate, ...]:
    """Merge index-sorted candidate lists into one index-sorted tuple (file order)."""
    lists = [part for part in lists if part]
    if len(lists) == 1:
        return tuple(lists[0])
    return tuple(heapq.merge(*lists, key=_index))


class _PathIndex:
    """A long candidate list split by the request path's first segment, order kept.

    Used when one host (or the host-less group) has many routes, typically one path rule
    each, so the per-request scan stays short however many paths a host serves.
    """

    __slots__ = ("by_segment", "default")

    def __init__(self, candidates: Sequence[_Candidate]) -> None:
        unkeyed = [c for c in candidates if c.segments is None]
        keyed: dict[str, list[_Candidate]] = {}
        for c in candidates:
            for segment in c.segments or ():
                keyed.setdefault(segment, []).append(c)
        self.by_segment = {seg: _merge([own, unkeyed]) for seg, own in keyed.items()}
        self.default = tuple(unkeyed)

    def select(self, path: str) -> tuple[_Candidate, ...]:
        end = path.find("/", 1)
        return self.by_segment.get(path[1:end] if end > 0 else path[1:], self.default)


_Lookup = tuple[_Candidate, ...] | _PathIndex


def _first_index(lookup: _Lookup) -> int:
    """The smallest route index in a lookup (a large number when it is empty)."""
    if isinstance(lookup, _PathIndex):
        groups = [lookup.default, *lookup.by_segment.values()]
        return min((g[0].index for g in groups if g), default=1 << 62)
    return lookup[0].index if lookup else 1 << 62


def _lookup(candidates: tuple[_Candidate, ...]) -> _Lookup:
    return candidates if len(candidates) <= _PATH_INDEX_MIN else _PathIndex(candidates)


def _proper_suffixes(host: str) -> list[str]:
    """Label suffixes of `host`, longest first, excluding `host` itself: a.b.c -> [b.c, c]."""
    out = []
    dot = host.find(".")
    while dot >= 0:
        out.append(host[dot + 1 :])
        dot = host.find(".", dot + 1)
    return out


class RouteTable:
    """An immutable, compiled list of routes; `match` returns the first route that matches."""

    __slots__ = (
        "_default",
        "_exact",
        "_hostless",
        "_hostless_first",
        "_merged",
        "_routes",
        "_suffix",
    )

    def __init__(
        self,
        routes: tuple[RouteConfig, ...],
        exact: dict[str, _Lookup],
        suffix: dict[str, _Lookup],
        hostless: _Lookup,
        merged: bool,
    ) -> None:
        """Use `RouteTable.compile`; this constructor takes already-compiled parts."""
        self._routes = routes
        self._exact = exact
        self._suffix = suffix
        self._hostless = hostless
        # Index of the earliest host-less route: a host match before it needs no second look.
        self._hostless_first = _first_index(hostless)
        self._merged = merged  # True: host-less routes are inside every lookup above
        self._default: _Lookup = hostless if merged else ()

    @classmethod
    def compile(cls, routes: Sequence[RouteConfig], *, source: str = "<routes>") -> RouteTable:
        """Compile routes; raises ConfigError (naming `routes[i]...` in `source`) on bad rules."""
        by_exact: dict[str, list[_Candidate]] = {}
        by_suffix: dict[str, list[_Candidate]] = {}
        hostless: list[_Candidate] = []
        for index, route in enumerate(routes):
            candidate = _compile_route(index, route, source)
            if route.match.host is None:
                hostless.append(candidate)
                continue
            try:
                pattern = compile_host_pattern(route.match.host)
            except ValueError as exc:
                raise ConfigError(source, f"routes[{index}].match.host", str(exc)) from None
            groups = by_exact if pattern.kind is HostKind.EXACT else by_suffix
            groups.setdefault(pattern.value, []).append(candidate)

        merged = len(hostless) <= _MERGE_HOSTLESS_LIMIT
        tail = hostless if merged else []

        def complete(own: list[_Candidate], host: str) -> _Lookup:
            # Wildcards keyed on any proper suffix of `host` also cover `host`.
            wild = [by_suffix[s] for s in _proper_suffixes(host) if s in by_suffix]
            return _lookup(_merge([own, *wild, tail]))

        exact = {host: complete(own, host) for host, own in by_exact.items()}
        suffix = {sfx: complete(own, sfx) for sfx, own in by_suffix.items()}
        return cls(tuple(routes), exact, suffix, _lookup(tuple(hostless)), merged)

    @property
    def routes(self) -> tuple[RouteConfig, ...]:
        """The routes in file order, as given to `compile`."""
        return self._routes

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, req: RouteRequest) -> RouteConfig | None:
        """The first route (in list order) that matches `req`, or None."""
        host = req.host
        found = self._exact.get(host)
        if found is None:
            found = self._default
            suffix = self._suffix
            if suffix:
                # Longest suffix first: its entry already holds the shorter suffixes' routes.
                dot = host.find(".")
                while dot >= 0:
                    hit = suffix.get(host[dot + 1 :])
                    if hit is not None:
                        found = hit
                        break
                    dot = host.find(".", dot + 1)
        path = req.path
        own = found.select(path) if isinstance(found, _PathIndex) else found
        best = _first_match(own, req, None)
        if self._merged or (best is not None and best.index < self._hostless_first):
            return best.config if best is not None else None
        # Too many host-less routes to copy into every host's list: only those that come
        # before the host's own match in file order can still win (usually none, as
        # catch-all routes come last), so check just those instead of merging both lists.
        hostless = self._hostless
        extra = hostless.select(path) if isinstance(hostless, _PathIndex) else hostless
        first = _first_match(extra, req, best.index if best is not None else None)
        if first is not None:
            return first.config
        return best.config if best is not None else None


def _first_match(
    candidates: Iterable[_Candidate], req: RouteRequest, before: int | None
) -> _Candidate | None:
    """The first candidate (they are in index order) that matches, if its index < before."""
    path, port, mode = req.path, req.port, req.mode
    for c in candidates:
        if before is not None and c.index >= before:
            return None
        if c.port is not None and c.port != port:
            continue
        if c.mode is not None and c.mode is not mode:
            # Routes without gRPC methods stop here as they always did; a gRPC route's mode
            # is its _GrpcGate (never `mode`), so only gRPC routes pay for the method check,
            # and plain requests skip them without a call.
            gate = c.grpc
            if gate is None or not (req.grpc and gate.admits(req)):
                continue
        if not (c.any_path or path in c.exact_paths or path.startswith(c.prefixes)):
            continue
        if c.headers and not all(rule.matches(req.headers) for rule in c.headers):
            continue
        return c
    return None


def _compile_route(index: int, route: RouteConfig, source: str) -> _Candidate:
    match = route.match
    key = f"routes[{index}].match"
    try:
        paths = compile_path_rules(match.paths)
    except ValueError as exc:
        raise ConfigError(source, f"{key}.paths", str(exc)) from None
    headers = []
    for j, header in enumerate(match.headers):
        try:
            headers.append(compile_header_match(header))
        except ValueError as exc:
            raise ConfigError(source, f"{key}.headers[{j}]", str(exc)) from None
    for j, method in enumerate(match.grpc_methods):
        try:
            parse_grpc_method(method)
        except InvalidValue as exc:
            raise ConfigError(source, f"{key}.grpc_methods[{j}]", exc.problem, exc.fix) from None
    grpc = compile_grpc_methods(match.grpc_methods)
    mode = None if match.proxy_mode is ProxyMode.ANY else match.proxy_mode
    return _Candidate(index, route, match.port, mode, paths, tuple(headers), grpc)
