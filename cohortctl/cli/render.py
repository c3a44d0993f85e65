"""Output: data to stdout, diagnostics to stderr; tables for people, JSON for machines.

Rich resolves ``sys.stdout``/``sys.stderr`` at write time, so these module-level consoles
also work under ``CliRunner``. ``NO_COLOR`` and non-TTY output are honoured by rich itself.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cohortctl.errors import CohortctlError, FileWriteError, RequestFailed
from cohortctl.http.text import body_excerpt, terminal_text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(str, Enum):
    """``--output``: a table for people or JSON for machines."""

    table = "table"
    json = "json"


@contextlib.contextmanager
def writing_stdout() -> Iterator[None]:
    """Data written to stdout inside: an OS error (a full disk behind it) is one line, exit 2.

    A closed pipe (``| head``) is left to the CLI, which ends quietly.
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise
        raise FileWriteError("output", "to standard output", exc.strerror or str(exc)) from None


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout, no markup, one trailing newline."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:  # a full disk behind a redirected stdout
        raise FileWriteError("output", "to standard output", exc.strerror or str(exc)) from None


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> Table:
    """A plain rich table with the given header and rows (values shown with ``str``)."""
    t = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    return t


def _cell(value: Any) -> Text | str:
    if value is None:
        return ""
    return value if isinstance(value, Text) else _safe(value)


def key_values(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> Table:
    """A two-column table of field / value."""
    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(escape(key), "" if value is None else _safe(value))
    return t


def _safe(value: Any) -> str:
    """A cell as rich markup: markup escaped, control characters (ANSI...) shown as \\xNN."""
    return escape(terminal_text(str(value)))


def report_error(error: CohortctlError) -> None:
    """Print an error as one clear line (plus status/body and hint) on stderr."""
    err.print(f"[bold red]error:[/] {_safe(error.message)}")
    if isinstance(error, RequestFailed) and error.body:
        err.print(f"  body: {_safe(body_excerpt(error.body, 500))}")
    if error.hint:
        err.print(f"  hint: {_safe(error.hint)}")
