"""``cohortctl mock webhook``: fire one Cohort Webhook message (or a flow) at an endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from cohortctl.cli import webhook_options as wh
from cohortctl.cli.bundles import OutputOptions, with_bundles
from cohortctl.cli.exchanges import (
    EnvRef,
    curl_command,
    dry_run_block,
    env_name_for_header,
    write_lines,
)
from cohortctl.cli.mock import Member, MockCohort, Sending, _render_results
from cohortctl.cli.render import OutputFormat, err, print_json
from cohortctl.errors import CheckFailed, InputError
from cohortctl.http.once import send_once
from cohortctl.http.outcomes import Outcome
from cohortctl.partner import mock
from cohortctl.partner.webhooks.messages import (
    WebhookRequest,
    make_webhook_client,
    plan_messages,
)
from cohortctl.partner.webhooks.payload import User, WebhookDestination, WebhookRun


@with_bundles
def webhook(
    *,
    target: wh.WebhookOptions,
    cohort: MockCohort,
    member: Member = True,
    properties: wh.PropertyOptions,
    sending: Sending,
    view: OutputOptions,
) -> None:
    """Send Cohort Webhook messages: users entering (--member) or leaving (--not-member).

    POST to the webhook URL itself with Content-Type: application/json, User-Agent:
    Amplitude/Webhook/1.0 and your --header values (no Authorization); the default body:
    {"cohort_name", "cohort_id", "in_cohort", "computed_time", "message_id":
    "{uuid}::enter|exit::{n}", "users": [{"user_id", "user_properties"}]}, one message per
    --batch-size users, or the --payload FreeMarker template's output.
    """
    destination = target.destination()
    users = wh.read_users(
        cohort.ids_file, cohort.column, cohort.ids, properties.selection(), mock.MOCK_USERS
    )
    size = cohort.batch_size if cohort.batch_size is not None else mock.DEFAULT_BATCH_SIZE
    _check_spec(cohort.cohort_name, cohort.cohort_id, size, sending.expect)
    requests = plan_messages(
        destination,
        cohort.cohort_name,
        cohort.cohort_id,
        users,
        in_cohort=member,
        batch_size=size,
        run=WebhookRun(),
    )
    _execute(destination, requests, sending, view)


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
    sending: Sending,
    view: OutputOptions,
) -> None:
    """``mock flow --mode webhook``: every user enters, then the first one leaves."""
    run = WebhookRun()
    requests = plan_messages(
        destination, cohort_name, cohort_id, users, in_cohort=True, batch_size=batch_size, run=run
    )
    requests += plan_messages(
        destination, cohort_name, cohort_id, users[:1], in_cohort=False, batch_size=1, run=run
    )
    _execute(destination, requests, sending, view)


def _execute(
    destination: WebhookDestination,
    requests: Sequence[WebhookRequest],
    sending: Sending,
    view: OutputOptions,
) -> None:
    if sending.dry_run:
        _render_dry_run(destination, requests, view.output, as_curl=sending.as_curl)
        return
    results: list[Outcome] = []
    with wh.webhook_recording(sending.har, destination), make_webhook_client(destination) as client:
        for request in requests:
            results.append(send_once(client, destination, request, expect=sending.expect)[0])
    if not _render_results(results, view.output, quiet=view.quiet):
        raise CheckFailed("not every webhook message was accepted")


def _render_dry_run(
    destination: WebhookDestination,
    requests: Sequence[WebhookRequest],
    output: OutputFormat,
    *,
    as_curl: bool = False,
) -> None:
    """The messages in the one dry-run format of every command (bodies whole), or as curl
    commands reading each custom header from ``$COHORTCTL_HEADER_<NAME>``."""
    if output is OutputFormat.json and not as_curl:
        print_json(
            {"ok": True, "dry_run": True, "requests": [r.shown(destination) for r in requests]}
        )
        return
    custom = {name.lower() for name, _ in destination.headers}
    lines: list[str] = []
    for number, request in enumerate(requests, 1):
        shown = request.shown(destination)
        direction = "entering" if request.in_cohort else "leaving"
        title = f"webhook, {request.users} user(s) {direction}"
        if as_curl:
            headers: list[tuple[str, str | EnvRef]] = [
                (name, EnvRef(f"${env_name_for_header(name)}") if name.lower() in custom else value)
                for name, value in request.headers.items()
            ]
            content = destination.scrub(request.content.decode("utf-8", errors="replace"))
            lines += [f"# {number}/{len(requests)} {title}"]
            lines += [curl_command("POST", shown["url"], headers, content.encode()), ""]
        else:
            lines += dry_run_block(
                number, len(requests), title, "POST", shown["url"],
                list(shown["headers"].items()), shown["body"],
            )  # fmt: skip
    write_lines(lines)
    err.print(f"dry run: {len(requests)} message(s) shown, nothing sent")
