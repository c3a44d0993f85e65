"""Options and set-up shared by the customer-side commands: upload, membership, cohorts.

Credentials come from ``AMPLITUDE_API_KEY`` / ``AMPLITUDE_SECRET_KEY`` or a config profile,
never from a flag. Every wait between retries and export polls goes through the module's
``sleep``: the one seam tests replace to record the waits instead of waiting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cohortctl.cli.bundles import DryRunOptions, SettingsOptions
from cohortctl.cli.exchanges import EnvRef, curl_command, dry_run_block, write_lines
from cohortctl.cli.options import (
    TIMEOUT_HELP,
    AsCurl,
    CaCert,
    Har,
    UserAgent,
    flag,
    option,
    request_deadline,
)
from cohortctl.cli.progress import Meter, make_bar
from cohortctl.cli.render import OutputFormat, err, key_values, out, print_json
from cohortctl.config import Config, amplitude_base_url, ensure_safe_url
from cohortctl.customer.api import AMPLITUDE_REQUEST_TIMEOUT, DEFAULT_RETRY, ExportPoll
from cohortctl.customer.client import AmplitudeClient, connect
from cohortctl.customer.uploading import Plan, RunResult, UploadProgress
from cohortctl.errors import InputError
from cohortctl.http.har import recording
from cohortctl.ids import IdList, IdType, read_ids
from cohortctl.retry import RetryPolicy

# How the commands wait between retries and polls; tests replace it to record the waits.
sleep: Callable[[float], None] = time.sleep

Region = Annotated[str | None, option("--region",
    help="Amplitude data region: us or eu (env AMPLITUDE_REGION; default us).")]  # fmt: skip
BaseUrl = Annotated[str | None, option("--base-url", help=(
    "Amplitude host to call instead of the region's, e.g. the embedded fake "
    "(env AMPLITUDE_BASE_URL)."))]  # fmt: skip
Timeout = Annotated[
    str, option("--timeout", metavar="DURATION", show_default=True, help=TIMEOUT_HELP)
]
Retries = Annotated[int, option("--retries", min=0, show_default=True, help=(
    "Retries of a request answered 429 or 5xx, or not answered; waits double from "
    "1 s (Retry-After wins)."))]  # fmt: skip
IdTypeOption = Annotated[IdType, option("--id-type", case_sensitive=False, show_default=True,
    help="What the file holds: user ids, or amplitude ids (integers).")]  # fmt: skip
Column = Annotated[str | None, option("--column", help=(
    "CSV/TSV column holding the ids (default: the only column, or a column named "
    "like user_id / amplitude_id)."))]  # fmt: skip
DryRun = Annotated[bool, flag("--dry-run", help=(
    "Print the exact request(s) (Authorization redacted) and send nothing; "
    "needs no credentials."))]  # fmt: skip
StrictIds = Annotated[bool, flag("--strict-ids", help=(
    "Fail the whole request if any id is invalid (skip_invalid_ids=false) instead "
    "of skipping invalid ids."))]  # fmt: skip
GroupType = Annotated[str | None, option("--group-type", help=(
    "Group type, for a group cohort instead of a user cohort (cg / count_group)."))]  # fmt: skip


DEFAULT_TIMEOUT_TEXT = f"{AMPLITUDE_REQUEST_TIMEOUT:.0f}s"
DEFAULT_RETRIES = DEFAULT_RETRY.retries


def retry_policy(retries: int) -> RetryPolicy:
    """The retry policy for ``--retries``: waits double from 1 s, Retry-After wins."""
    return dataclasses.replace(DEFAULT_RETRY, retries=retries)


IdFile = Annotated[
    str,
    typer.Argument(
        help="ID file: one id per line, or CSV/TSV (see --column); .gz ok; - for stdin.",
        show_default=False,
    ),
]


@dataclasses.dataclass(frozen=True)
class RequestOptions(DryRunOptions):
    """How ``upload`` and ``membership`` read the ids and shape (or only show) the requests."""

    strict_ids: StrictIds = False
    group_type: GroupType = None
    column: Column = None
    dry_run: DryRun = False
    as_curl: AsCurl = False


@dataclasses.dataclass(frozen=True)
class AmplitudeOptions(SettingsOptions):
    """The customer commands' bundle: where Amplitude is, whose credentials, how to call it
    (plus the settings bundle: ``--profile``, ``--config``, ``--allow-insecure-http``).

    Spread into each command's options by :func:`cohortctl.cli.bundles.with_bundles`.
    """

    region: Region = None
    base_url: BaseUrl = None
    har: Har = None
    timeout: Timeout = DEFAULT_TIMEOUT_TEXT
    retries: Retries = DEFAULT_RETRIES
    user_agent: UserAgent = None
    ca_cert: CaCert = None

    def target(self) -> tuple[Config, str]:
        """The settings and the Amplitude host (flag > env > profile > default), http checked."""
        return load_target(
            self.profile,
            self.config,
            region=self.region,
            base_url=self.base_url,
            allow_insecure_http=self.allow_insecure_http,
        )

    def client(
        self, cfg: Config, base_url: str
    ) -> contextlib.AbstractContextManager[AmplitudeClient]:
        """A client on ``base_url`` with these settings (HAR recording included)."""
        return open_client(cfg, base_url, timeout=self.timeout, retries=self.retries, har=self.har)


def load_target(
    profile: str | None,
    config: Path | None,
    *,
    region: str | None,
    base_url: str | None,
    allow_insecure_http: bool,
) -> tuple[Config, str]:
    """The settings and the Amplitude host (flag > env > profile > default), http checked."""
    cfg = Config.load(profile, path=config)
    url = amplitude_base_url(
        str(cfg.get("region", region) or "us"), cfg.get("base_url", base_url) or None
    )
    ensure_safe_url(url, allow_insecure_http=allow_insecure_http, what="Amplitude credentials")
    return cfg, url


def app_id_of(cfg: Config, flag: int | None) -> int:
    """The project id as an integer, from ``--app-id``, env or profile."""
    value = cfg.require("app_id", flag, flag_name="--app-id")
    if isinstance(value, bool):
        raise InputError(f"app id must be an integer (the project id), got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(
            f"app id must be an integer (the project id, not the API key), got {value!r}"
        ) from None


@contextlib.contextmanager
def open_client(
    cfg: Config, base_url: str, *, timeout: str, retries: int, har: Path | None = None
) -> Iterator[AmplitudeClient]:
    """A client with credentials from env or profile; closed when the block ends.

    ``har``: every exchange of the block is recorded there (HAR 1.2, credentials redacted).
    """
    api_key = str(cfg.require("api_key"))
    secret_key = str(cfg.require("secret_key"))
    with recording(har, base_url=base_url, secrets=(api_key, secret_key)):
        yield from _client(base_url, api_key, secret_key, timeout=timeout, retries=retries)


def _client(
    base_url: str, api_key: str, secret_key: str, *, timeout: str, retries: int
) -> Iterator[AmplitudeClient]:
    client = connect(
        base_url,
        api_key=api_key,
        secret_key=secret_key,
        timeout=request_deadline(timeout),
        retry=retry_policy(retries),
        sleep=lambda seconds: sleep(seconds),
    )
    try:
        yield client
    finally:
        client.http.close()


def load_ids(source: str, *, column: str | None, id_type: IdType) -> IdList:
    """Read the ids of FILE (``-`` for stdin): unique, in file order."""
    stdin = sys.stdin.buffer if source == "-" else None
    return read_ids(source, column=column, id_type=id_type, stdin=stdin)


def file_rows(ids: IdList) -> list[tuple[str, Any]]:
    """What the reader saw in the file, as table rows."""
    stats = ids.stats
    rows: list[tuple[str, Any]] = [
        ("file", stats.source),
        ("rows", f"{stats.rows:,}"),
        ("unique ids", f"{stats.unique:,}"),
        ("duplicates dropped", f"{stats.duplicates:,}"),
        ("blank lines", f"{stats.blank:,}"),
    ]
    if stats.column:
        rows.append(("column", stats.column))
    return rows


def progress_bar() -> Progress:
    """The customer commands' progress bar on stderr: what, bar, done/total, elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@contextlib.contextmanager
def progress_reporter(
    description: str, total: int, *, quiet: bool = False
) -> Iterator[Callable[[UploadProgress], None]]:
    """A progress callback: a bar on stderr when it is a terminal, plain lines otherwise,
    nothing with ``quiet``."""
    if quiet:
        yield lambda _progress: None
        return
    meter = Meter(total, "ids")
    if not err.is_terminal:

        def plain(progress: UploadProgress) -> None:
            step = f"request {progress.done:,}/{progress.steps:,}"
            err.print(f"{progress.call}: {meter.line(progress.ids_sent, step)}", markup=False)

        yield plain
        return
    bar, task = make_bar(description, total, err)
    with bar:

        def update(progress: UploadProgress) -> None:
            bar.update(task, completed=progress.ids_sent, line=meter.line(progress.ids_sent))

        yield update


def print_dry_run(
    plan: Plan, base_url: str, ids: IdList, output: OutputFormat, *, as_curl: bool = False
) -> None:
    """Show the exact requests a plan would send, ids in full (Authorization redacted, or
    ``as_curl``: curl commands reading the keys from the environment); send nothing."""
    described = plan.describe(base_url, whole=True)
    if output is OutputFormat.json and not as_curl:
        print_json(
            {
                "ok": True,
                "dry_run": True,
                "file": dataclasses.asdict(ids.stats),
                "requests": described,
            }
        )
        return
    if not as_curl:
        out.print(key_values(file_rows(ids), title="ID file"))
        out.print()
    print_requests(described, as_curl=as_curl)
    err.print("dry run: nothing was sent")


def print_requests(described: list[dict[str, Any]], *, as_curl: bool = False) -> None:
    """Requests to Amplitude (``Plan.describe``'s shape) in the one dry-run format of every
    command, or as curl commands reading the keys from ``$AMPLITUDE_API_KEY`` and
    ``$AMPLITUDE_SECRET_KEY``."""
    lines: list[str] = []
    for request in described:
        title = f"{request['call']} ({_id_count(request['body']):,} ids)"
        if as_curl:
            headers = [(k, v) for k, v in request["headers"].items() if k != "Authorization"]
            body = json.dumps(request["body"], ensure_ascii=False, separators=(",", ":"))
            user = EnvRef("$AMPLITUDE_API_KEY:$AMPLITUDE_SECRET_KEY")
            lines += [f"# {request['request']}/{len(described)} {title}"]
            command = curl_command(
                request["method"], request["url"], list(headers), body.encode(), user=user
            )
            lines += [command, ""]
        else:
            lines += dry_run_block(
                request["request"],
                len(described),
                title,
                request["method"],
                request["url"],
                list(request["headers"].items()),
                request["body"],
            )
    write_lines(lines)


def _id_count(body: dict[str, Any]) -> int:
    if "ids" in body:
        return len(body["ids"])
    return sum(len(m.get("ids", ())) for m in body.get("memberships", ()))


def print_run_result(
    result: RunResult, ids: IdList, output: OutputFormat, *, quiet: bool = False
) -> None:
    """Show what a run did: Amplitude's answers in JSON, a summary table, or (``quiet``) one
    line on stderr."""
    if output is OutputFormat.json:
        print_json({"ok": True, "summary": result.summary(), "answers": result.answers})
        return
    if quiet:
        what = "validated" if result.validate_only else "sent"
        err.print(
            f"cohort {result.cohort_id}: {sum(r['ids'] for r in result.requests):,} ids {what} "
            f"in {len(result.requests):,} request(s), {result.matched:,} matched",
            markup=False,
        )
        return
    rows: list[tuple[str, Any]] = [("cohort id", result.cohort_id)]
    if result.name is not None:
        rows.append(("name", result.name))
    if result.operation:
        rows.append(("operation", result.operation))
    if result.size is not None:
        rows.append(("size", f"{result.size:,}"))
    rows.append(("matched / totals", f"{result.matched:,} / {result.totals:,}"))
    if result.invalid_ids_sample:
        rows.append(("invalid ids (sample)", ", ".join(result.invalid_ids_sample)))
    if result.membership_skipped_ids or result.kind == "membership":
        rows.append(("skipped ids", f"{result.membership_skipped_ids:,}"))
    if result.skipped_ids_sample:
        rows.append(("skipped ids (sample)", ", ".join(result.skipped_ids_sample)))
    rows.append(("requests", ", ".join(f"{r['call']} ({r['ids']:,} ids)" for r in result.requests)))
    if result.validate_only:
        rows.append(("validate only", "yes: Amplitude saved nothing"))
    out.print(key_values([*rows, *file_rows(ids)]))


@contextlib.contextmanager
def export_progress(cohort_id: str) -> Iterator[Callable[[ExportPoll], None]]:
    """A poll callback: a spinner on stderr when it is a terminal, plain lines otherwise."""
    if not err.is_terminal:

        def plain(poll: ExportPoll) -> None:
            following = f", next poll in {poll.next_delay:.0f}s" if poll.next_delay else ""
            err.print(
                f"export of {escape(cohort_id)}: {escape(poll.async_status or 'no status')} "
                f"(poll {poll.polls}, {poll.elapsed:.0f}s{following})"
            )

        yield plain
        return
    with err.status(f"exporting cohort {escape(cohort_id)}") as spinner:

        def update(poll: ExportPoll) -> None:
            spinner.update(
                f"exporting cohort {escape(cohort_id)}: {escape(poll.async_status or '...')} "
                f"(poll {poll.polls}, {poll.elapsed:.0f}s)"
            )

        yield update
