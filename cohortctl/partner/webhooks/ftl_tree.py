"""The tree of a template of the FreeMarker subset, and FreeMarker's white-space stripping.

The stripping follows FreeMarker 2.3's ``TextBlock.postParseCleanup``: a text block loses its
leading white-space up to and including the first line break when nothing before it on its
line prints (no interpolation, no other text), and its trailing white-space after the last
line break when nothing after it on that line prints. The very first text of a template is
left as written, and white-space-only text between comments at the top disappears.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cohortctl.partner.webhooks.ftl_syntax import (
    SUPPORTED,
    Expr,
    TemplateError,
    Tok,
    lex,
    line_at,
    parse_expression,
)


@dataclass(eq=False)
class Node:
    """One element of a template: root, text, interp, comment, list, sep, if or branch."""

    kind: str
    begin_line: int
    end_line: int
    text: str = ""
    begin_column: int = 1
    expr: Expr | None = None  # interp: the value; list: the sequence; branch: the condition
    var: str = ""  # list: the loop variable
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)

    def add(self, child: Node) -> None:
        """Append ``child`` to this node's children."""
        child.parent = self
        self.children.append(child)


_LIST_ARGS = re.compile(r"^(?P<expr>.*\S)\s+as\s+(?P<var>[A-Za-z_]\w*)\s*$", re.S)


class _TreeParser:
    def __init__(self, text: str, toks: list[Tok], source: str) -> None:
        self.text = text
        self.toks = toks
        self.source = source
        self.pos = 0

    def fail(self, line: int, message: str) -> None:
        raise TemplateError(self.source, line, message)

    def end_line(self, tok: Tok) -> int:
        return line_at(self.text, max(tok.start, tok.end - 1))

    def block(self, parent: Node, ends: Sequence[str], *, in_list: bool) -> Tok | None:
        while self.pos < len(self.toks):
            tok = self.toks[self.pos]
            self.pos += 1
            marker = f"/{tok.name}" if tok.kind == "close" else tok.name
            if tok.kind in ("close", "open") and marker in ends:
                return tok
            if tok.kind == "text":
                column = tok.start - self.text.rfind("\n", 0, tok.start)
                parent.add(Node("text", tok.line, self.end_line(tok), tok.text, column))
            elif tok.kind == "comment":
                parent.add(Node("comment", tok.line, self.end_line(tok)))
            elif tok.kind == "interp":
                expr = parse_expression(tok.text, self.source, tok.line)
                parent.add(Node("interp", tok.line, self.end_line(tok), expr=expr))
            elif tok.kind == "close":
                self.fail(tok.line, f"</#{tok.name}> without a matching <#{tok.name}>")
            else:
                self.directive(parent, tok, in_list=in_list)
        return None

    def directive(self, parent: Node, tok: Tok, *, in_list: bool) -> None:
        if tok.name == "list":
            match = _LIST_ARGS.match(tok.text.strip())
            if match is None:
                if "," in tok.text:
                    self.fail(
                        tok.line,
                        f"<#list ... as key, value> is not supported (supported: {SUPPORTED})",
                    )
                self.fail(tok.line, "<#list> needs `<#list EXPR as NAME>`")
            assert match is not None
            expr = parse_expression(match["expr"], self.source, tok.line)
            node = Node("list", tok.line, tok.line, expr=expr, var=match["var"])
            end = self.block(node, ("/list", "else"), in_list=True)
            if end is None:
                self.fail(tok.line, "<#list> is not closed with </#list>")
            assert end is not None
            if end.name == "else":
                self.fail(
                    end.line, f"<#else> inside <#list> is not supported (supported: {SUPPORTED})"
                )
            node.end_line = self.end_line(end)
            parent.add(node)
        elif tok.name == "sep":
            if not in_list:
                self.fail(tok.line, "<#sep> outside <#list>")
            if tok.text.strip():
                self.fail(tok.line, "<#sep> takes no arguments")
            node = Node("sep", tok.line, tok.line)
            end = self.block(node, ("/sep", "/list"), in_list=True)
            if end is None:
                self.fail(tok.line, "<#sep> is not closed")
            assert end is not None
            if end.kind == "close" and end.name == "list":
                self.pos -= 1  # </#list> also ends the list around us
                node.end_line = node.children[-1].end_line if node.children else tok.line
            else:
                node.end_line = self.end_line(end)
            parent.add(node)
        elif tok.name == "if":
            self.if_block(parent, tok, in_list=in_list)
        elif tok.name in ("else", "elseif"):
            self.fail(tok.line, f"<#{tok.name}> outside <#if>")
        else:
            self.fail(tok.line, f"<#{tok.name}> is not supported (supported: {SUPPORTED})")

    def if_block(self, parent: Node, tok: Tok, *, in_list: bool) -> None:
        node = Node("if", tok.line, tok.line)
        opener: Tok = tok
        cond: Expr | None = parse_expression(tok.text, self.source, tok.line)
        while True:
            branch = Node("branch", opener.line, self.end_line(opener), expr=cond)
            ends = ("/if",) if cond is None else ("/if", "elseif", "else")
            end = self.block(branch, ends, in_list=in_list)
            if end is None:
                self.fail(tok.line, "<#if> is not closed with </#if>")
            assert end is not None
            if branch.children:
                branch.end_line = branch.children[-1].end_line
            node.add(branch)
            if end.kind == "close":
                node.end_line = self.end_line(end)
                parent.add(node)
                return
            opener = end
            cond = (
                parse_expression(end.text, self.source, end.line) if end.name == "elseif" else None
            )


def parse_template(text: str, source: str = "template") -> Node:
    """Parse a template of the subset into a tree, white-space stripped as FreeMarker does."""
    root = Node("root", 1, line_at(text, max(0, len(text) - 1)))
    parser = _TreeParser(text, lex(text, source), source)
    parser.block(root, (), in_list=False)
    _cleanup(root)
    return root


# --- white-space stripping --------------------------------------------------------------------

_JAVA_TRIM = "".join(chr(c) for c in range(33))  # String.trim() drops every char <= ' '


def _blank(text: str) -> bool:
    return not text.strip(_JAVA_TRIM)


def _sibling(node: Node, step: int) -> Node | None:
    if node.parent is None:
        return None
    siblings = node.parent.children
    index = next(i for i, child in enumerate(siblings) if child is node) + step
    return siblings[index] if 0 <= index < len(siblings) else None


def _next_terminal(node: Node) -> Node | None:
    sibling = _sibling(node, 1)
    if sibling is not None:
        while sibling.children:
            sibling = sibling.children[0]
        return sibling
    return _next_terminal(node.parent) if node.parent is not None else None


def _prev_terminal(node: Node) -> Node | None:
    sibling = _sibling(node, -1)
    if sibling is not None:
        while sibling.children:
            sibling = sibling.children[-1]
        return sibling
    return _prev_terminal(node.parent) if node.parent is not None else None


def _ignorable(node: Node) -> bool:
    if node.kind != "text":
        return False
    if not node.text:
        return True
    if not _blank(node.text):
        return False
    top = node.parent is not None and node.parent.kind == "root"
    before, after = _sibling(node, -1), _sibling(node, 1)
    before_ok = (before is None and top) or (before is not None and before.kind == "comment")
    after_ok = (after is None and top) or (after is not None and after.kind == "comment")
    return before_ok and after_ok


def _heeds(node: Node, *, from_end: bool) -> bool:
    """Whether ``node`` keeps a tag's line from being stripped: an interpolation, or text with
    something other than white space between the tag and the nearest line break (looking
    from the end of the text when the node comes before the tag)."""
    if node.kind == "interp":
        return True
    if node.kind != "text" or _ignorable(node):
        return False
    for c in reversed(node.text) if from_end else node.text:
        if c in "\r\n":
            return False
        if not c.isspace():
            return True
    return True


def _first_break(text: str) -> int:
    found = [i for i in (text.find("\n"), text.find("\r")) if i >= 0]
    return min(found) if found else -1


def _opening_to_strip(node: Node) -> int:
    text = node.text
    first = _first_break(text)
    if first == -1 and node.begin_column != 1:
        return 0
    count = first + 1
    if 0 < count < len(text) and text[count - 1] == "\r" and text[count] == "\n":
        count += 1
    if not _blank(text[:count]):
        return 0
    return 0 if _line_heeded(node, before=True) else count


def _trailing_to_strip(node: Node) -> int:
    text = node.text
    last = max(text.rfind("\r"), text.rfind("\n"))
    if last == -1 and node.begin_column != 1:
        return 0
    tail = text[last + 1 :]
    if not _blank(tail):
        return 0
    return 0 if _line_heeded(node, before=False) else len(tail)


def _line_heeded(node: Node, *, before: bool) -> bool:
    """Whether a node on the same line as ``node``'s start (before it) or end (after it)
    keeps that line from being stripped."""
    step = _prev_terminal if before else _next_terminal
    line = node.begin_line if before else node.end_line
    other = step(node)
    while other is not None and (other.end_line if before else other.begin_line) == line:
        if _heeds(other, from_end=before):
            return True
        other = step(other)
    return False


def _strip_text(node: Node) -> None:
    if not node.text:
        return
    assert node.parent is not None
    if node.parent.kind == "root" and _sibling(node, -1) is None:
        return
    trailing = _trailing_to_strip(node)
    opening = _opening_to_strip(node)
    if opening or trailing:
        node.text = node.text[opening : len(node.text) - trailing]
        if opening:
            node.begin_line += 1
            node.begin_column = 1


def _cleanup(node: Node) -> None:
    for child in node.children:
        if child.kind == "text":
            _strip_text(child)
        else:
            _cleanup(child)
    node.children = [child for child in node.children if not _ignorable(child)]
