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
from pathlib import Path
from typing import Any

from rich import box
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


class JsonOutput:
    """Whether this command was asked for ``-o json`` and has written its JSON yet: a failure
    that ends the command before it printed any still gives the JSON vocabulary on stdout."""

    requested = False
    printed = False
    to_stderr = False  # stdout holds the data itself (``-o -``)

    @classmethod
    def reset(cls) -> None:
        cls.requested = cls.printed = cls.to_stderr = False


def note_output(value: OutputFormat) -> str:
    """The ``--output`` option's callback: remember that JSON was asked for."""
    JsonOutput.requested = value is OutputFormat.json
    return value.value  # typer converts a callback's answer again, from the plain choice


def print_failure_json(error: CohortctlError) -> None:
    """``{"ok": false, "status", "error"}`` on stdout for a ``-o json`` command that failed
    before it printed its JSON (the error line is on stderr as always)."""
    if JsonOutput.requested and not JsonOutput.printed:
        status = error.status if isinstance(error, RequestFailed) else None
        failure = {"ok": False, "status": status, "error": error.message}
        print_json(failure, to_stderr=JsonOutput.to_stderr)


def print_json(data: Any, *, to_stderr: bool = False) -> None:
    """Write ``data`` as indented JSON to stdout, no markup, one trailing newline
    (``to_stderr``: when stdout holds the data itself, e.g. ``-o -`` ids)."""
    JsonOutput.printed = True
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if to_stderr:
        sys.stderr.write(text)
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:  # a full disk behind a redirected stdout
        raise FileWriteError("output", "to standard output", exc.strerror or str(exc)) from None


class DataOutput:
    """Where a command that writes data writes it: ``-o FILE``, or ``-o -`` for stdout. With
    ``-o -`` stdout holds the data alone, so the summary, the JSON and a failure's JSON object
    go to stderr (set when this is made, before anything can fail)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.to_stdout = str(path) == "-"
        JsonOutput.to_stderr = self.to_stdout

    @property
    def summary(self) -> Console:
        """The console of the human summary: stderr when stdout holds the data."""
        return err if self.to_stdout else out

    def print_json(self, data: Any) -> None:
        """The command's JSON, where ``-o -`` leaves room for it."""
        print_json(data, to_stderr=self.to_stdout)

    @contextlib.contextmanager
    def stdout(self) -> Iterator[None]:
        """Writing the data to stdout: flushed at the end; a full disk behind it is one line,
        exit 2 (see :func:`writing_stdout`)."""
        with writing_stdout():
            yield
            sys.stdout.flush()


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> Table:
    """A plain rich table with the given header and rows (values shown with ``str``).

    Lines break between words: no column is made narrower than its longest word
    (``list-create`` never becomes ``list-crea|te`` at 80 columns), the widest columns give
    way first, and a table that still would not fit the terminal drops its rules and padding
    (one space between columns). Only the last column (a body, a detail) folds a word
    longer than the room left.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    texts = [[_plain(c) for c in [column, *(row[n] for row in cells)]] for n, column in
             enumerate(columns)]  # fmt: skip
    natural = [max(len(line) for t in col for line in t.split("\n")) for col in texts]
    least = [max((len(w) for t in col for w in t.split()), default=1) for col in texts]
    least[-1] = min(least[-1], _LAST_COLUMN_ROOM)
    boxed = True
    widths = _fit(natural, least, out.width - 1 - 3 * len(columns))
    if widths is None:
        boxed = False
        widths = _fit(natural, least, out.width - 1 - len(columns)) or least
    t = Table(
        title=title,
        title_justify="left",
        show_lines=False,
        box=box.HEAVY_HEAD if boxed else box.SIMPLE_HEAD,
        padding=(0, 1) if boxed else (0, 0),
    )
    for column, width in zip(columns, widths, strict=True):
        t.add_column(column, overflow="fold", width=width)
    for row in cells:
        t.add_row(*row)
    return t


_LAST_COLUMN_ROOM = 12


def _fit(natural: list[int], least: list[int], room: int) -> list[int] | None:
    """Column widths within ``room``: the natural ones, the widest cut first but never
    below ``least``; None when even the least do not fit."""
    if sum(least) > room:
        return None
    widths = list(natural)
    while sum(widths) > room:
        cuttable = [n for n, w in enumerate(widths) if w > least[n]]
        widest = max(cuttable, key=lambda n: widths[n])
        widths[widest] -= 1
    return widths


def _plain(cell: Text | str) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(cell).plain


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
