"""Payload and URL templates written as in Amplitude's Integration Portal.

A payload template is JSON text with ``$name`` (or ``${name}``) variables::

    {"user_ids": $items, "list": "$listId", "cohort": "$amplitude_cohort_name"}

Substitution follows where the variable stands, so the result is always JSON of the right type:

- **bare** (outside a JSON string): the value as a JSON value: ``$items`` a JSON array,
  ``$member`` ``true``/``false``, other values JSON strings; a ``--var`` value that is itself
  JSON (``5``, ``true``, ``[1,2]``, ``"x"``) is inserted as that JSON.
- **a whole string** ``"$items"``: also the JSON array (a partner field that takes the list).
- **inside a string**: the value's text, JSON-string-escaped (quotes, backslashes, control
  characters); ``$items`` there is the ids joined with commas.
- ``$$`` is a literal ``$``.

URL and path templates substitute the same variables URL-quoted. ``{listId}`` (the spelling of
:data:`cohortctl.partner.payloads.DEFAULT_PATHS`) is accepted there as well.

Unknown variables and substitution results that are not JSON are :class:`InputError` (exit 2)
naming the template, before anything is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cohortctl.errors import InputError
from cohortctl.partner import payloads

VAR_ITEMS = "items"
VAR_LIST_ID = "listId"
VAR_COHORT_NAME = "amplitude_cohort_name"
VAR_COHORT_ID = "amplitude_cohort_id"
VAR_COHORT_NAME_AS_IS = "cohort_name"
VAR_USER_ID = "userId"
VAR_USER_ID_SNAKE = "user_id"
VAR_MEMBER = "member"
DEFAULT_ITEMS = '"$user_id"'

BUILTIN_VARIABLES: dict[str, str] = {
    VAR_ITEMS: "the user ids of the request, a JSON array",
    VAR_LIST_ID: "the partner's list id (from --list-id or the list-create answer)",
    VAR_COHORT_NAME: "the cohort name, slugified (NFKD, non [A-Za-z0-9_] -> '-', 100 chars)",
    VAR_COHORT_ID: "the cohort id",
    VAR_COHORT_NAME_AS_IS: "the cohort name as is",
    VAR_USER_ID_SNAKE: "in items: the user; elsewhere the first (identify: the only) user id",
    VAR_USER_ID: "the first (for identify: the only) user id of the request",
    VAR_MEMBER: "the trait value: true (entered the cohort) or false (left it)",
}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(rf"\$(?:\{{({_NAME})\}}|({_NAME}))")
_WHOLE_STRING_VARIABLE = re.compile(rf'"\$(?:\{{({_NAME})\}}|({_NAME}))"')
_URL_TOKEN = re.compile(rf"\$\$|\$\{{({_NAME})\}}|\$({_NAME})|\{{(listId)\}}")
_CUSTOM_NAME = re.compile(rf"^{_NAME}$")


class Unresolved(str):
    """A value not known yet (a flow's list id in a dry run): shown as written, never quoted."""


def parse_var(text: str) -> tuple[str, str]:
    """``name=value`` from ``--var``; InputError when malformed or clashing with a built-in."""
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("$")
    if not sep or not _CUSTOM_NAME.match(name):
        raise InputError(f"bad --var {text!r}: expected NAME=VALUE, NAME made of [A-Za-z0-9_]")
    if name in BUILTIN_VARIABLES:
        raise InputError(f"--var {name} clashes with the built-in variable ${name}")
    return name, value


def parse_vars(texts: Iterable[str]) -> dict[str, str]:
    """Every ``--var`` as a mapping (the last of repeated names wins)."""
    return dict(parse_var(text) for text in texts)


def variables(
    *,
    ids: Sequence[str],
    cohort_name: str,
    cohort_id: str,
    list_id: str | None,
    member: bool,
    custom: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values of every built-in variable for one request, plus the custom ones."""
    values: dict[str, Any] = dict(custom or {})
    values.update(
        {
            VAR_ITEMS: list(ids),
            VAR_LIST_ID: Unresolved("{listId}") if list_id is None else list_id,
            VAR_COHORT_NAME: payloads.slugify_cohort_name(cohort_name),
            VAR_COHORT_ID: cohort_id,
            VAR_COHORT_NAME_AS_IS: cohort_name,
            VAR_USER_ID: ids[0] if ids else "",
            VAR_USER_ID_SNAKE: ids[0] if ids else "",
            VAR_MEMBER: member,
        }
    )
    return values


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def _as_json(value: Any) -> str:
    if isinstance(value, str) and not isinstance(value, Unresolved):
        try:
            parsed = json.loads(value)
        except ValueError:
            return json.dumps(value, ensure_ascii=False)
        # A --var value that is JSON goes in as that JSON, re-dumped on one line.
        return json.dumps(parsed, ensure_ascii=False)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


def _builtin_json(name: str, value: Any) -> str:
    # Built-in strings (cohort id "123", user id "42") stay strings even when they look numeric.
    if name in BUILTIN_VARIABLES and isinstance(value, str):
        return json.dumps(str(value), ensure_ascii=False)
    return _as_json(value)


def _escaped(value: Any) -> str:
    return json.dumps(_as_text(value), ensure_ascii=False)[1:-1]


def _unknown_error(source: str, unknown: Iterable[str], known: Iterable[str]) -> InputError:
    names = ", ".join(f"${n}" for n in sorted(set(unknown)))
    listed = ", ".join(f"${n}" for n in known)
    return InputError(
        f"{source}: unknown template variable(s) {names}; known: {listed}",
        hint="add custom variables with --var NAME=VALUE; write $$ for a literal $",
    )


@dataclass(frozen=True)
class Template:
    """A JSON payload template and where it came from (for error messages)."""

    text: str
    source: str = "<template>"
    items: str | None = None  # the Portal's item template: what each user becomes in $items

    @classmethod
    def from_file(cls, path: Path) -> Template:
        """Read a template file; InputError when it cannot be read."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(f"{path}: cannot read payload template: {reason}") from None
        if not text.strip():
            raise InputError(f"{path}: payload template is empty")
        return cls(text, str(path))

    def names(self) -> set[str]:
        """Every variable name the template uses (its item template's included)."""
        items = self.items if self.uses_items_template else None
        return template_names(self.text) | (template_names(items) if items else set())

    @property
    def uses_items_template(self) -> bool:
        """True when ``$items`` is built from an item template other than the plain id."""
        return self.items is not None and self.items.strip() != DEFAULT_ITEMS

    def items_json(self, values: Mapping[str, Any]) -> str:
        """``$items`` as a JSON array: the ids, or each id through the item template."""
        ids = values[VAR_ITEMS]
        if not self.uses_items_template or self.items is None:
            return _as_json(ids)
        item = Template(self.items, f"{self.source} (items)")
        per_user = dict(values)
        rendered = []
        for uid in ids:
            per_user[VAR_USER_ID_SNAKE] = per_user[VAR_USER_ID] = uid
            rendered.append(item.substitute(per_user))
        return "[" + ",".join(rendered) + "]"

    def check(self, known: Iterable[str]) -> None:
        """InputError listing the known variables when the template uses an unknown one."""
        known = list(known)
        unknown = self.names() - set(known)
        if unknown:
            raise _unknown_error(self.source, unknown, known)

    def substitute(self, values: Mapping[str, Any]) -> str:
        """The template's text with every variable replaced; see the module docstring."""
        self.check(values)
        text, out, i, n = self.text, [], 0, len(self.text)
        in_string = False
        while i < n:
            c = text[i]
            if in_string and c == "\\":
                out.append(text[i : i + 2])
                i += 2
                continue
            if c == "$":
                i = self._variable(text, i, values, out, bare=not in_string)
                continue
            if c == '"' and not in_string:
                whole = _WHOLE_STRING_VARIABLE.match(text, i)
                if whole and (whole.group(1) or whole.group(2)) == VAR_ITEMS:
                    out.append(self.items_json(values))
                    i = whole.end()
                    continue
            if c == '"':
                in_string = not in_string
            out.append(c)
            i += 1
        return "".join(out)

    def _variable(
        self, text: str, i: int, values: Mapping[str, Any], out: list[str], *, bare: bool
    ) -> int:
        if text.startswith("$$", i):
            out.append("$")
            return i + 2
        match = _VARIABLE.match(text, i)
        if match is None:
            out.append("$")
            return i + 1
        name = match.group(1) or match.group(2)
        value = values[name]
        if bare and name == VAR_ITEMS:
            out.append(self.items_json(values))
        else:
            out.append(_builtin_json(name, value) if bare else _escaped(value))
        return match.end()

    def render(self, values: Mapping[str, Any]) -> tuple[str, Any]:
        """The substituted text and its parsed JSON; InputError naming the line and column."""

        def not_json(exc: json.JSONDecodeError, line: str) -> InputError:
            return InputError(
                f"{self.source}:{exc.lineno}:{exc.colno}: not valid JSON after substitution: "
                f"{exc.msg}; line {exc.lineno} is: {line.strip()[:120]}",
                hint='write $items bare or as "$items"; other variables inside strings',
            )

        text = self.substitute(values)
        return text, rendered_json(text, not_json)


def template_names(text: str) -> set[str]:
    """Every ``$name`` / ``${name}`` in ``text`` (``$$`` is a literal dollar, not a name)."""
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(text.replace("$$", ""))}


def render_text(text: str, values: Mapping[str, Any], *, source: str) -> str:
    """``text`` (a header value) with every variable as plain text; ``$$`` is a ``$``."""
    unknown = sorted(n for n in template_names(text) if n not in values)
    if unknown:
        raise _unknown_error(source, unknown, values)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return _as_text(values[match.group(1) or match.group(2)])

    return re.sub(rf"\$\$|\$\{{({_NAME})\}}|\$({_NAME})", replace, text)


def render_url(template: str, values: Mapping[str, Any], *, source: str = "--path") -> str:
    """A URL or path template with every variable URL-quoted (``$$`` is a literal ``$``)."""
    # Without a list id, $listId stays as written (a URL shown before the list exists).
    names = {m.group(1) or m.group(2) for m in _URL_TOKEN.finditer(template)}
    unknown = sorted(n for n in names if n and n != VAR_LIST_ID and n not in values)
    if unknown:
        raise _unknown_error(source, unknown, values)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            return match.group(0)
        value = values[name]
        if isinstance(value, Unresolved):
            return str(value)
        return quote(_as_text(value), safe="")

    return _URL_TOKEN.sub(replace, template)


def rendered_json(text: str, not_json: Callable[[json.JSONDecodeError, str], Exception]) -> Any:
    """The JSON of a rendered template; for text that is not JSON, raises what ``not_json``
    makes of the decoder's error and the line of the output it stopped at."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        raise not_json(exc, lines[exc.lineno - 1] if lines else "") from None
