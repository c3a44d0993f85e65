"""The FreeMarker 2.3 subset of Amplitude's Cohort Webhook templates: lexer, parser, evaluator.

Amplitude lets a customer reshape a webhook body with an Apache FreeMarker template over
``input`` (the default body as an object). cohortctl renders the subset Amplitude's docs use:

- ``${expr}`` interpolations; expressions are dotted paths (``input.users``), string, number
  and boolean literals, ``UtilClass.toJsonString(x)``, the built-ins ``?c``, ``?string``
  (also ``?string("yes", "no")`` on booleans), ``?json_string`` and ``?has_next``, the
  existence test ``??``, ``!``, ``==``/``!=``, ``&&``/``||`` and parentheses;
- ``<#list xs as x>`` with ``x_has_next`` (and ``x_index``), ``<#sep>`` (``</#sep>`` optional
  at the end of the list); ``<#if>``/``<#elseif>``/``<#else>``; ``<#-- comments -->``;
- FreeMarker's white-space stripping: a line holding only FTL tags and comments is dropped
  together with its indentation and line break.

Values print as FreeMarker 2.3.31 prints them with the ``en_US`` locale (``1,234.5`` for a
number, booleans only through ``?c``/``?string``). Anything outside the subset is a
:class:`TemplateError` naming the construct and the line. Real FreeMarker is the oracle the
tests compare with, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from cohortctl.errors import InputError
from cohortctl.partner.templates import rendered_json
from cohortctl.partner.webhooks.ftl_syntax import SUPPORTED, UTIL, Expr, TemplateError
from cohortctl.partner.webhooks.ftl_tree import Node, parse_template

__all__ = ["SUPPORTED", "TemplateError", "WebhookTemplate", "parse_template", "render"]

MISSING: Any = object()


class _Util:
    """The ``UtilClass`` object of Amplitude's templates."""


# --- evaluation -------------------------------------------------------------------------------


def _decimal(value: float, places: int, grouping: bool) -> str:
    """A float as the JDK's DecimalFormat prints it: HALF_EVEN on the shortest digits."""
    with localcontext() as ctx:
        ctx.prec = 800
        rounded = Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    text = format(rounded, ",f" if grouping else "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_number(value: int | float) -> str:
    """A number as ``${n}`` prints it (FreeMarker's ``number`` format, en_US)."""
    if isinstance(value, int):
        return f"{value:,}"
    return _decimal(value, 3, True)


def c_number(value: int | float) -> str:
    """A number as ``?c`` prints it (computer format, 2.3.31)."""
    if isinstance(value, int):
        return str(value)
    return _decimal(value, 16, False)


def json_string(text: str) -> str:
    """FreeMarker's ``?json_string``: escapes for inside a JSON string literal."""
    out: list[str] = []
    last = len(text) - 1
    for i, c in enumerate(text):
        code = ord(c)
        if ("?" <= c < "\x7f" and c != "\\") or c == " " or 0xA0 <= code < 0x2028:
            out.append(c)
            continue
        escape: str | None = None
        if code <= 0x1F:
            escape = {"\n": "\\n", "\r": "\\r", "\f": "\\f", "\b": "\\b", "\t": "\\t"}.get(c)
            escape = escape or f"\\u{code:04X}"
        elif c in '"\\':
            escape = "\\" + c
        elif c == "/" and (i == 0 or text[i - 1] == "<"):
            escape = "\\/"
        elif c == ">":
            prev = text[i - 1] if i else ""
            if i == 0 or (prev in "]-" and (i == 1 or text[i - 2] == prev)):
                escape = "\\u003E"
        elif c == "<":
            if i == last or text[i + 1] in "!?":
                escape = "\\u003C"
        elif 0x7F <= code <= 0x9F or code in (0x2028, 0x2029):
            escape = f"\\u{code:04X}"
        out.append(escape or c)
    return "".join(out)


def to_json_string(value: Any) -> str:
    """``UtilClass.toJsonString(x)``: ``x`` as compact JSON."""
    return json.dumps(
        None if value is MISSING else value, ensure_ascii=False, separators=(",", ":")
    )


@dataclass
class _Loop:
    var: str
    item: Any
    index: int
    has_next: bool


class _Renderer:
    def __init__(self, root: Mapping[str, Any], source: str) -> None:
        self.root = root
        self.source = source
        self.loops: list[_Loop] = []
        self.line = 1

    def fail(self, message: str) -> Any:
        raise TemplateError(self.source, self.line, message)

    def lookup(self, name: str) -> Any:
        for loop in reversed(self.loops):
            if name == loop.var:
                return loop.item
            if name == f"{loop.var}_has_next":
                return loop.has_next
            if name == f"{loop.var}_index":
                return loop.index
        if name == UTIL:
            return _Util()
        value = self.root.get(name, MISSING)
        return MISSING if value is None else value

    def eval(self, expr: Expr) -> Any:
        kind = expr.kind
        if kind == "lit":
            return expr.value
        if kind == "name":
            return self.lookup(expr.value)
        if kind == "paren":
            return self.eval(expr.args[0])
        if kind == "dot":
            target = self.defined(expr.args[0])
            if isinstance(target, _Util):
                if expr.value != "toJsonString":
                    self.fail(
                        f"{expr.text}: UtilClass only has toJsonString (supported: {SUPPORTED})"
                    )
                return target
            if not isinstance(target, dict):
                self.fail(f"{expr.text}: {expr.args[0].text} is {_kind(target)}, not an object")
            value = target.get(expr.value, MISSING)
            return MISSING if value is None else value
        if kind == "index":
            target = self.defined(expr.args[0])
            key = self.defined(expr.args[1])
            if isinstance(target, dict) and isinstance(key, str):
                value = target.get(key, MISSING)
            elif isinstance(target, list) and isinstance(key, int) and not isinstance(key, bool):
                value = target[key] if 0 <= key < len(target) else MISSING
            else:
                return self.fail(f"{expr.text}: cannot index {_kind(target)} by {_kind(key)}")
            return MISSING if value is None else value
        if kind == "call":
            target = self.defined(expr.args[0])
            if not isinstance(target, _Util):
                self.fail(f"{expr.text}: only UtilClass.toJsonString(x) can be called")
            if len(expr.args) != 2:
                self.fail(f"{expr.text}: toJsonString takes one argument")
            return to_json_string(self.defined(expr.args[1]))
        if kind == "builtin":
            return self.builtin(expr)
        if kind == "exists":
            inner = expr.args[0]
            if inner.kind == "paren":
                try:
                    return self.eval(inner) is not MISSING
                except TemplateError:
                    return False
            return self.eval(inner) is not MISSING
        if kind == "not":
            return not self.boolean(expr.args[0])
        if kind == "and":
            return self.boolean(expr.args[0]) and self.boolean(expr.args[1])
        if kind == "or":
            return self.boolean(expr.args[0]) or self.boolean(expr.args[1])
        if kind in ("eq", "ne"):
            left, right = self.defined(expr.args[0]), self.defined(expr.args[1])
            comparable = (
                (isinstance(left, str) and isinstance(right, str))
                or (isinstance(left, bool) and isinstance(right, bool))
                or (_is_number(left) and _is_number(right))
            )
            if not comparable:
                self.fail(f"cannot compare {_kind(left)} with {_kind(right)}")
            return (left == right) == (kind == "eq")
        return self.fail(f"unknown expression {expr.text!r}")  # pragma: no cover

    def defined(self, expr: Expr) -> Any:
        value = self.eval(expr)
        if value is MISSING:
            self.fail(
                f"{expr.text} is missing (null or not in the input); "
                f"test it with <#if {expr.text}??>"
            )
        return value

    def boolean(self, expr: Expr) -> bool:
        value = self.defined(expr)
        if not isinstance(value, bool):
            self.fail(f"{expr.text} is {_kind(value)}, expected a boolean")
        return value

    def builtin(self, expr: Expr) -> Any:
        name = expr.value
        target_expr, *arg_exprs = expr.args
        if name == "has_next":
            loop = next(
                (
                    lp
                    for lp in reversed(self.loops)
                    if target_expr.kind == "name" and lp.var == target_expr.value
                ),
                None,
            )
            if loop is None:
                self.fail(f"{expr.text}: ?has_next needs a loop variable")
            assert loop is not None
            return loop.has_next
        target = self.defined(target_expr)
        args = [self.defined(a) for a in arg_exprs]
        if name == "c":
            if isinstance(target, bool):
                return "true" if target else "false"
            if _is_number(target):
                return c_number(target)
            return self.fail(
                f"{expr.text}: ?c needs a number or boolean, {target_expr.text} is {_kind(target)}"
            )
        if name == "string":
            if args:
                if not isinstance(target, bool) or len(args) != 2:
                    self.fail(f"{expr.text}: ?string(yes, no) needs a boolean and two strings")
                return str(args[0] if target else args[1])
            if isinstance(target, bool):
                return "true" if target else "false"
            return self.text(target, target_expr)
        if args:
            self.fail(f"{expr.text}: ?{name} takes no arguments")
        return json_string(self.text(target, target_expr))

    def text(self, value: Any, expr: Expr) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return self.fail(
                f"${{{expr.text}}} is a boolean: print it with ?c (true/false) "
                'or ?string("yes", "no")'
            )
        if _is_number(value):
            return format_number(value)
        return self.fail(
            f"${{{expr.text}}} is {_kind(value)}: print it with "
            "UtilClass.toJsonString(x) or <#list>"
        )

    def render(self, nodes: Sequence[Node], out: list[str]) -> None:
        for node in nodes:
            self.line = node.begin_line
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "interp":
                assert node.expr is not None
                out.append(self.text(self.defined(node.expr), node.expr))
            elif node.kind == "if":
                for branch in node.children:
                    self.line = branch.begin_line
                    if branch.expr is None or self.boolean(branch.expr):
                        self.render(branch.children, out)
                        break
            elif node.kind == "sep":
                if self.loops and self.loops[-1].has_next:
                    self.render(node.children, out)
            elif node.kind == "list":
                assert node.expr is not None
                items = self.defined(node.expr)
                if not isinstance(items, list):
                    self.fail(f"<#list {node.expr.text}>: it is {_kind(items)}, not a list")
                for index, item in enumerate(items):
                    loop = _Loop(
                        node.var, MISSING if item is None else item, index, index < len(items) - 1
                    )
                    self.loops.append(loop)
                    try:
                        self.render(node.children, out)
                    finally:
                        self.loops.pop()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# FreeMarker's names for the kinds of value, for errors (bool before the numbers it subclasses)
_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "a list"),
    (dict, "an object"),
)  # fmt: skip


def _kind(value: Any) -> str:
    if value is MISSING:
        return "missing"
    return next((name for types, name in _KINDS if isinstance(value, types)), "a method")


def render(tree: Node, model: Mapping[str, Any], source: str = "template") -> str:
    """Render a parsed template over ``model`` (``{"input": ...}``) to text."""
    out: list[str] = []
    _Renderer(model, source).render(tree.children, out)
    return "".join(out)


@dataclass(frozen=True)
class WebhookTemplate:
    """A parsed ``--payload`` template of webhook mode: renders one body over ``input``."""

    source: str
    tree: Node

    @classmethod
    def parse(cls, text: str, source: str = "template") -> WebhookTemplate:
        """Parse ``text``; TemplateError names the construct and the line it does not take."""
        return cls(source, parse_template(text, source))

    @classmethod
    def from_file(cls, path: str) -> WebhookTemplate:
        """Read and parse a template file (InputError when unreadable)."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read template {path}: {exc}") from None
        return cls.parse(text, path)

    def render_text(self, body: Mapping[str, Any]) -> str:
        """The template rendered over ``input`` = ``body``, not checked."""
        return render(self.tree, {"input": body}, self.source)

    def render(self, body: Mapping[str, Any]) -> tuple[str, Any]:
        """The rendered text and its parsed JSON; TemplateError shows where it is not JSON."""

        def not_json(exc: json.JSONDecodeError, line: str) -> TemplateError:
            excerpt = line[max(0, exc.colno - 30) : exc.colno + 30] if line.strip() else ""
            return TemplateError(
                self.source,
                None,
                f"the rendered body is not JSON: {exc.msg} at line {exc.lineno} column "
                f"{exc.colno} of the output, near {excerpt!r}",
            )

        text = self.render_text(body)
        return text, rendered_json(text, not_json)
