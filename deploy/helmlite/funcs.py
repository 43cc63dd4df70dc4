"""The Sprig and Go template functions the chart uses, with Helm's semantics, and Go's truth.

Anything else is "not defined", so a template that needs more fails here instead of
rendering differently from `helm template`. `include` lives in the engine (it renders).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .goyaml import go_print, to_yaml
from .parse import TemplateError

__all__ = ["FUNCS", "Struct", "field_of", "go_type", "is_true"]


class Struct(dict[str, Any]):
    """A Go struct (`.Release`, `.Chart`): unlike a map, a missing field is an error."""


def is_true(v: Any) -> bool:
    """Go template truth: false, 0, nil, and empty strings, lists and maps are false."""
    if v is None:
        return False
    if isinstance(v, bool | int | float | str | list | dict | tuple):
        return bool(v)
    return True


def field_of(v: Any, name: str) -> Any:
    if isinstance(v, Struct):
        if name not in v:
            raise TemplateError(f"can't evaluate field {name} in type struct")
        return v[name]
    if isinstance(v, dict):
        return v.get(name)  # Helm renders with missingkey=zero
    if v is None:
        raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
    raise TemplateError(f"can't evaluate field {name} in type {go_type(v)}")


def go_type(v: Any) -> str:
    names = {bool: "bool", int: "float64", float: "float64", str: "string", list: "[]interface {}"}
    return names.get(type(v), "map[string]interface {}" if isinstance(v, dict) else "?")


# ---------------------------------------------------------------------------------------------
# Functions (Sprig semantics as Helm ships them).


def _empty(v: Any) -> bool:
    return not is_true(v)


def _strval(v: Any) -> str:
    return v if isinstance(v, str) else go_print(v)


def _indent(n: int, s: str) -> str:
    pad = " " * int(n)
    return pad + _strval(s).replace("\n", "\n" + pad)


def _quote(*args: Any) -> str:
    return " ".join(json.dumps(_strval(a), ensure_ascii=False) for a in args if a is not None)


def _trunc(n: int, s: str) -> str:
    n = int(n)
    return (s[:n] if n >= 0 else s[n:]) if len(s) > abs(n) else s


def _printf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    it = iter(args)
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1 : i + 2]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        try:
            arg = next(it)
        except StopIteration:
            out.append(f"%!{verb}(MISSING)")
            continue
        if (verb == "s" and isinstance(arg, str)) or verb == "v":
            out.append(_strval(arg))
        elif verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
            out.append(str(arg))
        elif verb == "q" and isinstance(arg, str):
            out.append(json.dumps(arg, ensure_ascii=False))
        else:
            raise TemplateError(f"printf: %{verb} of {go_type(arg)} is outside the subset")
    if next(it, None) is not None:
        raise TemplateError("printf: too many arguments")
    return "".join(out)


def _dig(*args: Any) -> Any:
    if len(args) < 3:
        raise TemplateError("dig needs keys, a default and a map")
    *keys, default, m = args
    for k in keys:
        if not isinstance(m, dict) or k not in m:
            return default
        m = m[k]
    return m


def _index(m: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(m, dict):
            m = m.get(k)
        elif isinstance(m, list) and isinstance(k, int) and 0 <= k < len(m):
            m = m[k]
        else:
            raise TemplateError(f"index of {go_type(m)} with {k!r}")
    return m


def _regex(pattern: str) -> re.Pattern[str]:
    if re.search(r"\(\?[P<]|\\[AZz]|\(\?[=!<]", pattern):
        raise TemplateError(f"regex {pattern!r} uses syntax RE2 lacks")
    return re.compile(pattern)


def _regex_replace_all(pattern: str, s: str, repl: str) -> str:
    if "$" in repl:
        raise TemplateError("regexReplaceAll: $-expansion is outside the subset")
    return _regex(pattern).sub(lambda _m: repl, s)


def _kind(v: Any) -> str:
    if v is None:
        return "nil"
    for t, name in ((bool, "bool"), (int, "number"), (float, "number"), (str, "string")):
        if isinstance(v, t):
            return name
    raise TemplateError(f"non-comparable type {go_type(v)}")


def _eq(a: Any, *bs: Any) -> bool:
    """Go's eq: true if a equals any of bs; different basic kinds cannot be compared."""
    if not bs:
        raise TemplateError("missing argument for comparison")
    for b in bs:
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            if "nil" in (ka, kb):
                continue
            raise TemplateError("incompatible types for comparison")
        if a == b:
            return True
    return False


def _required(msg: str, v: Any) -> Any:
    if v is None or (isinstance(v, str) and v == ""):
        raise TemplateError(msg)
    return v


def _fail(msg: str) -> Any:
    raise TemplateError(msg)


FUNCS: dict[str, Callable[..., Any]] = {
    "toYaml": to_yaml,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "quote": _quote,
    "default": lambda d, *given: d if not given or _empty(given[0]) else given[0],
    "required": _required,
    "fail": _fail,
    "printf": _printf,
    "trunc": _trunc,
    "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
    "replace": lambda old, new, s: s.replace(old, new),
    "contains": lambda sub, s: sub in s,
    "regexMatch": lambda pattern, s: _regex(pattern).search(s) is not None,
    "regexReplaceAll": _regex_replace_all,
    "dig": _dig,
    "index": _index,
    "eq": _eq,
    "not": lambda v: not is_true(v),
}
