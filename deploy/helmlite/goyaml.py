"""How Go and Helm print values: `{{ v }}` (fmt's %v) and Sprig's `toYaml`.

Helm's toYaml is sigs.k8s.io/yaml: the value goes through JSON and then go-yaml v2, so map keys
come out sorted (go-yaml's "natural" order), in block style, with sequences not indented under
their key, and strings quoted only when a plain scalar would read back as something else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from functools import cmp_to_key
from typing import Any

__all__ = ["NO_VALUE", "GoValueError", "go_print", "to_yaml"]

NO_VALUE = "<no value>"  # what Go prints for a missing map key; Helm then deletes it


class GoValueError(ValueError):
    """A value outside what the chart's templates print (Helm would print something odd)."""


def _go_float(f: float) -> str:
    """Go's `%v` of a float64: strconv's shortest 'g', which switches to the exponent form
    when the decimal exponent is < -4 or >= 6 (so 1000000 prints as 1e+06, as in Helm)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(map(str, digits))
    dp = len(ds) + exponent  # position of the decimal point
    exp = dp - 1
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{neg}{ds}{'0' * (dp - len(ds))}"
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def go_print(v: Any) -> str:
    """How `{{ v }}` prints v: numbers from values files are float64 in Helm."""
    if v is None:
        return NO_VALUE
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return _go_float(float(v)) if abs(v) < 2**53 else str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple):
        return "[" + " ".join(go_print(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_print(v[k])}" for k in sorted(v)) + "]"
    raise GoValueError(f"cannot print {type(v).__name__}")


_Y11_BOOL = re.compile(
    r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"
)
_Y11_NULL = re.compile(r"^(?:~|null|Null|NULL)$")
_Y11_INT = re.compile(r"^[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]+|[0-9][0-9_]*)$")
_Y11_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)$"
)


_TIMESTAMP = re.compile(
    r"^\d{4}-\d{1,2}-\d{1,2}"
    r"(?:[Tt ]\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d*)?(?:Z|[-+]\d{1,2}(?::\d{2})?)?)?$"
)


def _resolves_to_non_string(s: str) -> bool:
    """go-yaml quotes a string that would read back as another type: bools (YAML 1.1 words),
    null, numbers (base 60 too), timestamps, the merge key `<<`, and the empty string."""
    resolvers = (_Y11_BOOL, _Y11_NULL, _Y11_INT, _Y11_FLOAT, _TIMESTAMP)
    return s in ("", "<<") or any(r.match(s) for r in resolvers)


def _plain_allowed(s: str) -> bool:
    """libyaml's analysis for a plain scalar in block context (go-yaml v2's emitter)."""
    if s.startswith(("---", "...")) or s[0] in " \t" or s[-1] in " \t":
        return False
    for i, c in enumerate(s):
        nxt = s[i + 1] if i + 1 < len(s) else " "
        if not c.isprintable() or c in "\ufeff":
            return False
        if i == 0:
            if c in "#,[]{}&*!|>'\"%@`":
                return False
            if c in "?:-" and nxt in " \t":
                return False
        else:
            if c == ":" and nxt in " \t":
                return False
            if c == "#" and s[i - 1] in " \t":
                return False
    return True


_YAML_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _double_quoted(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif c in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[c])
        else:
            out.append(f"\\x{ord(c):02X}" if ord(c) < 256 else f"\\u{ord(c):04X}")
    return '"' + "".join(out) + '"'


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e21:
            return str(int(v))  # JSON wrote it without a fraction, go-yaml read an int
        return {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(_go_float(v), _go_float(v))
    if isinstance(v, str):
        if _resolves_to_non_string(v):
            return _double_quoted(v)
        if _plain_allowed(v):
            return v
        if all(c.isprintable() for c in v):
            return "'" + v.replace("'", "''") + "'"
        return _double_quoted(v)
    raise GoValueError(f"toYaml: unsupported type {type(v).__name__}")


def _go_yaml_key_less(a: str, b: str) -> bool:
    """go-yaml v2's keyList.Less: digit runs compare as numbers, letters after non-letters."""
    ar, br = a, b
    digits = False
    for i in range(min(len(ar), len(br))):
        if ar[i] == br[i]:
            digits = ar[i].isdigit()
            continue
        al, bl = ar[i].isalpha(), br[i].isalpha()
        if al and bl:
            return ar[i] < br[i]
        if al or bl:
            return al if digits else bl
        an = bn = 0
        if ar[i] == "0" or br[i] == "0":
            j = i - 1
            while j >= 0 and ar[j].isdigit():
                if ar[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(ar) and ar[ai].isdigit():
            an = an * 10 + int(ar[ai])
            ai += 1
        bi = i
        while bi < len(br) and br[bi].isdigit():
            bn = bn * 10 + int(br[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ar[i] < br[i]
    return len(ar) < len(br)


def _key_cmp(a: str, b: str) -> int:
    return -1 if _go_yaml_key_less(a, b) else (1 if _go_yaml_key_less(b, a) else 0)


_KEY_ORDER = cmp_to_key(_key_cmp)


def _yaml_lines(v: Any, indent: int) -> Iterator[str]:
    pad = " " * indent
    if isinstance(v, dict):
        for k in sorted(v, key=_KEY_ORDER):
            item = v[k]
            key = _scalar(str(k))
            if isinstance(item, dict) and item:
                yield f"{pad}{key}:"
                yield from _yaml_lines(item, indent + 2)
            elif isinstance(item, list) and item:
                yield f"{pad}{key}:"
                yield from _yaml_lines(item, indent)  # go-yaml v2: "- " under the key
            else:
                yield f"{pad}{key}: {_inline(item, indent + 2)}"
    elif isinstance(v, list):
        for item in v:
            if (isinstance(item, dict | list)) and item:
                inner = list(_yaml_lines(item, indent + 2))
                yield f"{pad}- {inner[0][indent + 2 :]}"
                yield from inner[1:]
            else:
                yield f"{pad}- {_inline(item, indent + 2)}"
    else:
        yield pad + _inline(v, indent + 2)  # a root block scalar is indented too


def _block_allowed(s: str) -> bool:
    """libyaml refuses a block scalar for trailing spaces, a space before a line break, or
    characters it cannot print; go-yaml then falls back to double quotes."""
    return not s.endswith(" ") and " \n" not in s and all(c.isprintable() or c == "\n" for c in s)


def _inline(v: Any, indent: int) -> str:
    """A scalar or empty collection on the current line; multi-line strings become blocks."""
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    if isinstance(v, str) and "\n" in v and _block_allowed(v):
        # Literal block; the chomping indicator keeps the exact number of final newlines.
        if not v.endswith("\n"):
            chomp, body = "-", v
        elif v.endswith("\n\n") or v == "\n":
            chomp, body = "+", v[:-1]
        else:
            chomp, body = "", v[:-1]
        hint = "2" if body[:1] in (" ", "\n") else ""
        pad = " " * indent
        lines = [(pad + ln) if ln else "" for ln in body.split("\n")]
        return f"|{hint}{chomp}\n" + "\n".join(lines)
    return _scalar(v)


def to_yaml(v: Any) -> str:
    """Helm's toYaml (without the trailing newline, as Helm trims it)."""
    if isinstance(v, dict | list) and not v:
        return "{}" if isinstance(v, dict) else "[]"
    return "\n".join(_yaml_lines(v, 0))
