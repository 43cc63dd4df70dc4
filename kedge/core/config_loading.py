"""YAML -> typed values: a key-path-tracking walker, typed getters and value parsers.

Edge-agnostic: it knows YAML, durations, sizes, addresses and DNS names, never routes or
backends. Every failure is a `ConfigError(file, key_path, problem, fix)` whose key path
(`routes[3].match.host`) points at the offending value and whose fix says what to write
instead. The pure parsers (`parse_duration`, `parse_size`, `parse_address`) raise
`InvalidValue` because they do not know where a value came from; `Node` adds the where.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import yaml

from kedge.core.errors import ConfigError

__all__ = [
    "Fields",
    "InvalidValue",
    "Node",
    "claim_name",
    "closest",
    "dataclass_keys",
    "existing_file",
    "header_name",
    "is_dns_name",
    "load_yaml",
    "node_list",
    "parse_address",
    "parse_duration",
    "parse_size",
    "parse_yaml_text",
    "unknown_key_error",
]

E = TypeVar("E", bound=Enum)
T = TypeVar("T")


class InvalidValue(ValueError):
    """A value that cannot be parsed; `Node` turns it into a ConfigError at its key path."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


# --- YAML -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys.

    Plain PyYAML keeps the last value silently; for a config that hides a mistake (two
    `routes:` blocks, the first one ignored). Merge keys (`<<`) still override as usual.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: the base class reports it properly
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml_text(text: str, source: str) -> Node:
    """Parse one YAML document; a syntax error names the file, line and column."""
    try:
        value: object = yaml.load(text, Loader=_StrictLoader)  # _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (exc.problem, exc.context) if p) or "invalid YAML"
        raise ConfigError(
            source, where, f"YAML syntax error: {problem}", "correct the YAML near that line"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"YAML error: {exc}", "correct the YAML") from None
    return Node(value, source)


def load_yaml(path: str) -> Node:
    """Read and parse a YAML file; unreadable files are ConfigErrors too."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(
            path,
            "",
            f"cannot read the file: {exc.strerror or exc}",
            "check the path and its permissions",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"not UTF-8 text: {exc.reason}", "save the file as UTF-8"
        ) from None
    return parse_yaml_text(text, path)


# --- value parsers (pure) ---------------------------------------------------------------

_DURATION_FIX = 'write a duration such as "250ms", "10s", "1m", "1h30m", or a number of seconds'
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# "ms" must come before "m" so that "250ms" is not read as 250 minutes and an "s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def parse_duration(value: object) -> float:
    """A non-negative duration in float seconds: "250ms", "10s", "1m", "1h30m", or a number."""
    if isinstance(value, bool):
        raise InvalidValue("expected a duration, got a boolean", _DURATION_FIX)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _DURATION_WHOLE.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        elif text.startswith("-"):
            raise InvalidValue(f"negative duration {value!r}", _DURATION_FIX)
        else:
            raise InvalidValue(f"{value!r} is not a duration", _DURATION_FIX)
    else:
        raise InvalidValue(f"expected a duration, got {_kind(value)}", _DURATION_FIX)
    if not math.isfinite(seconds):
        raise InvalidValue(f"duration {value!r} is not finite", _DURATION_FIX)
    if seconds < 0:
        raise InvalidValue(f"negative duration {value!r}", _DURATION_FIX)
    return seconds


_SIZE_FIX = 'write a whole number of bytes or a size such as "512B", "64KiB", "16MiB", "10KB"'
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_SIZE = re.compile(r"(\d+)\s*([A-Za-z]*)")


def parse_size(value: object) -> int:
    """A non-negative size in int bytes: 1024, "512B", "16KiB" (1024-based), "10KB" (1000-based)."""
    if isinstance(value, bool):
        raise InvalidValue("expected a size, got a boolean", _SIZE_FIX)
    if isinstance(value, int):
        if value < 0:
            raise InvalidValue(f"negative size {value}", _SIZE_FIX)
        return value
    if isinstance(value, float):
        raise InvalidValue(f"size {value!r} is not a whole number of bytes", _SIZE_FIX)
    if not isinstance(value, str):
        raise InvalidValue(f"expected a size, got {_kind(value)}", _SIZE_FIX)
    m = _SIZE.fullmatch(value.strip())
    if m is None:
        problem = "negative size" if value.strip().startswith("-") else "not a size"
        raise InvalidValue(f"{problem} {value!r}", _SIZE_FIX)
    number, unit = m.groups()
    if unit not in _SIZE_UNITS:
        units = [u for u in _SIZE_UNITS if u]
        near = [u for u in units if u.lower() == unit.lower()] or closest(unit, units, 2)
        hint = f"did you mean {' or '.join(repr(u) for u in near)}? " if near else ""
        raise InvalidValue(
            f"unknown size unit {unit!r} in {value!r}", f"{hint}units: {', '.join(units)}"
        )
    return int(number) * _SIZE_UNITS[unit]


_ADDRESS_FIX = 'write "host:port", e.g. "127.0.0.1:8080", "[::1]:8080" or "svc.example.test:80"'
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def is_dns_name(text: str) -> bool:
    """A syntactically valid DNS name (RFC 1123 labels, plus '_' as SRV names use it).

    One trailing dot (an absolute name) is accepted; the comparison is case-insensitive.
    """
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def parse_address(value: object, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """ "host:port" -> (host, port); IPv6 literals in brackets, returned without them.

    The port is 1..65535; 0 ("pick a free port") only if `allow_port_zero`. The host is an
    IP literal or a DNS name, lower-cased.
    """
    if not isinstance(value, str):
        raise InvalidValue(f"expected an address, got {_kind(value)}", _ADDRESS_FIX)
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise InvalidValue(f"{value!r} has no port after the IPv6 literal", _ADDRESS_FIX)
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidValue(f"{host!r} is not an IPv6 address", _ADDRESS_FIX) from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise InvalidValue(f"{value!r} has no port", _ADDRESS_FIX)
        if ":" in host:
            raise InvalidValue(
                f"{value!r}: an IPv6 address needs brackets", f'write "[{host}]:{port_text}"'
            )
        if not host:
            raise InvalidValue(
                f"{value!r} has no host",
                f'write "127.0.0.1:{port_text}" (this machine only) or "0.0.0.0:{port_text}"',
            )
        host = host.lower()
        if not _is_ip(host) and (
            not is_dns_name(host) or host.replace(".", "").isdigit()  # "300.1.2.3", "127.1"
        ):
            raise InvalidValue(f"{host!r} is neither an IP address nor a DNS name", _ADDRESS_FIX)
    if not port_text.isdigit() or not port_text.isascii():
        raise InvalidValue(f"port {port_text!r} is not a number", _ADDRESS_FIX)
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise InvalidValue(f"port {port} is out of range", f"use a port from {low} to 65535")
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- key checks -------------------------------------------------------------------------


def closest(word: str, choices: Collection[str], n: int = 1) -> list[str]:
    """The choices most like `word` (difflib ratio >= 0.6), best first."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def unknown_key_error(node: Node, key: str, allowed: Collection[str]) -> ConfigError:
    """ConfigError for `key` under `node`: names it and suggests the closest valid key."""
    valid = ", ".join(sorted(allowed))
    near = closest(key, allowed)
    fix = f"did you mean {near[0]!r}? valid keys here: {valid}" if near else f"valid keys: {valid}"
    return node.child(key).error(f"unknown key {key!r}", fix)


def _kind(value: object) -> str:
    """How a YAML value reads to an operator, for "expected X, got Y" messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- the walker -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value plus where it came from: the file and the key path to it."""

    value: object
    file: str
    path: str = ""

    def child(self, key: str) -> Node:
        """The node for `key` under this mapping (value None if absent)."""
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return Node(value, self.file, f"{self.path}.{key}" if self.path else key)

    def item(self, index: int) -> Node:
        value = self.value[index] if isinstance(self.value, list) else None
        return Node(value, self.file, f"{self.path}[{index}]")

    def error(self, problem: str, fix: str) -> ConfigError:
        """A ConfigError at this node; the caller raises it."""
        return ConfigError(self.file, self.path or "(top level)", problem, fix)

    def _expected(self, what: str, fix: str) -> ConfigError:
        return self.error(f"expected {what}, got {_kind(self.value)}", fix)

    def as_str(self, *, allow_empty: bool = False) -> str:
        if not isinstance(self.value, str):
            raise self._expected(
                "a string", "write a string; quote it if YAML reads it as another type"
            )
        if not self.value and not allow_empty:
            raise self.error("must not be empty", "write a value or remove the key")
        return self.value

    def as_int(self, *, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self._expected("a whole number", "write a whole number without quotes")
        return self._in_range(self.value, minimum, maximum)

    def as_float(self, *, minimum: float | None = None) -> float:
        value = self.value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self._expected("a number", "write a number without quotes")
        if minimum is not None and value < minimum:
            raise self.error(f"{value} is below the minimum {minimum}", f"use at least {minimum}")
        return float(value)

    def as_bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self._expected("true or false", "write true or false without quotes")
        return self.value

    def as_list(self, *, allow_empty: bool = True) -> list[Node]:
        if not isinstance(self.value, list):
            raise self._expected(
                "a list", "write a YAML list (lines starting with '- ', or [a, b])"
            )
        if not self.value and not allow_empty:
            raise self.error("the list is empty", "add at least one entry")
        return [self.item(i) for i in range(len(self.value))]

    def as_mapping(self, allowed: Collection[str] | None = None) -> Fields:
        """This node as a mapping with string keys; keys outside `allowed` are errors."""
        if not isinstance(self.value, dict):
            raise self._expected("a mapping", "write `key: value` lines indented under this key")
        for key in self.value:
            if not isinstance(key, str):
                raise self.error(f"key {key!r} is not a string", f"quote it: '{key}'")
            if allowed is not None and key not in allowed:
                raise unknown_key_error(self, key, allowed)
        return Fields(self, self.value)

    def as_enum(self, enum_type: type[E]) -> E:
        choices = [str(member.value) for member in enum_type]
        if isinstance(self.value, str):
            for member in enum_type:
                if member.value == self.value:
                    return member
        near = closest(str(self.value), choices)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise self.error(
            f"{self.value!r} is not a valid choice", f"{hint}use one of: {', '.join(choices)}"
        )

    def as_duration(self, *, allow_zero: bool = True) -> float:
        """Float seconds; zero allowed unless `allow_zero` is False."""
        seconds = self._parsed(parse_duration)
        if seconds == 0 and not allow_zero:
            raise self.error("must be greater than zero", 'use a positive duration such as "10s"')
        return seconds

    def as_size(self, *, allow_zero: bool = True) -> int:
        """Int bytes; zero allowed unless `allow_zero` is False."""
        size = self._parsed(parse_size)
        if size == 0 and not allow_zero:
            raise self.error("must be greater than zero", 'use a positive size such as "64KiB"')
        return size

    def as_address(self, *, allow_port_zero: bool = False) -> tuple[str, int]:
        """(host, port) from "host:port"; see `parse_address`."""
        try:
            return parse_address(self.value, allow_port_zero=allow_port_zero)
        except InvalidValue as exc:
            raise self.error(exc.problem, exc.fix) from None

    def as_port(self, *, allow_zero: bool = False) -> int:
        return self.as_int(minimum=0 if allow_zero else 1, maximum=65535)

    def _parsed(self, parse: Callable[[object], T]) -> T:
        try:
            return parse(self.value)
        except InvalidValue as exc:
            raise self.error(exc.problem, exc.fix) from None

    def _in_range(self, value: int, minimum: int | None, maximum: int | None) -> int:
        if minimum is not None and value < minimum:
            raise self.error(f"{value} is below the minimum {minimum}", f"use at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(f"{value} is above the maximum {maximum}", f"use at most {maximum}")
        return value


@dataclass(frozen=True, slots=True)
class Fields:
    """The keys of a mapping node. An explicit null counts as absent (YAML `key:` with no value)."""

    node: Node
    values: Mapping[str, object]

    def __contains__(self, key: str) -> bool:
        return self.values.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def is_null(self, key: str) -> bool:
        """The key is written but has no value, e.g. `tls:` alone on a line."""
        return key in self.values and self.values[key] is None

    def get(self, key: str) -> Node | None:
        return self.node.child(key) if key in self else None

    def require(self, key: str, fix: str) -> Node:
        if key not in self:
            raise self.node.child(key).error(f"missing required key {key!r}", fix)
        return self.node.child(key)

    # Getters with a default: the default comes from the caller (from a dataclass), never here.

    def get_str(self, key: str, default: str, *, allow_empty: bool = False) -> str:
        n = self.get(key)
        return default if n is None else n.as_str(allow_empty=allow_empty)

    def get_int(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        n = self.get(key)
        return default if n is None else n.as_int(minimum=minimum, maximum=maximum)

    def get_bool(self, key: str, default: bool) -> bool:
        n = self.get(key)
        return default if n is None else n.as_bool()

    def get_enum(self, key: str, enum_type: type[E], default: E) -> E:
        n = self.get(key)
        return default if n is None else n.as_enum(enum_type)

    def get_duration(self, key: str, default: float, *, allow_zero: bool = True) -> float:
        n = self.get(key)
        return default if n is None else n.as_duration(allow_zero=allow_zero)

    def get_size(self, key: str, default: int, *, allow_zero: bool = True) -> int:
        n = self.get(key)
        return default if n is None else n.as_size(allow_zero=allow_zero)


def dataclass_keys(cls: type) -> tuple[str, ...]:
    """The YAML keys of a section whose keys are exactly its dataclass's field names."""
    return tuple(f.name for f in dataclasses.fields(cls))


def node_list(node: Node | None) -> list[Node]:
    """The items of an optional list node (none when the key is absent)."""
    return [] if node is None else node.as_list()


def claim_name(seen: dict[str, str], name: str, node: Node, what: str) -> None:
    """Record a name; a second use is an error naming where the first one is."""
    if name in seen:
        raise node.error(
            f"duplicate {what} name {name!r} (also {seen[name]})", f"give each {what} a unique name"
        )
    seen[name] = node.path


def existing_file(node: Node, base_dir: str | None) -> str:
    """The path in `node`, anchored at `base_dir` when relative; it must be a file."""
    path = os.path.expanduser(node.as_str())
    if base_dir is not None and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    if not os.path.isfile(path):
        where = f" (relative paths are read from {base_dir})" if base_dir else ""
        raise node.error(
            f"file {path!r} does not exist{where}", "give the path of an existing file"
        )
    return path


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # token, RFC 9110 §5.6.2


def header_name(text: str, node: Node) -> str:
    """A header field name, lower-cased (HTTP/2 and the edge's headers are lower-case)."""
    name = text.lower()
    if not _HEADER_NAME.fullmatch(name):
        raise node.error(
            f"{text!r} is not a valid header name", "use letters, digits and '-', e.g. x-env"
        )
    return name
