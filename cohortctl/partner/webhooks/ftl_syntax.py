"""The syntax of the FreeMarker subset: tokens of a template and expression trees.

See :mod:`cohortctl.partner.webhooks.freemarker` for what the subset holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cohortctl.errors import InputError

SUPPORTED = (
    "${...}, ?c, ?string, ?json_string, ??, <#list ... as ...>, <#sep>, <#if>/<#elseif>/<#else>, "
    "NAME_has_next, UtilClass.toJsonString(x)"
)
UTIL = "UtilClass"


class TemplateError(InputError):
    """A template cohortctl cannot render, naming the file and the line."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


# --- lexer ------------------------------------------------------------------------------------


@dataclass
class Tok:
    """One token of a template."""

    kind: str  # text, interp, open, close, comment
    start: int
    end: int
    line: int
    text: str = ""  # text: the characters; interp: the expression; open: the arguments
    name: str = ""  # open/close: the directive name


_TAG_START = re.compile(r"\$\{|#\{|<#--|</?#|</?@")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _scan_to(text: str, pos: int, closer: str, source: str, what: str) -> int:
    """Index of ``closer`` at ``pos`` or later, outside string literals and parentheses."""
    depth = 0
    quote: str | None = None
    i = pos
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == closer and depth <= 0:
            return i
        i += 1
    raise TemplateError(source, line_at(text, pos), f"{what} is not closed")


def lex(text: str, source: str) -> list[Tok]:
    """The template as text, interpolation, tag and comment tokens."""
    toks: list[Tok] = []
    pos = 0
    while pos < len(text):
        match = _TAG_START.search(text, pos)
        if match is None:
            toks.append(Tok("text", pos, len(text), line_at(text, pos), text[pos:]))
            break
        start = match.start()
        if start > pos:
            toks.append(Tok("text", pos, start, line_at(text, pos), text[pos:start]))
        line = line_at(text, start)
        opener = match.group()
        if opener == "${":
            end = _scan_to(text, start + 2, "}", source, "${")
            toks.append(Tok("interp", start, end + 1, line, text[start + 2 : end]))
            pos = end + 1
        elif opener == "<#--":
            end = text.find("-->", start + 4)
            if end < 0:
                raise TemplateError(source, line, "<#-- comment is not closed with -->")
            toks.append(Tok("comment", start, end + 3, line))
            pos = end + 3
        elif opener == "#{":
            raise TemplateError(
                source,
                line,
                "#{...} (legacy numeric interpolation) is not "
                f"supported; use ${{...}} (supported: {SUPPORTED})",
            )
        elif "@" in opener:
            macro = re.match(r"[\w.]*", text[start + len(opener) :])
            shown = macro.group() if macro else ""
            raise TemplateError(
                source,
                line,
                f"user-defined directive <@{shown}> is not supported (supported: {SUPPORTED})",
            )
        else:
            closing = opener == "</#"
            name_match = re.match(r"[A-Za-z_]\w*", text[match.end() :])
            if name_match is None:
                raise TemplateError(source, line, f"{opener} must be followed by a directive name")
            name = name_match.group()
            name_end = match.end() + len(name)
            end = _scan_to(text, name_end, ">", source, f"{opener}{name}")
            args = text[name_end:end]
            if args.endswith("/"):
                args = args[:-1]
            if closing:
                if args.strip():
                    raise TemplateError(source, line, f"</#{name}> takes nothing after its name")
                toks.append(Tok("close", start, end + 1, line, name=name))
            else:
                toks.append(Tok("open", start, end + 1, line, args, name))
            pos = end + 1
    return toks


# --- expressions ------------------------------------------------------------------------------

_EXPR_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\?\?|==|!=|&&|\|\||<=|>=|\.\.|[.?(),!=\[\]<>+\-*/%{}:;])
    )""",
    re.VERBOSE,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "f": "\f",
    "b": "\b",
    "l": "<",
    "g": ">",
    "a": "&",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "{": "{",
    "=": "=",
}
_UNSUPPORTED_OPS = {
    "+": "the + operator",
    "-": "the - operator",
    "*": "the * operator",
    "/": "the / operator",
    "%": "the % operator",
    "<": "the < comparison",
    ">": "the > comparison",
    "<=": "the <= comparison",
    ">=": "the >= comparison",
    "..": "ranges (..)",
    "{": "hash literals",
    "}": "hash literals",
    ":": "':'",
    ";": "';'",
}
_KEYWORD_OPS = {
    "gt": "the gt comparison",
    "gte": "the gte comparison",
    "lt": "the lt comparison",
    "lte": "the lte comparison",
    "in": "'in'",
    "as": "'as'",
    "using": "'using'",
}
_BUILTINS = ("c", "string", "json_string", "has_next")


@dataclass(frozen=True)
class Expr:
    """One node of an expression tree."""

    kind: str  # lit, name, dot, index, call, builtin, exists, not, and, or, eq, ne, paren
    value: Any = None
    args: tuple[Expr, ...] = ()
    text: str = ""  # the source text, for messages


def _unescape(literal: str, source: str, line: int) -> str:
    body = literal[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x":
            digits = re.match(r"[0-9A-Fa-f]{1,4}", body[i + 2 :])
            if not digits:
                raise TemplateError(source, line, f"bad \\x escape in {literal}")
            out.append(chr(int(digits.group(), 16)))
            i += 2 + len(digits.group())
        else:
            raise TemplateError(source, line, f"unknown escape \\{nxt} in {literal}")
    return "".join(out)


class _ExprParser:
    def __init__(self, text: str, source: str, line: int) -> None:
        self.text = text
        self.source = source
        self.line = line
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            found = _EXPR_TOKEN.match(text, pos)
            if found is None:
                self.fail(f"cannot read {text[pos:].strip()[:20]!r} in {text.strip()!r}")
                break
            kind = found.lastgroup or ""
            self.toks.append((kind, found.group(kind)))
            pos = found.end()
        self.pos = 0

    def fail(self, message: str) -> Any:
        raise TemplateError(self.source, self.line, message)

    def unsupported(self, what: str) -> Any:
        return self.fail(f"{what} is not supported (supported: {SUPPORTED})")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            shown = "the end" if tok is None else repr(tok[1])
            self.fail(f"expected {value or 'more'} but found {shown} in {self.text.strip()!r}")
        self.pos += 1
        return tok  # type: ignore[return-value]

    def parse(self) -> Expr:
        if not self.toks:
            self.fail("empty expression")
        expr = self.or_()
        tok = self.peek()
        if tok is not None:
            self._reject(tok)
            self.fail(f"unexpected {tok[1]!r} in {self.text.strip()!r}")
        return expr

    def _reject(self, tok: tuple[str, str]) -> None:
        kind, value = tok
        if kind == "op" and value in _UNSUPPORTED_OPS:
            self.unsupported(_UNSUPPORTED_OPS[value])
        if kind == "name" and value in _KEYWORD_OPS:
            self.unsupported(_KEYWORD_OPS[value])

    def _chain(self, op: str, kind: str, operand: Callable[[], Expr]) -> Expr:
        """``operand (op operand)*``, grouped from the left."""
        left = operand()
        while self.peek() == ("op", op):
            self.take()
            left = Expr(kind, args=(left, operand()))
        return left

    def or_(self) -> Expr:
        return self._chain("||", "or", self.and_)

    def and_(self) -> Expr:
        return self._chain("&&", "and", self.eq)

    def eq(self) -> Expr:
        left = self.unary()
        tok = self.peek()
        if tok is not None and tok[1] in ("==", "!=", "="):
            self.take()
            return Expr("ne" if tok[1] == "!=" else "eq", args=(left, self.unary()))
        if tok is not None:
            self._reject(tok)
        return left

    def unary(self) -> Expr:
        if self.peek() == ("op", "!"):
            self.take()
            return Expr("not", args=(self.unary(),))
        return self.postfix()

    def postfix(self) -> Expr:
        expr = self.primary()
        while (tok := self.peek()) is not None:
            if tok == ("op", "."):
                self.take()
                kind, name = self.take()
                if kind != "name":
                    self.fail(f"expected a name after '.' in {self.text.strip()!r}")
                expr = Expr("dot", name, (expr,), f"{expr.text}.{name}")
            elif tok == ("op", "["):
                self.take()
                key = self.or_()
                self.take("]")
                expr = Expr("index", None, (expr, key), f"{expr.text}[{key.text}]")
            elif tok == ("op", "("):
                self.take()
                expr = Expr("call", None, (expr, *self.arguments()), f"{expr.text}(...)")
            elif tok == ("op", "?"):
                self.take()
                kind, name = self.take()
                if kind != "name" or name not in _BUILTINS:
                    self.unsupported(f"the built-in ?{name}")
                bargs: list[Expr] = []
                if self.peek() == ("op", "("):
                    self.take()
                    bargs = self.arguments()
                expr = Expr("builtin", name, (expr, *bargs), f"{expr.text}?{name}")
            elif tok == ("op", "??"):
                self.take()
                expr = Expr("exists", None, (expr,), f"{expr.text}??")
            elif tok == ("op", "!"):
                self.unsupported("the default value operator (x!default)")
            else:
                break
        return expr

    def arguments(self) -> list[Expr]:
        """The comma-separated expressions up to the closing ``)`` (``(`` already taken)."""
        args: list[Expr] = []
        while self.peek() != ("op", ")"):
            args.append(self.or_())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        return args

    def primary(self) -> Expr:
        kind, value = self.take()
        if kind == "str":
            if value.startswith("r"):
                self.unsupported("raw strings")
            return Expr("lit", _unescape(value, self.source, self.line), text=value)
        if kind == "num":
            number: int | float = float(value) if "." in value else int(value)
            return Expr("lit", number, text=value)
        if kind == "name":
            if value in ("true", "false"):
                return Expr("lit", value == "true", text=value)
            if value in _KEYWORD_OPS:
                self.unsupported(_KEYWORD_OPS[value])
            return Expr("name", value, text=value)
        if value == "(":
            inner = self.or_()
            self.take(")")
            return Expr("paren", None, (inner,), f"({inner.text})")
        if value in _UNSUPPORTED_OPS:
            self.unsupported(_UNSUPPORTED_OPS[value])
        return self.fail(f"unexpected {value!r} in {self.text.strip()!r}")


def parse_expression(text: str, source: str = "template", line: int = 1) -> Expr:
    """Parse one FreeMarker expression of the subset."""
    return _ExprParser(text, source, line).parse()
