"""Executing parsed templates: dot, variables scoped to their block, pipelines, and `include`.

Helm renders with missingkey=zero and then deletes every "<no value>" from the output, so a
missing value prints nothing; a field of a missing value is an error ("nil pointer").
"""

from __future__ import annotations

from typing import Any

from .funcs import FUNCS, field_of, is_true
from .goyaml import NO_VALUE, GoValueError, go_print
from .parse import Cmd, Node, Pipe, TemplateError, parse

__all__ = ["Engine"]

_MISSING: Any = object()  # no piped value (None is a value: nil)


class _Scope:
    def __init__(self, root: Any) -> None:
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def declare(self, name: str, v: Any) -> None:
        self.frames[-1][name] = v

    def assign(self, name: str, v: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = v
                return
        raise TemplateError(f"undefined variable: {name}")

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable: {name}")


class Engine:
    """Templates parsed from several files sharing one set of `define`d names (as in Helm)."""

    def __init__(self) -> None:
        self._defines: dict[str, list[Node]] = {}
        self._files: dict[str, list[Node]] = {}
        self._depth = 0

    def add(self, name: str, src: str) -> None:
        self._files[name] = parse(src, name, self._defines)

    def render(self, name: str, data: Any) -> str:
        """Render file `name` with `data` as dot; missing values print nothing (Helm)."""
        return self._exec(self._files[name], data, _Scope(data)).replace(NO_VALUE, "")

    def include(self, name: str, data: Any) -> str:
        body = self._defines.get(name)
        if body is None:
            raise TemplateError(f'no template "{name}" associated with template')
        self._depth += 1
        try:
            if self._depth > 1000:
                raise TemplateError("include: recursion too deep")
            return self._exec(body, data, _Scope(data))
        finally:
            self._depth -= 1

    def _exec(self, nodes: list[Node], dot: Any, scope: _Scope) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            try:
                out.append(self._exec_node(node, dot, scope))
            except TemplateError as exc:
                if exc.located:
                    raise
                located = TemplateError(f"{node.where}: {exc}")
                located.located = True
                raise located from None
        return "".join(out)

    def _exec_node(self, node: Node, dot: Any, scope: _Scope) -> str:
        assert node.pipe is not None or node.kind == "template"
        if node.kind == "action":
            assert node.pipe is not None
            v = self._pipe(node.pipe, dot, scope)
            if node.pipe.decl:
                return ""
            try:
                return go_print(v)
            except GoValueError as exc:
                raise TemplateError(str(exc)) from None
        if node.kind == "template":
            data = self._pipe(node.pipe, dot, scope) if node.pipe else None
            return self.include(node.name, data)
        if node.kind == "if":
            assert node.pipe is not None
            for pipe, body in [(node.pipe, node.body), *node.elifs]:
                if is_true(self._pipe(pipe, dot, scope)):
                    return self._block(body, dot, scope)
            return self._block(node.else_body or [], dot, scope)
        if node.kind == "with":
            assert node.pipe is not None
            v = self._pipe(node.pipe, dot, scope)
            if is_true(v):
                return self._block(node.body, v, scope)
            return self._block(node.else_body or [], dot, scope)
        if node.kind == "range":
            return self._range(node, dot, scope)
        raise TemplateError(f"unknown node {node.kind}")

    def _block(self, body: list[Node], dot: Any, scope: _Scope) -> str:
        scope.push()
        try:
            return self._exec(body, dot, scope)
        finally:
            scope.pop()

    def _range(self, node: Node, dot: Any, scope: _Scope) -> str:
        assert node.pipe is not None
        decl = node.pipe.decl
        pipe = Pipe([], "", node.pipe.cmds)
        v = self._pipe(pipe, dot, scope)
        if isinstance(v, dict):
            items: list[tuple[Any, Any]] = [(k, v[k]) for k in sorted(v)]
        elif isinstance(v, list | tuple):
            items = list(enumerate(v))
        elif v is None:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {go_print(v)}")
        if not items:
            return self._block(node.else_body or [], dot, scope)
        out = []
        for key, elem in items:
            scope.push()
            try:
                if len(decl) == 1:
                    scope.declare(decl[0], elem)
                elif len(decl) == 2:
                    scope.declare(decl[0], key)
                    scope.declare(decl[1], elem)
                out.append(self._exec(node.body, elem, scope))
            finally:
                scope.pop()
        return "".join(out)

    def _pipe(self, pipe: Pipe, dot: Any, scope: _Scope) -> Any:
        v: Any = _MISSING
        for cmd in pipe.cmds:
            v = self._cmd(cmd, dot, scope, v)
        if pipe.op == ":=":
            scope.declare(pipe.decl[0], v)
        elif pipe.op == "=":
            scope.assign(pipe.decl[0], v)
        return v

    def _cmd(self, cmd: Cmd, dot: Any, scope: _Scope, piped: Any) -> Any:
        head = cmd.args[0]
        if head[0] == "ident":
            name = head[1]
            rest = cmd.args[1:]
            if name == "or":  # short-circuit, returning the deciding operand
                if not rest and piped is _MISSING:
                    raise TemplateError(f"{name}: missing arguments")
                v: Any = None
                for a in rest:
                    v = self._arg(a, dot, scope)
                    if is_true(v):
                        return v
                return v if piped is _MISSING else piped
            args = [self._arg(a, dot, scope) for a in rest]
            if piped is not _MISSING:
                args.append(piped)
            if name == "include":
                if len(args) != 2:
                    raise TemplateError("include needs a name and a value")
                return self.include(args[0], args[1])
            fn = FUNCS.get(name)
            if fn is None:
                raise TemplateError(f'function "{name}" not defined (outside the subset)')
            try:
                return fn(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, AttributeError, GoValueError) as exc:
                raise TemplateError(f"error calling {name}: {exc}") from None
        if len(cmd.args) > 1 or piped is not _MISSING:
            raise TemplateError("can't give argument to non-function")
        return self._arg(head, dot, scope)

    def _arg(self, a: tuple[Any, ...], dot: Any, scope: _Scope) -> Any:
        kind = a[0]
        if kind == "lit":
            return a[1]
        if kind == "dot":
            return dot
        if kind == "field":
            return self._chain(dot, a[1])
        if kind == "var":
            return self._chain(scope.get(a[1]), a[2])
        if kind == "ident":
            return self._cmd(Cmd([a]), dot, scope, _MISSING)
        if kind == "pipe":
            return self._chain(self._pipe(a[1], dot, scope), a[2])
        raise TemplateError(f"bad operand {kind}")

    @staticmethod
    def _chain(v: Any, chain: list[str]) -> Any:
        for name in chain:
            v = field_of(v, name)
        return v
