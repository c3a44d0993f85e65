"""``cohortctl state``: see and change what the sync state says each destination holds."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cohortctl.cli.bundles import with_bundles
from cohortctl.cli.options import OutputLong, option
from cohortctl.cli.render import DataOutput, OutputFormat, err, key_values, out, print_json, table
from cohortctl.errors import StateFileError
from cohortctl.sync import inventory
from cohortctl.sync.state import default_state_path

app = typer.Typer(
    help="See and change the sync state: what each destination and cohort is believed to hold.",
    no_args_is_help=True,
)

StateFile = Annotated[
    Path | None,
    option(
        "--state",
        help="SQLite state file, as in sync [default: state.sqlite in the user data dir].",
        dir_okay=False,
    ),
]
Url = Annotated[
    str,
    option("--url", help="Partner base URL, as given to sync."),
]
CohortId = Annotated[str, option("--cohort-id", help="Amplitude cohort id.")]
Mode = Annotated[
    str | None,
    option(
        "--mode",
        help="list, property or webhook; needed only when the cohort is stored in several.",
    ),
]


def _path(state: Path | None) -> Path:
    return state if state is not None else default_state_path()


@dataclasses.dataclass(frozen=True)
class EntryOptions:
    """Which destination and cohort of which state file: ``--url``, ``--cohort-id``,
    ``--mode``, ``--state``."""

    url: Url = ...  # type: ignore[assignment]  # required (typer: no default)
    cohort_id: CohortId = ...  # type: ignore[assignment]
    mode: Mode = None
    state: StateFile = None

    @property
    def path(self) -> Path:
        """The state file (``--state``, else the default in the user data dir)."""
        return _path(self.state)

    def find(self) -> inventory.Entry:
        """The entry, or an input error naming what is there."""
        return inventory.find(self.path, self.url, self.cohort_id, self.mode)


def _last(entry: inventory.Entry) -> str:
    run = entry.last_run
    if run is None:
        return "-"
    return f"{inventory.iso(run.started_at)} {run.status}"


@app.command("list")
def list_entries(state: StateFile = None, output: OutputLong = OutputFormat.table) -> None:
    """Every destination and cohort: mode, list id, members believed held, last run."""
    path = _path(state)
    found = inventory.entries(path)
    if output is OutputFormat.json:
        print_json({"ok": True, "file": str(path), "entries": [e.to_dict() for e in found]})
        return
    if not found:
        err.print(escape(f"no sync state in {path}"))
        return
    rows = [
        tuple(
            escape(str(c))
            for c in (e.url, e.cohort_id, e.mode, e.list_id or "-", f"{e.members:,}", _last(e))
        )
        for e in found
    ]
    out.print(
        table(
            ["url", "cohort id", "mode", "list id", "members", "last run"],
            rows,
            title=escape(str(path)),
        )
    )


@app.command("show")
@with_bundles
def show(*, where: EntryOptions, output: OutputLong = OutputFormat.table) -> None:
    """One destination and cohort, with every run."""
    entry = where.find()
    if output is OutputFormat.json:
        print_json({"ok": True, **entry.to_dict(with_runs=True)})
        return
    pairs = [
        ("url", entry.url),
        ("cohort id", entry.cohort_id),
        ("mode", entry.mode),
        ("list id", entry.list_id or "-"),
        ("members", f"{entry.members:,}"),
        ("runs", str(len(entry.runs))),
    ]
    out.print(key_values([(k, escape(v)) for k, v in pairs], title=escape(entry.key)))
    if entry.runs:
        out.print(
            table(
                ["started", "finished", "status", "entered", "left", "added", "removed", "failed"],
                [
                    tuple(
                        escape(str(c))
                        for c in (
                            inventory.iso(r.started_at),
                            inventory.iso(r.finished_at) or "-",
                            r.status,
                            f"{r.entered:,}",
                            f"{r.left:,}",
                            f"{r.added:,}",
                            f"{r.removed:,}",
                            f"{r.failed:,}",
                        )
                    )
                    for r in entry.runs
                ],
                title="runs",
            )
        )


@app.command("export")
@with_bundles
def export(
    *,
    where: EntryOptions,
    out_file: Annotated[
        Path,
        option(
            "--out",
            "-o",
            help="File to write the user ids to, one per line (replaced when complete);"
            " - for stdout.",
            dir_okay=False,
        ),
    ],
    output: OutputLong = OutputFormat.table,
) -> None:
    """Write the user ids the partner is believed to hold (what a sync compares against)."""
    path, entry = where.path, where.find()
    target = DataOutput(out_file)
    if target.to_stdout:
        with target.stdout():
            count = inventory.export(path, entry, sys.stdout)
    else:
        count = inventory.export(path, entry, out_file)
    if output is OutputFormat.json:
        target.print_json({"ok": True, **entry.to_dict(), "file": str(out_file), "written": count})
        return
    err.print(escape(f"wrote {count:,} user ids to {out_file}"))


@app.command("forget")
@with_bundles
def forget(*, where: EntryOptions, output: OutputLong = OutputFormat.table) -> None:
    """Drop one destination and cohort (members, list id, runs): the next sync is a first sync.

    Exits 3 when a sync of it is running.
    """
    entry = where.find()
    inventory.forget(where.path, entry)
    if output is OutputFormat.json:
        print_json({"ok": True, "forgotten": entry.to_dict()})
        return
    err.print(
        escape(
            f"forgot {entry.url} cohort {entry.cohort_id} ({entry.mode} mode, "
            f"{entry.members:,} members, list {entry.list_id or '-'}): the next sync sends "
            "everyone"
        )
    )


@app.command("check")
def check(state: StateFile = None, output: OutputLong = OutputFormat.table) -> None:
    """Check the state file's integrity: exit 0 when sound, 2 (one line) when not."""
    path = _path(state)
    try:
        result = inventory.check(path)
    except StateFileError as error:
        if output is OutputFormat.json:
            print_json({"ok": False, "file": str(path), "error": error.reason})
        raise
    if output is OutputFormat.json:
        print_json(result.to_dict())
        return
    if result.empty:
        out.print(escape(f"ok: {result.path} is empty: new state (the next sync writes it)"))
        return
    out.print(
        escape(
            f"ok: {result.path} (schema {result.schema_version}, "
            f"{result.destinations} destinations, {result.size_bytes:,} bytes)"
        )
    )
