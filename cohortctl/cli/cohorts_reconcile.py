"""``cohortctl cohorts reconcile``: make a cohort hold exactly a file's ids, sending changes."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.markup import escape

from cohortctl.cli.bundles import with_bundles
from cohortctl.cli.customer_options import (
    AmplitudeOptions,
    Column,
    IdFile,
    IdTypeOption,
    StrictIds,
    file_rows,
    load_ids,
    print_requests,
    progress_bar,
)
from cohortctl.cli.options import AsCurl, Output, check_as_curl, option
from cohortctl.cli.render import OutputFormat, err, key_values, out, print_json
from cohortctl.customer.reconcile import (
    APPLY,
    EXPORT,
    EXPORTED,
    ReconcileEvent,
    ReconcileResult,
    reconcile,
)
from cohortctl.durations import parse_duration
from cohortctl.errors import CheckFailed
from cohortctl.ids import IdType

SHOWN_IDS = 5


@with_bundles
def reconcile_command(
    file: IdFile,
    cohort_id: Annotated[
        str,
        option("--cohort-id", help="The cohort to bring in line."),
    ],
    id_type: IdTypeOption = IdType.user,
    column: Column = None,
    strict_ids: StrictIds = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Export the cohort and show what would change (counts, first ids of each "
            "side) and the exact membership requests; send none. Needs credentials: it reads.",
        ),
    ] = False,
    as_curl: AsCurl = False,
    export_timeout: Annotated[
        str,
        typer.Option("--export-timeout", help="Give up if the export is not ready after this."),
    ] = "15m",
    output: Output = OutputFormat.table,
    *,
    amplitude: AmplitudeOptions,
) -> None:
    """Make cohort --cohort-id hold exactly the ids of FILE, sending only the differences.

    Exports the cohort, then adds the missing ids and removes the extra ones with membership
    requests of at most 100,000 ids, one after another, ADDs first. The cohort never drops
    members it keeps (unlike upload --existing-cohort-id, which replaces it). If the cohort
    changed during the export nothing is sent; if it changed while the changes were sent,
    the summary says so and the exit code is 1.
    """
    check_as_curl(as_curl, dry_run)
    cfg, url = amplitude.target()
    wait = parse_duration(export_timeout, option="--export-timeout")
    ids = load_ids(file, column=column, id_type=id_type)
    with (
        amplitude.client(cfg, url) as client,
        reconcile_progress(cohort_id) as on_event,
    ):
        result = reconcile(
            client,
            cohort_id,
            ids.ids,
            id_type=id_type.value,
            dry_run=dry_run,
            strict_ids=strict_ids,
            export_timeout=wait,
            on_event=on_event,
        )
    planned = result.describe(url, strict_ids=strict_ids) if dry_run else []
    if output is OutputFormat.json and not as_curl:
        shown = {"requests": planned} if dry_run else {}
        print_json(
            {
                "ok": not result.changed,
                "summary": result.summary(),
                "file": dataclasses.asdict(ids.stats),
                **shown,
            }
        )
    elif not as_curl:
        out.print(key_values([*summary_rows(result), *file_rows(ids)]))
    if planned and (as_curl or output is not OutputFormat.json):
        if not as_curl:
            out.print()
        print_requests(planned, as_curl=as_curl)
    if dry_run:
        err.print("dry run: the cohort was exported; no membership or upload request was sent")
    if result.changed:
        raise CheckFailed(result.changed)


def _first(ids: list[str]) -> str:
    if not ids:
        return ""
    shown = ", ".join(ids[:SHOWN_IDS])
    return f" (first: {shown}{', ...' if len(ids) > SHOWN_IDS else ''})"


def summary_rows(result: ReconcileResult) -> list[tuple[str, Any]]:
    """The summary table: what differed, what was sent, what a replace would have sent."""
    removals = result.to_remove + result.to_remove_by_amplitude_id
    rows: list[tuple[str, Any]] = [("cohort id", result.cohort_id)]
    if result.name is not None:
        rows.append(("name", result.name))
    rows += [
        ("members (export)", f"{result.members_exported:,}"),
        ("ids in the file", f"{result.file_ids:,}"),
        ("unchanged", f"{result.unchanged:,}"),
        ("to add", f"{len(result.to_add):,}{_first(result.to_add)}"),
        ("to remove", f"{len(removals):,}{_first(removals)}"),
    ]
    if result.to_remove_by_amplitude_id:
        rows.append(("  without a user id", f"{len(result.to_remove_by_amplitude_id):,}"))
    plural = "s" if result.replace_requests != 1 else ""
    replace = f"{result.replace_ids:,} ids in {result.replace_requests} request{plural}"
    if result.dry_run:
        planned = "s" if result.planned_requests != 1 else ""
        rows.append(
            ("would send", f"{result.changes:,} ids in {result.planned_requests} request{planned}")
        )
    else:
        sent = "s" if len(result.requests) != 1 else ""
        rows.append(("changes sent", f"{result.ids_sent:,} ids in {len(result.requests)} "
                     f"request{sent}"))  # fmt: skip
    rows.append(("a replace would send", replace))
    if result.skipped_ids:
        rows.append(("skipped ids", ", ".join(result.skipped_ids[:SHOWN_IDS])))
    if result.size_after is not None:
        rows.append(("size after", f"{result.size_after:,} (expected {result.expected_size:,})"))
    if result.changed:
        rows.append(("changed meanwhile", "yes: see the error below"))
    return rows


@contextlib.contextmanager
def reconcile_progress(cohort_id: str) -> Iterator[Callable[[ReconcileEvent], None]]:
    """An event callback: a spinner then a bar on a terminal, plain lines on stderr otherwise."""
    shown = escape(cohort_id)
    if not err.is_terminal:

        def plain(event: ReconcileEvent) -> None:
            if event.phase == EXPORT and event.poll is not None:
                poll = event.poll
                err.print(
                    f"export of {shown}: {escape(poll.async_status or 'no status')} "
                    f"(poll {poll.polls}, {poll.elapsed:.0f}s)"
                )
            elif event.phase == EXPORTED:
                err.print(f"export of {shown}: {event.done:,} members")
            elif event.phase == APPLY and event.call:
                err.print(f"{event.call}: {event.done:,} of {event.total:,} changes sent")

        yield plain
        return
    with progress_bar() as bar:
        task = bar.add_task(f"exporting cohort {shown}", total=None)

        def update(event: ReconcileEvent) -> None:
            if event.phase == EXPORT and event.poll is not None:
                status = escape(event.poll.async_status or "...")
                bar.update(task, description=f"exporting cohort {shown}: {status}")
            elif event.phase == APPLY:
                bar.update(
                    task,
                    total=event.total,
                    completed=event.done,
                    description=event.call or f"reconciling {shown}",
                )

        yield update
