"""``cohortctl check``: the conformance suite against a partner endpoint, with CI reports."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from rich.markup import escape
from rich.text import Text

from cohortctl.cli import destination_options as dest
from cohortctl.cli import webhook_options as wh
from cohortctl.cli.bundles import OutputOptions, with_bundles
from cohortctl.cli.exchanges import status_style
from cohortctl.cli.options import CaCert, Har, flag, option, set_user_agent
from cohortctl.cli.render import OutputFormat, err, out, print_json, table
from cohortctl.errors import CheckFailed, InputError
from cohortctl.http.text import terminal_text
from cohortctl.partner.conformance import checks, reports
from cohortctl.partner.conformance.run import (
    DEFAULT_BATCH_SIZE,
    MAX_BURST,
    CheckOptions,
    CheckRun,
    junit_report,
    markdown_report,
)
from cohortctl.partner.destination import make_client
from cohortctl.partner.destination_files import REJECTS
from cohortctl.partner.mock import FlowMode

SUITE_PANEL = "Suite"
REPORTS = "Reports"
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"

Mode = Annotated[FlowMode | None, option("--mode", panel=SUITE_PANEL, case_sensitive=False, help=(
    "list: list-create/add/remove; property: identify and identify-batch; both; "
    "webhook: Cohort Webhook messages to --url itself. [default: the destination's mode, "
    "else list]"))]  # fmt: skip
BatchSize = Annotated[int | None, option("--batch-size", panel=SUITE_PANEL, min=1, help=(
    "Test users generated (cohortctl-check-RUN-N), sent in batches of the destination's "
    "size [default: 1000, or the destination's batch size if smaller]."))]  # fmt: skip
Ids = Annotated[list[str] | None, option("--id", panel=SUITE_PANEL, help=(
    "Use this existing user instead of generated ones (repeatable), for endpoints "
    "that answer 404 to users they do not know."))]  # fmt: skip
IdsFile = Annotated[Path | None, option("--ids", panel=SUITE_PANEL, dir_okay=False, help=(
    "File of existing users to use (CSV column, newline list, gzip; - for stdin)."))]  # fmt: skip
UnknownUser = Annotated[str | None, option("--unknown-user", panel=SUITE_PANEL, help=(
    "A user id the endpoint does not know: runs the 'rejects an unknown user' "
    "cases (404 expected)."))]  # fmt: skip
Burst = Annotated[int | None, option("--burst", panel=SUITE_PANEL, help=(
    f"Send N requests at once (list-add; identify in property mode; at most "
    f"{MAX_BURST}): every 429 must carry a usable Retry-After."))]  # fmt: skip
ExpectThrottle = Annotated[bool, flag("--expect-throttle", panel=SUITE_PANEL, help=(
    "With --burst: pass only when at least one 429 (with a usable Retry-After) "
    "comes."))]  # fmt: skip
MaxLatency = Annotated[float | None, option("--max-latency-ms", panel=SUITE_PANEL, help=(
    "Fail when any accepted call takes longer than this (names the slowest) "
    "[webhook mode default: 2000, Amplitude's guidance]."))]  # fmt: skip
RequireHeader = Annotated[list[str] | None, option("--require-header", panel=SUITE_PANEL, help=(
    "Webhook mode: a message without this header (repeatable) must be rejected "
    "with 401 or 403."))]  # fmt: skip
Junit = Annotated[Path | None, option("--junit", panel=REPORTS, dir_okay=False,
    help="Write a JUnit XML report here (GitHub, GitLab and Jenkins read it).")]  # fmt: skip


@dataclass(frozen=True)
class OptInCases:
    """The opt-in cases: ``--unknown-user``, ``--burst``, ``--expect-throttle``,
    ``--max-latency-ms`` (the fields of :class:`CheckOptions` of the same names)."""

    unknown_user: UnknownUser = None
    burst: Burst = None
    expect_throttle: ExpectThrottle = False
    max_latency_ms: MaxLatency = None


def _actual_cell(case: reports.CaseResult, actual: str) -> Text | str:
    """What came back, its status coloured on a terminal: 2xx green, 429 and redirects
    yellow, other failures red (rich leaves colour out without a TTY or with NO_COLOR)."""
    statuses = [r.get("status") for r in case.requests]
    if case.status == "skip" or not statuses:
        return actual
    status = statuses[-1]
    shown = str(status) if status is not None else actual.partition(" — ")[0]
    if not actual.startswith(shown):
        return Text(terminal_text(actual))
    return Text.assemble((shown, status_style(status)), terminal_text(actual[len(shown) :]))


def _render(run: CheckRun, output: OutputFormat, *, quiet: bool = False) -> None:
    if output is OutputFormat.json:
        print_json(run.to_dict())
    elif not quiet:
        title = f"cohortctl check · run {run.run_id} · {run.target} · mode {run.mode}"
        rows = [
            (name, result, expected, _actual_cell(case, actual))
            for case, (name, result, expected, actual) in zip(
                run.cases, reports.case_rows(run.cases), strict=True
            )
        ]
        out.print(table(["case", "result", "expected", "actual"], rows, title=escape(title)))
    counts = reports.totals(run.cases)
    summary = (
        f"run {run.run_id}: {counts.passed} passed, {counts.failed} failed, "
        f"{counts.skipped} skipped"
    )
    err.print(escape(summary) if run.passed else f"[red]{escape(summary)}[/]")
    for warning in run.warnings:
        err.print(escape(f"warning: {warning}"))
    if run.unclassified:
        shown = ", ".join(str(s) for s in run.unclassified)
        err.print(
            escape(
                f"unclassified: {shown} (no error classification of the destination covers "
                "them; Amplitude shows them as unclassified errors)"
            )
        )
    if not quiet:
        err.print(escape(run.test_data_note()))


@with_bundles
def check(
    *,
    target: dest.DestinationOptions,
    list_id: dest.GivenListId = None,
    mode: Mode = None,
    ca_cert: CaCert = None,
    batch_size: BatchSize = None,
    ids: Ids = None,
    ids_file: IdsFile = None,
    column: dest.IdColumn = None,
    cases: OptInCases,
    require_header: RequireHeader = None,
    user_agent: wh.UserAgent = None,
    webhook: wh.WebhookMessageOptions,
    junit: Junit = None,
    paths: dest.CallPathOptions,
    templates: dest.TemplateOptions,
    har: Har = None,
    view: OutputOptions,
) -> None:
    """Check that a partner endpoint handles every call Amplitude's cohort sync makes.

    Runs named cases and reports each as pass, fail or skip, with what was expected and what
    came back: the calls of the mode are accepted (list-create gives a list id); a wrong api
    key and missing credentials get 401, malformed JSON and a missing field 400, an unknown
    list 404; opt-in: an unknown user 404 (--unknown-user), throttling (--burst), a latency
    budget (--max-latency-ms).

    Test data is named "[Amplitude] cohortctl-check: RUN" (users cohortctl-check-RUN-N) and
    removed at the end; the empty list remains (Amplitude's protocol cannot delete a list).

    --mode webhook checks a Cohort Webhook endpoint (--url is the webhook URL): an entering
    and a leaving batch accepted, the same message twice accepted both times, a body that is
    not JSON rejected with a 4xx, a message without each --require-header rejected with
    401/403, every answer within --max-latency-ms (default 2000); every message rendered
    through --payload when given, with the --ids CSV's --property columns.

    Reports: --junit FILE, --output json, and a Markdown summary appended to
    $GITHUB_STEP_SUMMARY when set. Exit 0 when every case passed (skips do not fail), 1 when
    any failed, 2 for usage errors.
    """
    cfg = target.load_config()
    file = target.load_file()
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
        if file is not None and file.batch_size is not None:
            batch_size = min(batch_size, file.batch_size)
    variables = templates.variables(file)
    mode = mode or (FlowMode(file.mode) if file is not None else FlowMode.list)
    if mode is not FlowMode.webhook:
        if require_header:
            raise InputError("--require-header is for --mode webhook")
        webhook.refuse_outside_webhook_mode()
    chosen = webhook.selection()
    # with properties the --ids CSV is read once, ids and properties together (stdin too)
    users = dict(wh.read_users(ids_file, column, ids, chosen, ())) if chosen.active else None
    options = CheckOptions(
        mode=mode,
        ids=tuple(users) if users is not None else dest.read_user_ids(ids_file, column, ids),
        batch_size=batch_size,
        templates=templates.templates(file),
        variables=variables,
        list_id=list_id,
        rejects=file.rejects if file is not None else REJECTS,
        **asdict(cases),
    )
    summary_path = os.environ.get(SUMMARY_ENV) or None
    if mode is FlowMode.webhook:
        from cohortctl.partner.webhooks import conformance
        from cohortctl.partner.webhooks.messages import make_webhook_client

        webhook_dest = webhook.destination(cfg, target, file, user_agent=user_agent)
        extra = conformance.WebhookCheckOptions(
            require_headers=tuple(h.strip() for h in require_header or [] if h.strip()),
            max_latency_ms=cases.max_latency_ms or conformance.DEFAULT_MAX_LATENCY_MS,
            properties=users or {},
        )
        _check_reports(junit, summary_path)
        with (
            wh.webhook_recording(har, webhook_dest),
            make_webhook_client(webhook_dest) as webhook_client,
        ):
            run = conformance.run_webhook_check(webhook_client, webhook_dest, options, extra)
        _finish(run, junit, summary_path, view)
        return
    set_user_agent(user_agent)  # --user-agent also replaces cohortctl's own outside webhooks
    destination = target.destination(cfg, paths=paths.paths(), file=file, variables=variables)
    _check_reports(junit, summary_path)
    with dest.partner_recording(har, destination), make_client(destination) as client:
        run = checks.run_check(client, destination, options)
    _finish(run, junit, summary_path, view)


def _check_reports(junit: Path | None, summary_path: str | None) -> None:
    if junit is not None:
        reports.check_writable(junit, "--junit")
    if summary_path is not None:
        reports.check_writable(Path(summary_path), SUMMARY_ENV)


def _finish(
    run: CheckRun, junit: Path | None, summary_path: str | None, view: OutputOptions
) -> None:
    if junit is not None:
        reports.write_text(junit, junit_report(run), what="JUnit report")
    if summary_path is not None:
        reports.write_text(Path(summary_path), markdown_report(run), append=True, what=SUMMARY_ENV)
    _render(run, view.output, quiet=view.quiet)
    if not run.passed:
        failed = reports.totals(run.cases).failed
        raise CheckFailed(f"{failed} of {len(run.cases)} conformance cases failed")
