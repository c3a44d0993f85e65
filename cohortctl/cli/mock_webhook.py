"""``cohortctl mock webhook``: fire one Cohort Webhook message (or a flow) at an endpoint."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from cohortctl.cli import destination_options as dest
from cohortctl.cli import webhook_options as wh
from cohortctl.cli.mock import (
    BatchSize,
    CohortId,
    CohortName,
    DryRun,
    Expect,
    Ids,
    IdsFile,
    Member,
    _render_results,
)
from cohortctl.cli.options import (
    AllowInsecureHttp,
    ConfigFile,
    Har,
    Output,
    Profile,
    Quiet,
    Verbose,
    check_verbosity,
)
from cohortctl.cli.render import OutputFormat, err, print_json
from cohortctl.config import Config
from cohortctl.errors import CheckFailed, InputError
from cohortctl.http.outcomes import Outcome
from cohortctl.partner import mock
from cohortctl.partner.destination import DEFAULT_TIMEOUT
from cohortctl.partner.mock import abbreviate_json
from cohortctl.partner.webhooks.messages import (
    WebhookRequest,
    make_webhook_client,
    plan_messages,
    send_message,
)
from cohortctl.partner.webhooks.payload import User, WebhookDestination, WebhookRun

DRY_RUN_KEEP = 10

WebhookPath = Annotated[
    str | None,
    typer.Option(
        "--path",
        help="Added to the webhook URL's path (or a full URL) [default: the URL itself].",
        show_default=False,
        rich_help_panel=dest.PANEL,
    ),
]
WebhookHeader = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        "-H",
        help="Custom header NAME:VALUE, repeatable, at most 5 (Amplitude's limit); the only "
        "auth a webhook has, so values are never printed.",
        show_default=False,
        rich_help_panel=dest.PANEL,
    ),
]
Template = Annotated[
    Path | None,
    typer.Option(
        "--payload",
        help="FreeMarker template reshaping the body over `input` (the default body), as in "
        "Amplitude's Cohort Webhook settings.",
        show_default=False,
        dir_okay=False,
        rich_help_panel=wh.PANEL,
    ),
]


def webhook(
    url: dest.Url = None,
    destination_name: dest.DestinationName = None,
    path: WebhookPath = None,
    header: WebhookHeader = None,
    user_agent: wh.UserAgent = None,
    timeout: dest.Timeout = DEFAULT_TIMEOUT,
    cohort_name: CohortName = mock.DEFAULT_COHORT_NAME,
    cohort_id: CohortId = mock.DEFAULT_COHORT_ID,
    ids_file: IdsFile = None,
    column: dest.IdColumn = None,
    ids: Ids = None,
    batch_size: BatchSize = mock.DEFAULT_BATCH_SIZE,
    member: Member = True,
    prop: wh.Property = None,
    all_properties: wh.AllProperties = False,
    typed_properties: wh.TypedProperties = False,
    payload: Template = None,
    expect: Expect = None,
    dry_run: DryRun = False,
    output: Output = OutputFormat.table,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    profile: Profile = None,
    config: ConfigFile = None,
    allow_insecure_http: AllowInsecureHttp = False,
    har: Har = None,
) -> None:
    """Send Cohort Webhook messages: users entering (--member) or leaving (--not-member).

    POST to the webhook URL itself with Content-Type: application/json, User-Agent:
    Amplitude/Webhook/1.0 and your --header values (no Authorization); the default body:
    {"cohort_name", "cohort_id", "in_cohort", "computed_time", "message_id":
    "{uuid}::enter|exit::{n}", "users": [{"user_id", "user_properties"}]}, one message per
    --batch-size users, or the --payload FreeMarker template's output.
    """
    check_verbosity(verbose, quiet)
    cfg = Config.load(profile, path=config)
    destination = wh.webhook_destination(
        cfg,
        url=url,
        path=path,
        headers=header,
        user_agent=user_agent,
        timeout=timeout,
        payload=payload,
        allow_insecure_http=allow_insecure_http,
        file=dest.load_destination(destination_name),
    )
    users = wh.read_users(
        ids_file, column, ids, wh.selection(prop, all_properties, typed_properties), mock.SAMPLE_IDS
    )
    size = batch_size if batch_size is not None else mock.DEFAULT_BATCH_SIZE
    _check_spec(cohort_name, cohort_id, size, expect)
    requests = plan_messages(
        destination,
        cohort_name,
        cohort_id,
        users,
        in_cohort=member,
        batch_size=size,
        run=WebhookRun(),
    )
    _execute(
        destination, requests, expect=expect, dry_run=dry_run, output=output, quiet=quiet, har=har
    )


def _check_spec(cohort_name: str, cohort_id: str, batch_size: int, expect: int | None) -> None:
    if not cohort_name.strip() or not cohort_id.strip():
        raise InputError("--cohort-name and --cohort-id must not be empty")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if expect is not None and not 100 <= expect <= 599:
        raise InputError(f"--expect must be an HTTP status (100-599), got {expect}")


def webhook_flow(
    destination: WebhookDestination,
    cohort_name: str,
    cohort_id: str,
    users: Sequence[User],
    *,
    batch_size: int,
    expect: int | None,
    dry_run: bool,
    output: OutputFormat,
    quiet: bool = False,
    har: Path | None = None,
) -> None:
    """``mock flow --mode webhook``: every user enters, then the first one leaves."""
    run = WebhookRun()
    requests = plan_messages(
        destination, cohort_name, cohort_id, users, in_cohort=True, batch_size=batch_size, run=run
    )
    requests += plan_messages(
        destination, cohort_name, cohort_id, users[:1], in_cohort=False, batch_size=1, run=run
    )
    _execute(
        destination, requests, expect=expect, dry_run=dry_run, output=output, quiet=quiet, har=har
    )


def _execute(
    destination: WebhookDestination,
    requests: Sequence[WebhookRequest],
    *,
    expect: int | None,
    dry_run: bool,
    output: OutputFormat,
    quiet: bool = False,
    har: Path | None = None,
) -> None:
    if dry_run:
        _render_dry_run(destination, requests, output)
        return
    results: list[Outcome] = []
    with wh.webhook_recording(har, destination), make_webhook_client(destination) as client:
        for request in requests:
            results.append(send_message(client, destination, request, expect=expect))
    if not _render_results(results, output, quiet=quiet):
        raise CheckFailed("not every webhook message was accepted")


def _render_dry_run(
    destination: WebhookDestination, requests: Sequence[WebhookRequest], output: OutputFormat
) -> None:
    if output is OutputFormat.json:
        print_json({"dry_run": True, "requests": [r.shown(destination) for r in requests]})
        return
    for number, request in enumerate(requests, 1):
        shown = request.shown(destination)
        direction = "entering" if request.in_cohort else "leaving"
        lines = [f"# {number}/{len(requests)} webhook, {request.users} user(s) {direction}"]
        lines.append(f"POST {shown['url']}")
        lines += [f"{k}: {v}" for k, v in shown["headers"].items()]
        body = abbreviate_json(shown["body"], DRY_RUN_KEEP)
        lines += ["", json.dumps(body, indent=2, ensure_ascii=False), ""]
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    err.print(f"dry run: {len(requests)} message(s) shown, nothing sent")
