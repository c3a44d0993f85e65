"""``cohortctl cohorts``: list a project's cohorts, show one, download a cohort's members."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from cohortctl.cli.bundles import with_bundles
from cohortctl.cli.cohorts_reconcile import reconcile_command
from cohortctl.cli.customer_options import (
    DEFAULT_TIMEOUT_TEXT,
    AmplitudeOptions,
    IdTypeOption,
    export_progress,
)
from cohortctl.cli.options import TIMEOUT_HELP, Output, OutputLong, Verbose, option
from cohortctl.cli.render import DataOutput, OutputFormat, err, key_values, out, print_json, table
from cohortctl.customer.cohorts import find_cohort
from cohortctl.customer.export import download_cohort
from cohortctl.durations import parse_duration
from cohortctl.errors import InputError
from cohortctl.ids import IdType

app = typer.Typer(
    help="Read cohorts (list, show, download) and reconcile one with a file.",
    no_args_is_help=True,
)


@dataclasses.dataclass(frozen=True)
class ExportOptions(AmplitudeOptions):
    """``cohorts download``'s bundle: its per-request deadline is ``--request-timeout``
    (``--timeout`` is the deprecated name of the export wait there)."""

    timeout: Annotated[
        str, typer.Option("--request-timeout", metavar="DURATION", help=TIMEOUT_HELP)
    ] = DEFAULT_TIMEOUT_TEXT


@app.command("list")
@with_bundles
def list_cohorts(
    include_sync_info: Annotated[
        bool,
        typer.Option("--include-sync-info", help="Include each cohort's syncMetadata."),
    ] = False,
    output: Output = OutputFormat.table,
    verbose: Verbose = 0,
    *,
    amplitude: AmplitudeOptions,
) -> None:
    """List the project's cohorts: id, name, size, owners, published, last modified."""
    cfg, url = amplitude.target()
    with amplitude.client(cfg, url) as client:
        cohorts = client.list_cohorts(include_sync_info=include_sync_info)
    if output is OutputFormat.json:
        print_json({"ok": True, "cohorts": cohorts})
        return
    columns = ["id", "name", "size", "owners", "published", "lastMod"]
    if include_sync_info:
        columns.append("syncs")
    out.print(table(columns, [_row(c, include_sync_info) for c in cohorts]))
    out.print(f"{len(cohorts)} cohort{'s' if len(cohorts) != 1 else ''}", markup=False)


def _row(cohort: dict[str, Any], include_sync_info: bool) -> list[Any]:
    owners = cohort.get("owners")
    row = [
        cohort.get("id", ""),
        cohort.get("name", ""),
        cohort.get("size"),
        ", ".join(map(str, owners)) if isinstance(owners, list) else owners,
        "yes" if cohort.get("published") else "no",
        _timestamp(cohort.get("lastMod")),
    ]
    if include_sync_info:
        sync = cohort.get("syncMetadata")
        row.append(len(sync) if isinstance(sync, list) else "")
    return row


def _timestamp(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 100_000_000_000 else value  # epoch ms or seconds
        try:
            when = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return str(value)
        return when.strftime("%Y-%m-%d %H:%M:%SZ")
    return "" if value is None else str(value)


@app.command("show")
@with_bundles
def show(
    cohort_id: Annotated[str, typer.Argument(help="The cohort to show.", show_default=False)],
    output: Output = OutputFormat.table,
    verbose: Verbose = 0,
    *,
    amplitude: AmplitudeOptions,
) -> None:
    """Show one cohort: size, owners, published, last computed, sync destinations.

    Amplitude has no endpoint for one cohort, so this lists the project's cohorts with their
    sync information (includeSyncInfo) and picks ID; an unknown id is exit 1.
    """
    cfg, url = amplitude.target()
    with amplitude.client(cfg, url) as client:
        cohort = find_cohort(client, cohort_id, include_sync_info=True)
    if output is OutputFormat.json:
        print_json({"ok": True, "cohort": cohort})
        return
    owners = cohort.get("owners")
    syncs = cohort.get("syncMetadata")
    rows: list[tuple[str, Any]] = [
        ("id", cohort.get("id")),
        ("name", cohort.get("name")),
        ("size", f"{cohort['size']:,}" if isinstance(cohort.get("size"), int) else None),
        ("owners", ", ".join(map(str, owners)) if isinstance(owners, list) else owners),
        ("published", "yes" if cohort.get("published") else "no"),
        ("type", cohort.get("type")),
        ("last computed", _timestamp(cohort.get("lastComputed"))),
        ("last modified", _timestamp(cohort.get("lastMod"))),
        ("sync destinations", len(syncs) if isinstance(syncs, list) else "unknown"),
    ]
    for number, sync in enumerate(syncs if isinstance(syncs, list) else [], 1):
        rows.append((f"  sync {number}", _sync_text(sync)))
    out.print(key_values(rows))


def _sync_text(sync: Any) -> str:
    """One syncMetadata entry as ``key=value`` pairs (Amplitude does not document its fields)."""
    if not isinstance(sync, dict):
        return str(sync)
    return ", ".join(f"{key}={value}" for key, value in sync.items())


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """``cohorts download``'s export: ``--props``, ``--prop-key``, ``--request-id`` and the
    export wait, ``--export-timeout`` (``--timeout`` its deprecated name)."""

    props: Annotated[
        bool, typer.Option("--props", help="Ask for user properties in the export (props=1).")
    ] = False
    prop_keys: Annotated[
        list[str] | None,
        typer.Option("--prop-key", help="Only this user property (repeatable; implies --props)."),
    ] = None
    request_id: Annotated[
        str | None,
        option(
            "--request-id",
            help="Resume an export already requested (its file stays available for 7 days) "
            "instead of requesting a new one: exports are limited to 60 per 10 minutes.",
        ),
    ] = None
    export_timeout: Annotated[
        str | None,
        option(
            "--export-timeout",
            metavar="DURATION",
            help="Give up if the export is not ready after this long: 15m, 1h. [default: 15m]",
        ),
    ] = None
    deprecated_timeout: Annotated[
        str | None,
        option(
            "--timeout",
            metavar="DURATION",
            help="Deprecated: the export wait, now --export-timeout (until the next release).",
        ),
    ] = None

    def wait(self) -> float:
        """Seconds of the export wait: --export-timeout, or the deprecated --timeout (warned).

        Also refuses --props/--prop-key with --request-id (a resumed export has its columns).
        """
        if self.deprecated_timeout is not None:
            if self.export_timeout is not None:
                raise InputError("give --export-timeout only: --timeout is its deprecated name")
            err.print(
                "warning: `cohorts download --timeout` is deprecated: it is the export wait, "
                "now --export-timeout; in the next release --timeout will be the per-request "
                "deadline (--request-timeout today)"
            )
            seconds = parse_duration(self.deprecated_timeout, option="--timeout")
        else:
            seconds = parse_duration(self.export_timeout or "15m", option="--export-timeout")
        if self.request_id is not None and (self.props or self.prop_keys):
            raise InputError(
                "--props/--prop-key apply when an export is requested; a resumed export "
                "(--request-id) has the columns it was requested with"
            )
        return seconds


@app.command("download")
@with_bundles
def download(
    cohort_id: Annotated[str, typer.Argument(help="The cohort to export.", show_default=False)],
    out_file: Annotated[
        Path,
        option(
            "--out",
            "-o",
            help="File to write the members to (replaced when the download completes); "
            "- writes them to stdout (the summary then goes to stderr).",
            dir_okay=False,
        ),
    ],
    ids_only: Annotated[
        bool,
        typer.Option(
            "--ids-only",
            help="Write one id per line (user ids; amplitude ids with --id-type amplitude) "
            "instead of Amplitude's CSV.",
        ),
    ] = False,
    id_type: IdTypeOption = IdType.user,
    *,
    export: ExportRequest,
    output: OutputLong = OutputFormat.table,
    verbose: Verbose = 0,
    amplitude: ExportOptions,
) -> None:
    """Export a cohort and write its members to -o FILE (- for stdout): Amplitude's CSV, or
    ids only.

    Starts an export (or resumes --request-id), polls its status with growing waits until
    it is ready (at most --export-timeout), then downloads the file; a signed-URL redirect
    is followed without sending the credentials there.
    """
    wait = export.wait()
    cfg, url = amplitude.target()
    target = DataOutput(out_file)
    with (
        amplitude.client(cfg, url) as client,
        export_progress(cohort_id) as on_poll,
        tempfile.TemporaryDirectory(prefix="cohortctl-") as scratch,
    ):
        result = download_cohort(
            client,
            cohort_id,
            Path(scratch) / "members" if target.to_stdout else out_file,
            ids_only=ids_only,
            amplitude_ids=id_type is IdType.amplitude,
            props=export.props,
            prop_keys=export.prop_keys or (),
            timeout=wait,
            on_poll=on_poll,
            request_id=export.request_id,
        )
        if target.to_stdout:
            with open(result.path, "rb") as members, target.stdout():
                shutil.copyfileobj(members, sys.stdout.buffer)
            result = dataclasses.replace(result, path="-")
    summary = target.summary
    if output is OutputFormat.json:
        target.print_json(
            {
                "ok": True,
                "cohort_id": result.cohort_id,
                "request_id": result.request_id,
                "file": result.path,
                "bytes": result.bytes,
                "rows": result.rows,
                "members_written": result.members_written,
                "skipped_without_id": result.skipped_without_id,
                "ids_only": result.ids_only,
                "id_column": result.id_column,
                "polls": result.polls,
                "answers": result.answers,
            }
        )
        return
    rows: list[tuple[str, Any]] = [
        ("cohort id", result.cohort_id),
        ("file", result.path),
        ("members", f"{result.rows:,}"),
    ]
    if result.ids_only:
        rows.append((f"{result.id_column} written", f"{result.members_written:,}"))
        rows.append((f"without {result.id_column}", f"{result.skipped_without_id:,}"))
    rows += [("bytes downloaded", f"{result.bytes:,}"), ("status polls", result.polls)]
    summary.print(key_values(rows))


app.command("reconcile")(reconcile_command)
