"""``cohortctl mock``: fire Amplitude's exact cohort-sync payloads at a partner endpoint."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.text import Text

from cohortctl.cli import destination_options as dest
from cohortctl.cli import options as opts
from cohortctl.cli import webhook_options as wh
from cohortctl.cli.bundles import DryRunOptions, OutputOptions, with_bundles
from cohortctl.cli.exchanges import curl_command, dry_run_block, status_style, write_lines
from cohortctl.cli.options import AsCurl, CaCert, Har, UserAgent, set_user_agent
from cohortctl.cli.render import OutputFormat, err, out, print_json, table
from cohortctl.config import Config
from cohortctl.errors import CheckFailed
from cohortctl.http.har import redact_url
from cohortctl.http.outcomes import Outcome
from cohortctl.http.text import body_excerpt
from cohortctl.partner import mock, payloads
from cohortctl.partner.destination import Destination, make_client
from cohortctl.partner.destination_files import DestinationFile
from cohortctl.partner.templates import Template, parse_vars

app = typer.Typer(
    help=(
        "Fire the exact payloads Amplitude's cohort sync sends at a partner endpoint and show "
        "what it answered, one row per request (each sent once, no retries).\n\n"
        "Exit 0 when every request got a 2xx (or the --expect status), 1 otherwise, "
        "2 for usage and input errors."
    ),
    no_args_is_help=True,
)

COHORT = "Cohort and users"
SENDING = "Sending"
DRY_RUN_KEEP = 10  # ids shown per array in a dry run before "… N more"

CohortName = Annotated[str, opts.option("--cohort-name", panel=COHORT, show_default=True,
    help="Cohort name in list names and trait keys.")]  # fmt: skip
CohortId = Annotated[
    str, opts.option("--cohort-id", panel=COHORT, show_default=True, help="Amplitude cohort id.")
]
IdsFile = Annotated[Path | None, opts.option("--ids", panel=COHORT, dir_okay=False,
    help="File of user ids (CSV column, newline list, gzip; - for stdin).")]  # fmt: skip
Ids = Annotated[list[str] | None, opts.option("--id", panel=COHORT, help=(
    f"A user id, repeatable [default without --ids: {', '.join(mock.MOCK_USERS)}]."))]  # fmt: skip
BatchSize = Annotated[int | None, opts.option("--batch-size", panel=COHORT, min=1,
    help="Ids per request [default: the destination's, else 1000].")]  # fmt: skip
Member = Annotated[bool, opts.flag("--member/--not-member", panel=COHORT, help=(
    "Trait value of identify calls: entered the cohort (true) or left it (false)."))]  # fmt: skip
ListId = Annotated[str | None, opts.option("--list-id", panel=COHORT,
    help="The partner's list id ($listId) for list-add and list-remove.")]  # fmt: skip
Expect = Annotated[int | None, opts.option("--expect", panel=SENDING, help=(
    "Status every request must get (a matching non-2xx passes) [default: any 2xx]."))]  # fmt: skip
DryRun = Annotated[bool, opts.flag("--dry-run", panel=SENDING,
    help="Print the exact requests (credentials redacted) and send nothing.")]  # fmt: skip
FlowModeOption = Annotated[mock.FlowMode | None, opts.option("--mode", case_sensitive=False, help=(
    "list: create, add, remove; property: identify and identify-batch true/false; "
    "both; webhook: Cohort Webhook messages entering, then leaving. "
    "[default: the destination's mode, else list]"))]  # fmt: skip


@dataclass(frozen=True)
class MockCohort:
    """The cohort and users of a ``mock`` command: ``--cohort-name``, ``--cohort-id``,
    ``--ids``/``--column``/``--id``, ``--batch-size``."""

    cohort_name: CohortName = mock.DEFAULT_COHORT_NAME
    cohort_id: CohortId = mock.DEFAULT_COHORT_ID
    ids_file: IdsFile = None
    column: dest.IdColumn = None
    ids: Ids = None
    batch_size: BatchSize = None

    def user_ids(self) -> tuple[str, ...]:
        """The ids given (file, then ``--id``), or the sample ids."""
        return dest.read_user_ids(self.ids_file, self.column, self.ids) or mock.MOCK_USERS

    def size(self, file: DestinationFile | None) -> int:
        """Ids per request: ``--batch-size``, else the destination's, else 1000."""
        if self.batch_size is not None:
            return self.batch_size
        if file is not None and file.batch_size is not None:
            return file.batch_size
        return mock.DEFAULT_BATCH_SIZE

    def spec(
        self,
        file: DestinationFile | None,
        sending: Sending,
        *,
        templates: Mapping[str, Template],
        variables: Mapping[str, str],
        list_id: str | None = None,
        member: bool = True,
    ) -> mock.MockSpec:
        """What to send: this cohort and its users, with the call's templates and
        variables and ``--expect``."""
        return mock.MockSpec(
            cohort_name=self.cohort_name,
            cohort_id=self.cohort_id,
            ids=self.user_ids(),
            batch_size=self.size(file),
            member=member,
            list_id=list_id,
            templates=templates,
            variables=variables,
            expect=sending.expect,
        )


@dataclass(frozen=True)
class Sending(DryRunOptions):
    """How a ``mock`` command sends: ``--expect``, ``--dry-run``, ``--as-curl``, ``--har``."""

    expect: Expect = None
    dry_run: DryRun = False
    as_curl: AsCurl = False
    har: Har = None

    def destination(
        self,
        target: dest.DestinationOptions,
        cfg: Config,
        file: DestinationFile | None,
        spec: mock.MockSpec,
        paths: Mapping[str, str],
    ) -> Destination:
        """The destination to send to (a dry run needs no credentials)."""
        return target.destination(
            cfg,
            paths=paths,
            require_credentials=not self.dry_run,
            file=file,
            variables=spec.variables,
        )


def _call_label(outcome: Outcome) -> str:
    member = outcome.extra.get("member")
    if member is None:
        return outcome.call
    if "message_id" in outcome.extra:  # a webhook message: users entering or leaving
        return f"{outcome.call} ({'entering' if member else 'leaving'})"
    return f"{outcome.call} ({str(member).lower()})"


def _status_cell(outcome: Outcome) -> Text:
    """The status, coloured on a terminal: 2xx green, 429 and redirects yellow, else red."""
    shown = str(outcome.status) if outcome.status is not None else outcome.error or "-"
    if outcome.extra.get("skipped"):
        return Text(shown)
    return Text(shown, style=status_style(outcome.status))


def _render_results(
    results: Sequence[Outcome], output: OutputFormat, *, quiet: bool = False
) -> bool:
    ok = mock.passed(results)
    list_ids = [o.extra["list_id"] for o in results if "list_id" in o.extra]
    if output is OutputFormat.json:
        print_json(
            {
                "ok": ok,
                "list_id": list_ids[-1] if list_ids else None,
                "results": [o.to_dict() for o in results],
            }
        )
    elif not quiet:
        rows = [
            tuple(
                cell if isinstance(cell, Text) else str(cell)
                for cell in (
                    _call_label(o),
                    o.method,
                    urlsplit(o.url).path or o.url,
                    o.extra.get("ids") or "",
                    _status_cell(o),
                    o.meaning,
                    f"{o.latency_ms:.0f}" if not o.extra.get("skipped") else "",
                    body_excerpt(o.body, 60),
                )
            )
            for o in results
        ]
        out.print(table(["call", "method", "path", "ids", "status", "meaning", "ms", "body"], rows))
    sent = [o for o in results if not o.extra.get("skipped")]
    good = sum(1 for o in sent if o.extra.get("passed"))
    skipped = len(results) - len(sent)
    summary = f"{len(results)} request(s): {good} passed, {len(sent) - good} failed"
    if skipped:
        summary += f", {skipped} skipped"
    err.print(summary if ok else f"[red]{summary}[/]")
    return ok


def _render_dry_run(
    destination: Destination,
    requests: Sequence[mock.PreparedRequest],
    output: OutputFormat,
    *,
    as_curl: bool = False,
) -> None:
    if output is OutputFormat.json and not as_curl:
        print_json(
            {"ok": True, "dry_run": True, "requests": [r.shown(destination) for r in requests]}
        )
        return
    lines: list[str] = []
    for number, request in enumerate(requests, 1):
        title = f"{request.call} ({request.ids} ids)"
        url = destination.scrub(redact_url(request.url))
        if as_curl:
            user, headers = dest.curl_credentials(destination, request.headers)
            lines += [f"# {number}/{len(requests)} {title}"]
            content = destination.scrub(request.content.decode("utf-8", errors="replace")).encode()
            lines += [curl_command(request.method, url, headers, content, user=user), ""]
        else:
            shown = destination.redacted_headers(request.headers)
            body = destination.scrub(request.content.decode("utf-8", errors="replace"))
            lines += dry_run_block(
                number, len(requests), title, request.method, url, list(shown.items()), body
            )
    write_lines(lines)
    err.print(f"dry run: {len(requests)} request(s) shown, nothing sent")


def _execute(
    destination: Destination,
    steps: list[mock.Step],
    spec: mock.MockSpec,
    sending: Sending,
    view: OutputOptions,
) -> None:
    if sending.dry_run:
        requests = mock.plan(destination, steps, spec)
        _render_dry_run(destination, requests, view.output, as_curl=sending.as_curl)
        return
    with dest.partner_recording(sending.har, destination), make_client(destination) as client:
        results = mock.run(client, destination, steps, spec)
    if not _render_results(results, view.output, quiet=view.quiet):
        raise CheckFailed("not every request got the answer expected (see the rows above)")


def _call_command(call: str) -> Callable[..., None]:
    def command(
        *,
        target: dest.DestinationOptions,
        path: str | None = None,  # annotated below: the help names the call's path
        user_agent: UserAgent = None,
        ca_cert: CaCert = None,
        cohort: MockCohort,
        list_id: ListId = None,
        member: Member = True,
        payload: Annotated[Path | None, dest.payload_option("--payload", "this call")] = None,
        var: dest.Var = None,
        sending: Sending,
        view: OutputOptions,
    ) -> None:
        cfg = target.load_config()
        file = target.load_file()
        given = {call: Template.from_file(payload)} if payload is not None else {}
        spec = cohort.spec(
            file,
            sending,
            member=member,
            list_id=list_id,
            templates=dest.merged_templates(file, given),
            variables=dest.custom_variables(file, parse_vars(var or [])),
        )
        paths = {call: path} if path is not None else {}
        destination = sending.destination(target, cfg, file, spec, paths)
        _execute(destination, mock.call_steps(call, spec), spec, sending, view)

    command.__annotations__["path"] = Annotated[
        str | None, dest.path_option("--path", call, what="the call")
    ]
    return with_bundles(command)


_CALL_HELP = {
    payloads.LIST_CREATE: (
        'Create a list: POST /lists {"name": "[Amplitude] NAME: ID"}; shows the list id '
        "read from the answer (--list-id-path)."
    ),
    payloads.LIST_ADD: 'Add users to a list: POST /lists/$listId/add {"userIds": [...]}.',
    payloads.LIST_REMOVE: (
        'Remove users from a list: POST /lists/$listId/remove {"userIds": [...]}.'
    ),
    payloads.IDENTIFY: (
        "Set the cohort trait on each user, one request per user: POST /identify "
        '{"type": "identify", "traits": {"[Amplitude] NAME: ID": true|false}, "userId": ...}.'
    ),
    payloads.IDENTIFY_BATCH: (
        'Set the cohort trait on users in batches: POST /batch {"batch": [identify, ...]}.'
    ),
}

# Options a call does not use are not offered at all (click then names them as unknown).
_UNUSED: dict[str, set[str]] = {
    payloads.LIST_CREATE: {"list_id", "ids_file", "column", "ids", "batch_size", "member"},
    payloads.LIST_ADD: {"member", "list_id_path"},
    payloads.LIST_REMOVE: {"member", "list_id_path"},
    payloads.IDENTIFY: {"list_id", "batch_size", "list_id_path"},
    payloads.IDENTIFY_BATCH: {"list_id", "list_id_path"},
}


def _only_used_options(command: Callable[..., None], call: str) -> None:
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name not in _UNUSED.get(call, set())]
    command.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]


for _call in payloads.CALLS:
    _command = _call_command(_call)
    _command.__doc__ = _CALL_HELP[_call]
    _command.__name__ = _call.replace("-", "_")
    _only_used_options(_command, _call)
    app.command(_call)(_command)


@app.command("flow")
@with_bundles
def flow(
    mode: FlowModeOption = None,
    *,
    target: dest.DestinationOptions,
    paths: dest.CallPathOptions,
    ca_cert: CaCert = None,
    cohort: MockCohort,
    list_id: dest.GivenListId = None,
    templates: dest.TemplateOptions,
    user_agent: wh.UserAgent = None,
    webhook: wh.WebhookMessageOptions,
    sending: Sending,
    view: OutputOptions,
) -> None:
    """Run a whole sync as Amplitude would, the list id taken from the list-create answer.

    list: list-create, list-add (every id), list-remove (the first id). property: identify
    true then false (the first id), identify-batch true (every id) then false (the first id).
    webhook: one Cohort Webhook message per --batch-size ids entering (in_cohort true,
    message_id ...::enter::N), then the first id leaving (...::exit::0), POSTed to --url
    itself (--path added) with your --header values (at most 5) and no Authorization; user
    properties from the --ids CSV (--property, --all-properties), bodies through --payload.
    Either way every id ends in the cohort but the first. The flow stops after a list-create
    that gives no list id; the rest is shown as skipped. With --list-id the list exists: no
    list-create is sent. With a destination whose list_id_path is none, the create is sent
    and no id is needed.
    """
    cfg = target.load_config()
    file = target.load_file()
    resolved_mode = mode or (mock.FlowMode(file.mode) if file is not None else mock.FlowMode.list)
    if resolved_mode is mock.FlowMode.webhook:
        from cohortctl.cli import mock_webhook

        users = wh.read_users(
            cohort.ids_file, cohort.column, cohort.ids, webhook.selection(), mock.MOCK_USERS
        )
        mock_webhook.webhook_flow(
            webhook.destination(cfg, target, file, user_agent=user_agent),
            cohort.cohort_name,
            cohort.cohort_id,
            users,
            batch_size=cohort.size(file),
            sending=sending,
            view=view,
        )
        return
    webhook.refuse_outside_webhook_mode()
    set_user_agent(user_agent)  # the flow's --user-agent also replaces cohortctl's own
    spec = cohort.spec(
        file,
        sending,
        list_id=list_id,
        templates=templates.templates(file),
        variables=templates.variables(file),
    )
    destination = sending.destination(target, cfg, file, spec, paths.paths())
    _execute(destination, mock.flow_steps(resolved_mode, spec, destination), spec, sending, view)


# Registered last: mock_webhook reuses the option types above.
from cohortctl.cli import mock_webhook  # noqa: E402

app.command("webhook")(mock_webhook.webhook)
