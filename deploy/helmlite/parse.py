"""Go text/template parsing for the chart's subset: lexing actions, `{{-`/`-}}` trimming, and
a tree of text, actions, if / else if / else, range, with, define and template nodes.

Go's rules (https://pkg.go.dev/text/template): a trim marker is "{{- " or " -}}" with the
space ("{{-3}}" is a number) and removes all adjacent white space; comments are
`{{/* ... */}}`; fields chain (`.Values.a.b`, `$x.a`, `(pipeline).a`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cmd", "Node", "Pipe", "TemplateError", "parse"]


class TemplateError(Exception):
    """A template that does not parse or fails while rendering (Helm would fail too)."""

    located = False  # the message already names the file and line


_WS = " \t\r\n"


@dataclass
class _Tok:
    kind: str  # str num bool nil dot field var ident ( ) | , := = attached
    value: Any
    pos: int


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b"}


def _lex_string(src: str, i: int) -> tuple[str, int]:
    """A Go interpreted string literal starting at src[i] == '"'; returns (value, end)."""
    out: list[str] = []
    i += 1
    while i < len(src):
        c = src[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\n":
            break
        if c == "\\":
            e = src[i + 1 : i + 2]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
                continue
            width = {"x": 2, "u": 4, "U": 8}.get(e)
            if width is None:
                raise TemplateError(f"unsupported escape \\{e} in string literal")
            out.append(chr(int(src[i + 2 : i + 2 + width], 16)))
            i += 2 + width
            continue
        out.append(c)
        i += 1
    raise TemplateError("unterminated quoted string")


def _lex_action(src: str, i: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of one action starting after '{{' (and its trim marker); returns the tokens,
    the index after '}}', and whether the action ends with a right trim marker."""
    toks: list[_Tok] = []
    while True:
        if i >= len(src):
            raise TemplateError("unclosed action")
        if src.startswith(" -}}", i) or src.startswith("\t-}}", i) or src.startswith("\n-}}", i):
            return toks, i + 4, True
        if src.startswith("}}", i):
            return toks, i + 2, False
        c = src[i]
        if c in _WS:
            i += 1
            continue
        if c == '"':
            s, i = _lex_string(src, i)
            toks.append(_Tok("str", s, i))
            continue
        if c == "`":
            end = src.find("`", i + 1)
            if end < 0:
                raise TemplateError("unterminated raw string")
            toks.append(_Tok("str", src[i + 1 : end], i))
            i = end + 1
            continue
        if src.startswith(":=", i):
            toks.append(_Tok(":=", None, i))
            i += 2
            continue
        if c in "()|,=":
            toks.append(_Tok(c, None, i))
            i += 1
            if c == ")":
                m = _FIELDS.match(src, i)  # (pipeline).field
                if m:
                    toks.append(_Tok("attached", m.group()[1:].split("."), i))
                    i = m.end()
            continue
        if c == "$":
            m = _IDENT.match(src, i + 1)
            name = "$" + (m.group() if m else "")
            i = m.end() if m else i + 1
            m = _FIELDS.match(src, i)
            chain = m.group()[1:].split(".") if m else []
            i = m.end() if m else i
            toks.append(_Tok("var", (name, chain), i))
            continue
        if c == ".":
            m = _FIELDS.match(src, i)
            if m:
                toks.append(_Tok("field", m.group()[1:].split("."), i))
                i = m.end()
            else:
                toks.append(_Tok("dot", None, i))
                i += 1
            continue
        m = _NUMBER.match(src, i)
        if m and (c.isdigit() or (c in "+-" and i + 1 < len(src) and src[i + 1].isdigit())):
            text = m.group().replace("_", "")
            value: Any = float(text) if any(x in text for x in ".eE") and "x" not in text else None
            toks.append(_Tok("num", value if value is not None else int(text, 0), i))
            i = m.end()
            continue
        m = _IDENT.match(src, i)
        if m:
            word = m.group()
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true", i))
            elif word == "nil":
                toks.append(_Tok("nil", None, i))
            else:
                toks.append(_Tok("ident", word, i))
            i = m.end()
            continue
        raise TemplateError(f"unexpected {c!r} in action")


# ---------------------------------------------------------------------------------------------
# Parse tree.


@dataclass
class Cmd:
    args: list[Any]  # operand nodes: ("lit", v) ("dot",) ("field", chain) ("var", name, chain)
    #                  ("ident", name) ("pipe", Pipe, chain)


@dataclass
class Pipe:
    decl: list[str]
    op: str  # "" | ":=" | "="
    cmds: list[Cmd]


@dataclass
class Node:
    kind: str  # text action if range with template
    text: str = ""
    pipe: Pipe | None = None
    body: list[Node] = field(default_factory=list)
    elifs: list[tuple[Pipe, list[Node]]] = field(default_factory=list)
    else_body: list[Node] | None = None
    name: str = ""
    where: str = ""  # file:line, for errors


class PipeParser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise TemplateError("unexpected end of action")
        self.i += 1
        return tok

    def pipeline(self, allow_decl: bool = True, close: str | None = None) -> Pipe:
        decl: list[str] = []
        op = ""
        if allow_decl:
            j = self.i
            names: list[str] = []
            while j < len(self.toks) and self.toks[j].kind == "var" and not self.toks[j].value[1]:
                names.append(self.toks[j].value[0])
                j += 1
                if j < len(self.toks) and self.toks[j].kind == "," and len(names) == 1:
                    j += 1
                    continue
                break
            if names and j < len(self.toks) and self.toks[j].kind in (":=", "="):
                decl, op = names, self.toks[j].kind
                self.i = j + 1
        cmds = [self.command()]
        while (tok := self.peek()) is not None and tok.kind == "|":
            self.i += 1
            cmds.append(self.command())
        tok = self.peek()
        if close is not None:
            if tok is None or tok.kind != close:
                raise TemplateError("unclosed left paren")
        elif tok is not None:
            raise TemplateError(f"unexpected {tok.kind} {tok.value!r} in pipeline")
        return Pipe(decl, op, cmds)

    def command(self) -> Cmd:
        args: list[Any] = []
        while (tok := self.peek()) is not None and tok.kind not in ("|", ")"):
            self.i += 1
            if tok.kind in ("str", "num", "bool", "nil"):
                args.append(("lit", tok.value))
            elif tok.kind == "dot":
                args.append(("dot",))
            elif tok.kind == "field":
                args.append(("field", tok.value))
            elif tok.kind == "var":
                args.append(("var", tok.value[0], tok.value[1]))
            elif tok.kind == "ident":
                args.append(("ident", tok.value))
            elif tok.kind == "(":
                inner = self.pipeline(allow_decl=False, close=")")
                self.take()
                chain: list[str] = []
                nxt = self.peek()
                if nxt is not None and nxt.kind == "attached":
                    chain = nxt.value
                    self.i += 1
                args.append(("pipe", inner, chain))
            else:
                raise TemplateError(f"unexpected {tok.kind} in command")
        if not args:
            raise TemplateError("missing value for command")
        return Cmd(args)


def parse(src: str, name: str, defines: dict[str, list[Node]]) -> list[Node]:
    """Parse one template file; `define` blocks go to `defines`, the rest is returned."""
    root: list[Node] = []
    stack: list[tuple[Node, list[Node]]] = []  # (control node, list being filled)
    current = root
    i = 0
    pending_trim = False
    while True:
        j = src.find("{{", i)
        text = src[i:] if j < 0 else src[i:j]
        if pending_trim:
            text = text.lstrip(_WS)
        k = j + 2
        trim_left = j >= 0 and src[k : k + 1] == "-" and src[k + 1 : k + 2] in tuple(_WS)
        if trim_left:
            text = text.rstrip(_WS)
            k += 1
        if text:
            current.append(Node("text", text=text))
        if j < 0:
            break
        line = src.count("\n", 0, j) + 1
        where = f"{name}:{line}"
        rest = src[k:].lstrip(_WS) if trim_left else src[k:]
        if rest.startswith("/*"):  # a comment: {{/* ... */}}, with optional trim markers
            start = k + (len(src[k:]) - len(rest))
            end = src.find("*/", start)
            if end < 0:
                raise TemplateError(f"{where}: unclosed comment")
            after = end + 2
            pending_trim = src.startswith(" -}}", after)
            if pending_trim:
                after += 4
            elif src.startswith("}}", after):
                after += 2
            else:
                raise TemplateError(f"{where}: comment ends before closing delimiter")
            i = after
            continue
        try:
            toks, i, pending_trim = _lex_action(src, k)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        if not toks:
            raise TemplateError(f"{where}: missing value for command")
        head = toks[0]
        word = head.value if head.kind == "ident" else None
        try:
            if word in ("if", "range", "with"):
                node = Node(str(word), where=where)
                node.pipe = PipeParser(toks[1:]).pipeline(allow_decl=word == "range")
                current.append(node)
                stack.append((node, current))
                current = node.body
            elif word == "else":
                if not stack:
                    raise TemplateError("unexpected {{else}}")
                node = stack[-1][0]
                if len(toks) > 1 and toks[1].kind == "ident" and toks[1].value == "if":
                    if node.kind != "if" or node.else_body is not None:
                        raise TemplateError("{{else if}} outside if")
                    elif_body: list[Node] = []
                    node.elifs.append((PipeParser(toks[2:]).pipeline(False), elif_body))
                    current = elif_body
                else:
                    if len(toks) > 1:
                        raise TemplateError("unsupported {{else ...}} form")
                    node.else_body = []
                    current = node.else_body
            elif word == "end":
                if not stack:
                    raise TemplateError("unexpected {{end}}")
                node, current = stack.pop()
                if node.kind == "define":
                    current.remove(node)
                    defines[node.name] = node.body
            elif word == "define":
                if len(toks) != 2 or toks[1].kind != "str":
                    raise TemplateError("define needs one quoted name")
                node = Node("define", name=toks[1].value, where=where)
                current.append(node)
                stack.append((node, current))
                current = node.body
            elif word == "template":
                if len(toks) < 2 or toks[1].kind != "str":
                    raise TemplateError("template needs a quoted name")
                pipe = PipeParser(toks[2:]).pipeline(False) if len(toks) > 2 else None
                current.append(Node("template", name=toks[1].value, pipe=pipe, where=where))
            elif word in ("block", "break", "continue"):
                raise TemplateError(f"{{{{{word}}}}} is outside the supported subset")
            else:
                pipe = PipeParser(toks).pipeline()
                current.append(Node("action", pipe=pipe, where=where))
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
    if stack:
        raise TemplateError(f"{name}: unexpected EOF: {{{{{stack[-1][0].kind}}}}} never ended")
    return root
