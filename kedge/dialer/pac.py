"""The PAC file winch serves (`/proxy.pac`, `/wpad.dat`), rendered from the mapper's routes; pure.

A browser runs it as JavaScript (`FindProxyForURL(url, host)`), so this module writes a
program, and everything that comes from the config is data inside it: every string is a
`json.dumps` literal with `<`, `>`, `&` and U+2028/9 escaped too (hardening X7), never
spliced into code or comments. The JavaScript mirrors `Mapper.map(host, port)` for plain
HTTP requests: the same host normalisation, the same first-match walk, the same check
that a regexp route's substituted edge host is still a DNS name. Mapped names get
`PROXY <winch>; DIRECT`, all else `DIRECT`. The output depends only on the config and
the proxy address, so it can be cached and compared byte for byte.
"""

from __future__ import annotations

import json
import re

from kedge.dialer.config import (
    DialerConfig,
    DirectRule,
    RegexpRule,
    RouteProtocol,
    SuffixRule,
)
from kedge.dialer.mapping import parse_edge_url

__all__ = ["js_regexp_source", "render_pac"]

_PROXY = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")
_FLAG_CHARS = set("aiLmsux-")
# Escapes that mean the same in Python's `re` and a JavaScript RegExp without the `u` flag.
_SAME_ESCAPES = set("dDwWsSbBnrtfv0123456789xu")


def _js(value: object) -> str:
    """A JavaScript literal for JSON-able `value`, safe inside HTML and line-terminator-free."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True)  # escapes U+2028/9 as \u2028
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def js_regexp_source(pattern: str) -> str:
    """The JavaScript RegExp source for a Python pattern; ValueError for syntax JS reads otherwise.

    Only `(?P<name>` needs rewriting (to `(?<name>`). Refused: named backreferences
    `(?P=`, comments `(?#`, inline flags `(?i)`/`(?i:`, atomic groups `(?>`, conditionals
    `(?(`, possessive quantifiers `*+ ++ ?+ }+`, `{,n}`, and escapes such as `\\A`, `\\Z`,
    `\\a`, `\\N`, `\\U` that JavaScript lacks or reads as a plain letter.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    quantified = False  # the previous token was a quantifier (for possessive `*+`)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("the pattern ends with a lone backslash")
            e = pattern[i + 1]
            if e.isalnum() and e not in _SAME_ESCAPES:
                raise ValueError(f"the escape \\{e} is not read the same way by JavaScript")
            out.append(pattern[i : i + 2])
            i += 2
            quantified = False
            continue
        if in_class:
            if c == "]" and out[-1] in ("[", "[^"):
                # Python reads `[]a]` as a class holding ']' and 'a'; JS as an empty class.
                raise ValueError("a ']' first in a character class differs in JS; write \\]")
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
        elif c == "(" and pattern.startswith("(?", i):
            _check_group(pattern, i)
            if pattern.startswith("(?P<", i):
                out.append("(?<")
                i += 4
                quantified = False
                continue
        elif c in "*+?" or (c == "}" and _closes_quantifier(pattern, i)):
            if c == "+" and quantified:
                raise ValueError("possessive quantifiers (*+, ++, ?+, }+) do not exist in JS")
            if c == "?" and quantified:  # lazy `*?`: a modifier, not a new quantifier
                out.append(c)
                i += 1
                quantified = False
                continue
            out.append(c)
            i += 1
            quantified = True
            continue
        elif c == "{" and pattern.startswith("{,", i):
            raise ValueError("{,n} means {0,n} in Python but literal text in JS; write {0,n}")
        out.append(c)
        i += 1
        quantified = False
    if in_class:
        raise ValueError("unterminated character class")
    return "".join(out)


def _check_group(pattern: str, i: int) -> None:
    rest = pattern[i + 2 : i + 4]
    if rest.startswith("P<") or rest[:1] in (":", "=", "!") or rest in ("<=", "<!"):
        return
    if rest.startswith("P="):
        raise ValueError("named backreferences (?P=name) do not exist in JS; use \\1")
    if rest.startswith("#"):
        raise ValueError("(?#...) comments do not exist in JS; remove the comment")
    if rest.startswith(">"):
        raise ValueError("atomic groups (?>...) do not exist in JS")
    if rest.startswith("("):
        raise ValueError("conditional groups (?(...)) do not exist in JS")
    if rest[:1] in _FLAG_CHARS:
        raise ValueError(
            "inline flags such as (?i) do not work in a PAC file; hosts are lower case"
        )
    raise ValueError(f"unsupported group syntax {pattern[i : i + 4]!r}")


def _closes_quantifier(pattern: str, i: int) -> bool:
    start = pattern.rfind("{", 0, i)
    return start >= 0 and re.fullmatch(r"\{[0-9]*(,[0-9]*)?\}", pattern[start : i + 1]) is not None


def _rules(config: DialerConfig) -> list[list[object]]:
    """The routes a browser can use (not gRPC-only), as JSON data for the PAC program."""
    rules: list[list[object]] = []
    for route in config.routes:
        if route.protocol is RouteProtocol.GRPC:
            continue
        rule = route.rule
        if isinstance(rule, DirectRule):
            rules.append(["direct", route.name, rule.host, rule.port or 0])
        elif isinstance(rule, SuffixRule):
            rules.append(["suffix", route.name, rule.suffix, list(rule.ports)])
        else:
            assert isinstance(rule, RegexpRule)
            url = parse_edge_url(route.edge_url)
            rules.append(
                ["regexp", route.name, js_regexp_source(rule.pattern.pattern), url.host, url.port]
            )
    return rules


def render_pac(config: DialerConfig, proxy: str) -> str:
    """The PAC file for `config`, sending mapped names to `proxy` ("127.0.0.1:8070")."""
    if not _PROXY.fullmatch(proxy):
        raise ValueError(f"{proxy!r} is not a host:port proxy address")
    return _TEMPLATE.replace("@PROXY@", _js(f"PROXY {proxy}; DIRECT")).replace(
        "@RULES@", ",\n  ".join(_js(r) for r in _rules(config))
    )


# The program. `@RULES@` and `@PROXY@` are replaced by JSON literals only. ES5 plus RegExp
# named groups (Chrome 64+, Firefox 78+), since PAC engines lag behind browsers.
_TEMPLATE = r"""// Proxy auto-config generated by kedge winch from its mapper routes. Do not edit.
var KEDGE_PROXY = @PROXY@;
var KEDGE_RULES = [
  @RULES@
];
var KEDGE_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443};
var KEDGE_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
var KEDGE_COMPILED = [];
for (var k = 0; k < KEDGE_RULES.length; k++) {
  KEDGE_COMPILED.push(KEDGE_RULES[k][0] === "regexp"
    ? new RegExp("^(?:" + KEDGE_RULES[k][2] + ")$") : null);
}

// A DNS name (RFC 1123 labels, '_' allowed) whose last label is not numeric, or null.
function kedgeName(host) {
  if (!/^[\x00-\x7f]*$/.test(String(host))) return null;
  var name = String(host).toLowerCase();
  if (name.charAt(name.length - 1) === ".") name = name.substring(0, name.length - 1);
  if (name.length === 0 || name.length > 253) return null;
  var labels = name.split(".");
  for (var i = 0; i < labels.length; i++) {
    if (!KEDGE_LABEL.test(labels[i])) return null;
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return null;
  return name;
}

function kedgeFill(template, groups) {
  return template.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, function (all, key) {
    var value = groups ? groups[key] : undefined;
    return value === undefined ? "" : value;
  });
}

function kedgeMatches(r, re, host, port) {
  if (r[0] === "direct") return host === r[2] && (r[3] === 0 || r[3] === port);
  if (r[0] === "suffix") {
    var end = host.length - r[2].length;
    return end > 0 && host.substring(end) === r[2] &&
      (r[3].length === 0 || r[3].indexOf(port) >= 0);
  }
  var m = re.exec(host + ":" + port);
  if (m === null) return false;
  var edgeHost = kedgeFill(r[3], m.groups);
  var edgePort = kedgeFill(r[4], m.groups);
  if (kedgeName(edgeHost) !== edgeHost) return false;
  if (!/^[0-9]{1,5}$/.test(edgePort)) return false;
  var p = parseInt(edgePort, 10);
  return p >= 1 && p <= 65535;
}

// scheme "://" [userinfo "@"] host [":" port]; the host itself comes as FindProxyForURL's own.
var KEDGE_URL = /^([a-zA-Z][\w+.-]*):\/\/(?:[^/?#@]*@)?(?:\[[^\]]*\]|[^/?#:]*)(?::([0-9]*))?/;

function FindProxyForURL(url, host) {
  var m = KEDGE_URL.exec(url);
  if (m === null) return "DIRECT";
  var scheme = m[1].toLowerCase();
  if (!KEDGE_DEFAULT_PORTS.hasOwnProperty(scheme)) return "DIRECT";
  var port = m[2] ? parseInt(m[2], 10) : KEDGE_DEFAULT_PORTS[scheme];
  if (!(port >= 1 && port <= 65535)) return "DIRECT";
  var name = kedgeName(host);
  if (name === null) return "DIRECT";
  for (var i = 0; i < KEDGE_RULES.length; i++) {
    if (kedgeMatches(KEDGE_RULES[i], KEDGE_COMPILED[i], name, port)) return KEDGE_PROXY;
  }
  return "DIRECT";
}
"""
