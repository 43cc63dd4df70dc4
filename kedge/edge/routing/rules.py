"""Pure matchers for one route's conditions: host, paths, headers, proxy mode, gRPC methods.

Each `compile_*` function turns a config value into a small frozen matcher once (regexes are
compiled here, never per request) and raises ValueError with a one-line reason for a value it
cannot use; `kedge.edge.routing.table` wraps that into a ConfigError naming the key path.

Inputs are expected to be canonical already: hosts from `kedge.core.http.authority` (lower
case, no trailing dot) and paths from `kedge.core.http.paths.canonical_path`. Path matching
is case-sensitive and segment-aware (hardening.md P9, P10): "/api/*" matches "/api" and
"/api/x" but never "/apiv2" or "/api;x" (P7: ";" has no special meaning).

gRPC methods are matched on the same canonical path: a call's `:path` is
"/<package>.<Service>/<Method>" (gRPC over HTTP/2, PROTOCOL-HTTP2.md), so each method glob
becomes an exact path or a path prefix once, here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from kedge.core.config_loading import InvalidValue
from kedge.edge.config import HeaderMatch, ProxyMode

__all__ = [
    "GrpcMethodRule",
    "HeaderRule",
    "HostKind",
    "HostPattern",
    "PathRules",
    "compile_grpc_methods",
    "compile_header_match",
    "compile_host_pattern",
    "compile_path_rules",
    "headers_match",
    "mode_matches",
    "parse_grpc_method",
]


class HostKind(Enum):
    EXACT = "exact"  # the whole host
    SUFFIX = "suffix"  # "*.example.test": one or more labels in front of "example.test"


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A compiled host pattern; for SUFFIX, `value` is the suffix without "*."."""

    kind: HostKind
    value: str

    def matches(self, host: str) -> bool:
        if self.kind is HostKind.EXACT:
            return host == self.value
        # At least one label in front: "*.example.test" does not match "example.test".
        return host.endswith("." + self.value) and len(host) > len(self.value) + 1


def compile_host_pattern(pattern: str) -> HostPattern:
    """Parse "name" or "*.suffix" (case and one trailing dot are normalised)."""
    value = pattern.lower()
    if value.endswith("."):
        value = value[:-1]
    if value.startswith("*."):
        suffix = value[2:]
        if not suffix or "*" in suffix or suffix.startswith(".") or ".." in suffix:
            raise ValueError(f"invalid wildcard host pattern {pattern!r} (use '*.suffix')")
        return HostPattern(HostKind.SUFFIX, suffix)
    if not value or "*" in value:
        raise ValueError(f"invalid host pattern {pattern!r} (use 'name' or '*.suffix')")
    return HostPattern(HostKind.EXACT, value)


@dataclass(frozen=True, slots=True)
class PathRules:
    """A route's path rules: any one matching is enough.

    `exact` holds exact paths plus the bare base of each prefix rule ("/p" for "/p/*");
    `prefixes` holds "/p/" for each prefix rule, so the check is one set lookup and one
    C-level `str.startswith(tuple)`.
    """

    match_all: bool
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, path: str) -> bool:
        return self.match_all or path in self.exact or path.startswith(self.prefixes)


def compile_path_rules(paths: Sequence[str]) -> PathRules | None:
    """Compile "/exact", "/prefix/*" and "/*" rules; None (no rules) means any path."""
    if not paths:
        return None
    exact: set[str] = set()
    prefixes: list[str] = []
    match_all = False
    for rule in paths:
        if not rule.startswith("/"):
            raise ValueError(f"path rule {rule!r} must start with '/'")
        if rule == "/*":
            match_all = True
        elif rule.endswith("/*"):
            base = rule[:-2]
            if "*" in base:
                raise ValueError(f"path rule {rule!r}: '*' is only allowed as a final '/*'")
            exact.add(base)
            prefixes.append(base + "/")
        elif "*" in rule:
            raise ValueError(f"path rule {rule!r}: '*' is only allowed as a final '/*'")
        else:
            exact.add(rule)
    return PathRules(match_all, frozenset(exact), tuple(prefixes))


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One header condition on raw bytes; with neither `exact` nor `regex` it means "present".

    A header sent several times matches if any of its values matches (each field line is
    checked on its own; values are not joined with commas).
    """

    name: bytes  # lower-case
    exact: bytes | None
    regex: re.Pattern[bytes] | None

    def matches(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        name, exact, regex = self.name, self.exact, self.regex
        for header_name, value in headers:
            if header_name != name:
                continue
            if exact is not None and value != exact:
                continue
            if regex is not None and regex.fullmatch(value) is None:
                continue
            return True
        return False


def compile_header_match(match: HeaderMatch) -> HeaderRule:
    """Compile a HeaderMatch; `exact` and `regex` are UTF-8 encoded and match raw bytes."""
    name = match.name.lower()
    if not name or not name.isascii():
        raise ValueError(f"invalid header name {match.name!r}")
    exact = match.exact.encode("utf-8") if match.exact is not None else None
    regex: re.Pattern[bytes] | None = None
    if match.regex is not None:
        try:
            regex = re.compile(match.regex.encode("utf-8"))
        except re.error as exc:
            raise ValueError(f"invalid regex {match.regex!r}: {exc}") from None
    return HeaderRule(name.encode("ascii"), exact, regex)


def headers_match(rules: Sequence[HeaderRule], headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True if every rule matches (rules are ANDed)."""
    return all(rule.matches(headers) for rule in rules)


def mode_matches(rule: ProxyMode, mode: ProxyMode) -> bool:
    """A route for ANY accepts both forms; otherwise the request's form must be the route's."""
    return rule is ProxyMode.ANY or rule is mode


# --- gRPC methods -------------------------------------------------------------------------

# Protobuf identifiers; a full service name is dotted identifiers ("pkg.sub.Service", or a
# bare "Service" outside any package), a method name is one identifier.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_METHOD = re.compile(_IDENT)
_GLOB_FIX = "write 'pkg.Service/Method', 'pkg.Service/*', 'pkg.Service', 'pkg.*' or '*'"


def parse_grpc_method(pattern: str) -> tuple[str, bool]:
    """One `grpc_methods` entry as (path, is_prefix) over a call's "/<service>/<method>" path.

    "pkg.Service/Method" -> ("/pkg.Service/Method", False); "pkg.Service/*" and the bare
    "pkg.Service" -> ("/pkg.Service/", True) (kEdge compared a bare name with the full
    method, so it never matched); "pkg.*" -> ("/pkg.", True), a string prefix that also
    covers sub-packages; "*" -> ("/", True), every call. Raises InvalidValue (problem, fix).
    """
    if pattern == "*":
        return "/", True
    if pattern.startswith("/"):
        raise InvalidValue(
            f"{pattern!r} starts with '/'", f"write {pattern[1:]!r} (the path without '/')"
        )
    service, slash, method = pattern.partition("/")
    if not slash and service.endswith(".*"):
        package = service[:-2]
        _check_name(package, pattern, "package")
        return f"/{package}.", True
    _check_name(service, pattern, "service")
    if not slash:
        return f"/{service}/", True
    if method == "*":
        return f"/{service}/", True
    if "*" in method:
        raise InvalidValue(f"{pattern!r}: '*' must be the whole method name", _GLOB_FIX)
    if not _METHOD.fullmatch(method):
        raise InvalidValue(
            f"{pattern!r}: {method!r} is not a method name (letters, digits and '_')", _GLOB_FIX
        )
    return f"/{service}/{method}", False


def _check_name(name: str, pattern: str, what: str) -> None:
    if "*" in name:
        raise InvalidValue(
            f"{pattern!r}: '*' is only allowed as the whole method, after a package's last "
            "'.', or alone",
            _GLOB_FIX,
        )
    if not _DOTTED.fullmatch(name):
        raise InvalidValue(
            f"{pattern!r}: {name!r} is not a {what} name "
            "(identifiers of letters, digits and '_' joined by '.')",
            _GLOB_FIX,
        )


@dataclass(frozen=True, slots=True)
class GrpcMethodRule:
    """A route's gRPC method globs, any one matching is enough, like PathRules.

    `exact` holds "/pkg.Service/Method" paths, `prefixes` "/pkg.Service/" and "/pkg."
    prefixes, so a check is one set lookup and one C-level `str.startswith(tuple)`.
    `services` names every service a matching call can address (a call's first path
    segment), or is None when a package glob or "*" leaves it open: what a path index keys on.
    """

    match_all: bool
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    services: frozenset[str] | None

    def matches(self, path: str) -> bool:
        return self.match_all or path in self.exact or path.startswith(self.prefixes)


def compile_grpc_methods(patterns: Sequence[str]) -> GrpcMethodRule | None:
    """Compile method globs (see `parse_grpc_method`); None (no globs) means no gRPC condition.

    Raises InvalidValue for the first malformed glob.
    """
    if not patterns:
        return None
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        path, is_prefix = parse_grpc_method(pattern)
        if not is_prefix:
            exact.add(path)
        elif path not in prefixes:
            prefixes.append(path)
    match_all = "/" in prefixes
    # "/pkg." ends inside a segment, so it says nothing exact about the service; "/" is "*".
    open_ended = any(p.endswith(".") for p in prefixes) or match_all
    services = None if open_ended else frozenset(p.split("/")[1] for p in (*exact, *prefixes))
    return GrpcMethodRule(match_all, frozenset(exact), tuple(prefixes), services)
