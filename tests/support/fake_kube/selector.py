"""Label and field selectors as the Kubernetes API parses and applies them (pure).

Label selectors follow apimachinery's `labels.Parse`: comma-separated requirements `k=v`, `k==v`,
`k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, and the numeric `k>n`, `k<n`. `!=` and `notin`
also match objects without the label, as upstream. Field selectors are `f=v`, `f==v`, `f!=v`
over the fields a resource supports (every resource supports `metadata.name` and
`metadata.namespace`); an unsupported field is an error, as the real server answers 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "EVERYTHING",
    "METADATA_FIELDS",
    "FieldRequirement",
    "FieldSelector",
    "LabelRequirement",
    "LabelSelector",
    "Selector",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]

LabelOperator = Literal["=", "!=", "in", "notin", "exists", "!exists", ">", "<"]
FieldOperator = Literal["=", "!="]
FieldGetter = Callable[[Mapping[str, Any]], str]

# A qualified name: an optional DNS-subdomain prefix and a 63-character name (validation.go).
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE_RE = re.compile(rf"(?:{_NAME})?")
_EXISTS = re.compile(rf"\s*({_KEY})\s*")
_NOT_EXISTS = re.compile(rf"\s*!\s*({_KEY})\s*")
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\((.*)\)\s*")
_COMPARE = re.compile(rf"\s*({_KEY})\s*(==|!=|=|>|<)\s*(\S*)\s*")


class SelectorError(ValueError):
    """A selector that does not parse; the server answers 400 BadRequest with the message."""


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: LabelOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        match self.operator:
            case "exists":
                return present
            case "!exists":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case ">" | "<":
                # Upstream compares as integers and an unparsable label value never matches.
                try:
                    number = int(value)
                except ValueError:
                    return False
                limit = int(self.values[0])
                return present and (number > limit if self.operator == ">" else number < limit)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: FieldOperator
    value: str


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any], fields: Mapping[str, FieldGetter]) -> bool:
        for req in self.requirements:
            actual = fields[req.field](obj)
            if (actual == req.value) != (req.operator == "="):
                return False
        return True


@dataclass(frozen=True)
class Selector:
    """Both selectors of one list or watch request."""

    labels: LabelSelector = LabelSelector()
    fields: FieldSelector = FieldSelector()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata", {})
        return self.labels.matches(metadata.get("labels")) and self.fields.matches(
            obj, METADATA_FIELDS
        )


EVERYTHING = Selector()

METADATA_FIELDS: Mapping[str, FieldGetter] = {
    "metadata.name": lambda obj: str(obj.get("metadata", {}).get("name", "")),
    "metadata.namespace": lambda obj: str(obj.get("metadata", {}).get("namespace", "")),
}


def _split_top_level(text: str) -> list[str]:
    """Split on the commas outside parentheses (those inside separate a set's values)."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.fullmatch(value):
        raise SelectorError(f"unable to parse requirement: invalid label value: {value!r}")
    return value


def _parse_requirement(text: str) -> LabelRequirement:
    if m := _NOT_EXISTS.fullmatch(text):
        return LabelRequirement(m[1], "!exists")
    if m := _SET.fullmatch(text):
        values = tuple(_check_value(v.strip()) for v in m[3].split(","))
        if values == ("",):
            raise SelectorError(
                f"for 'in', 'notin' operators, values set can't be empty: {text.strip()!r}"
            )
        return LabelRequirement(m[1], "in" if m[2] == "in" else "notin", values)
    if m := _COMPARE.fullmatch(text):
        key, op, value = m[1], m[2], _check_value(m[3])
        if op in (">", "<"):
            if not re.fullmatch(r"-?[0-9]+", value):
                raise SelectorError(
                    f"for 'Gt', 'Lt' operators, the value must be an integer: {text.strip()!r}"
                )
            return LabelRequirement(key, ">" if op == ">" else "<", (value,))
        return LabelRequirement(key, "!=" if op == "!=" else "=", (value,))
    if m := _EXISTS.fullmatch(text):
        return LabelRequirement(m[1], "exists")
    raise SelectorError(f"unable to parse requirement: {text.strip()!r}")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a `labelSelector` query value; the empty string selects everything."""
    if not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_parse_requirement(part) for part in _split_top_level(text)))


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` except where a backslash escapes it (fields.ParseSelector)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char + next(chars, ""))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(
    text: str, supported: Mapping[str, FieldGetter] = METADATA_FIELDS
) -> FieldSelector:
    """Parse a `fieldSelector` query value against the fields the resource supports."""
    if not text.strip():
        return FieldSelector()
    requirements: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|!=|=)(.*)", part)
        if m is None:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {part!r}")
        field, op, value = m[1], m[2], _unescape(m[3])
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, "!=" if op == "!=" else "=", value))
    return FieldSelector(tuple(requirements))
