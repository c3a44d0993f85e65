"""``cohortctl sync``: replay Amplitude's whole cohort sync against a partner endpoint."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cohortctl.cli import destination_options as dest
from cohortctl.cli import webhook_options as wh
from cohortctl.cli.exchanges import dry_run_block
from cohortctl.cli.options import (
    AllowInsecureHttp,
    CaCert,
    ConfigFile,
    Har,
    Output,
    Profile,
    Quiet,
    SyncVerbose,
    check_verbosity,
    set_user_agent,
)
from cohortctl.cli.progress import Meter, make_bar
from cohortctl.cli.render import OutputFormat, err, key_values, out, print_json, table
from cohortctl.config import Config
from cohortctl.durations import format_duration, parse_duration
from cohortctl.errors import CheckFailed, InputError, Interrupted
from cohortctl.http.har import recording
from cohortctl.partner import payloads
from cohortctl.partner.calls import call_matcher
from cohortctl.partner.destination import DEFAULT_TIMEOUT, Destination
from cohortctl.partner.templates import Template, parse_vars
from cohortctl.partner.webhooks.payload import WebhookDestination
from cohortctl.retry import named_policy
from cohortctl.sync import run as syncing
from cohortctl.sync.delivery import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, Batch
from cohortctl.sync.delivery import Progress as DeliveryProgress
from cohortctl.sync.plan import CohortSpec, load_plan

COHORT = "Cohort"
SYNC = "Sync (Amplitude's defaults)"
STATE = "State and output"
FAILURES_SHOWN = 20
PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


def _template_option(flag: str, what: str) -> Any:
    return typer.Option(
        flag,
        help=f"JSON template file for {what}: $items, $listId, $amplitude_cohort_name, "
        "$amplitude_cohort_id, $userId, $member, --var names.",
        show_default=False,
        dir_okay=False,
        rich_help_panel=dest.TEMPLATES_PANEL,
    )


def _pick(flag: Any, plan: dict[str, Any], key: str, default: Any) -> Any:
    if flag is not None:
        return flag
    return plan.get(key, default)


def sync(
    snapshot: Annotated[
        Path | None,
        typer.Argument(
            help="ID file of the cohort's members now (CSV column, newline list, gzip; - for "
            "stdin). Omit with --plan.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    destination_name: dest.DestinationName = None,
    url: dest.Url = None,
    list_id: dest.GivenListId = None,
    mode: Annotated[
        syncing.SyncMode | None,
        typer.Option(
            "--mode",
            help="list: create a list, then add / remove user ids; property: set the cohort "
            "trait true / false with identify calls; webhook: Cohort Webhook messages to --url "
            "itself (users entering and leaving). [default: the destination's, else list]",
            case_sensitive=False,
            show_default=False,
            rich_help_panel=COHORT,
        ),
    ] = None,
    cohort_name: Annotated[
        str | None,
        typer.Option(
            "--cohort-name",
            help="Cohort name, as in list names and trait keys.",
            show_default=False,
            rich_help_panel=COHORT,
        ),
    ] = None,
    cohort_id: Annotated[
        str | None,
        typer.Option(
            "--cohort-id", help="Amplitude cohort id.", show_default=False, rich_help_panel=COHORT
        ),
    ] = None,
    column: Annotated[
        str | None,
        typer.Option(
            "--column",
            help="CSV column of SNAPSHOT holding the ids.",
            show_default=False,
            rich_help_panel=COHORT,
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="YAML plan: several cohorts (name, id, snapshot) for one destination; "
            "each is synced with its own requests. Flags override its destination keys.",
            show_default=False,
            dir_okay=False,
            rich_help_panel=COHORT,
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Resend every member, not only who entered (those who left are still removed).",
            rich_help_panel=SYNC,
        ),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help=f"Users per request [default: {DEFAULT_BATCH_SIZE}].",
            min=1,
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help=f"Requests in flight at once [default: {DEFAULT_WORKERS}]; raise it to load-test.",
            min=1,
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    batch: Annotated[
        bool | None,
        typer.Option(
            "--batch/--no-batch",
            help="Property mode: batch identify calls to --path "
            "(default /batch), or one identify call per user (/identify). [default: batch, "
            "unless the destination has identify only]",
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    retry_policy: Annotated[
        str,
        typer.Option(
            "--retry-policy",
            help="cohort-sync: Amplitude's cohort sync (8 retries from 1 s); streaming: its "
            "event-streaming webhooks (3 retries from 100 ms within 4 s, then 9 over 4 hours, "
            "50% jitter). --retries and --backoff-* override either.",
            rich_help_panel=SYNC,
        ),
    ] = "cohort-sync",
    retries: Annotated[
        int | None,
        typer.Option(
            "--retries",
            help="Retries of a failed request (429, 5xx, no answer) [default: 8; streaming 12].",
            min=0,
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    backoff_base: Annotated[
        float | None,
        typer.Option(
            "--backoff-base",
            help="Seconds before the first retry; doubles each time [default: 1; streaming 0.1].",
            min=0.0,
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    backoff_max: Annotated[
        float | None,
        typer.Option(
            "--backoff-max",
            help="Longest wait between retries, Retry-After included [default: 128; "
            "streaming 7200].",
            min=0.0,
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            help="Sync again on this schedule until Ctrl-C: 1h (hourly), "
            "1d (daily), any duration. [default: one-time]",
            show_default=False,
            rich_help_panel=SYNC,
        ),
    ] = None,
    max_runs: Annotated[
        int | None, typer.Option("--max-runs", hidden=True, min=1, help="Stop --every after N.")
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="Property mode: path of the identify call "
            "[default: /batch, or /identify with --no-batch].",
            show_default=False,
            rich_help_panel=dest.PANEL,
        ),
    ] = None,
    create_path: dest.CreatePath = None,
    add_path: dest.AddPath = None,
    remove_path: dest.RemovePath = None,
    api_key: dest.ApiKey = None,
    secret: dest.Secret = None,
    auth: dest.Auth = None,
    app_id: dest.AppId = None,
    header: dest.Header = None,
    list_id_path: dest.ListIdPath = None,
    timeout: dest.Timeout = DEFAULT_TIMEOUT,
    ca_cert: CaCert = None,
    payload: Annotated[
        Path | None,
        _template_option("--payload", "the calls carrying users (add and remove, or identify)"),
    ] = None,
    create_payload: dest.CreatePayload = None,
    add_payload: dest.AddPayload = None,
    remove_payload: dest.RemovePayload = None,
    identify_payload: dest.IdentifyPayload = None,
    batch_payload: dest.BatchPayload = None,
    var: dest.Var = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="SQLite state file: list ids and the members each "
            "destination has [default: state.sqlite in the user data dir].",
            show_default=False,
            dir_okay=False,
            rich_help_panel=STATE,
        ),
    ] = None,
    retry_file: Annotated[
        Path | None,
        typer.Option(
            "--retry-file",
            help="Where the users of failed batches go, one per line "
            "[default: next to the state file].",
            show_default=False,
            dir_okay=False,
            rich_help_panel=STATE,
        ),
    ] = None,
    recreate_list: Annotated[
        bool,
        typer.Option(
            "--recreate-list",
            help="List mode: create a new list and send the whole cohort to it (after the "
            "partner lost the list: 404 unknown list). The state moves to the new list once "
            "its create answered 2xx.",
            rich_help_panel=SYNC,
        ),
    ] = False,
    lock_timeout: Annotated[
        str,
        typer.Option(
            "--lock-timeout",
            help="How long to wait while another sync of the same state file, destination "
            "and cohort runs (10s, 2m, seconds); then exit 3 (busy).",
            rich_help_panel=STATE,
        ),
    ] = "0s",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (calls of each kind, first payloads) and send nothing.",
            rich_help_panel=STATE,
        ),
    ] = False,
    verbose: SyncVerbose = 0,
    quiet: Quiet = False,
    user_agent: wh.UserAgent = None,
    prop: wh.Property = None,
    all_properties: wh.AllProperties = False,
    typed_properties: wh.TypedProperties = False,
    resend_changed_properties: Annotated[
        bool,
        typer.Option(
            "--resend-changed-properties",
            help="Webhook mode: also send members whose selected properties changed since "
            "the last sync (as in_cohort true), for endpoints that keep properties.",
            rich_help_panel=wh.PANEL,
        ),
    ] = False,
    har: Har = None,
    output: Output = OutputFormat.table,
    profile: Profile = None,
    config: ConfigFile = None,
    allow_insecure_http: AllowInsecureHttp = False,
) -> None:
    """Replay Amplitude's cohort sync against a partner endpoint, request for request.

    The first sync sends the whole cohort (list mode: creates the list first); later syncs send
    only who entered (list-add / trait true) and who left (list-remove / trait false) since
    the last one, from the state file. The state advances batch by batch, only after a 2xx:
    re-running the same command after a failure, a Ctrl-C or a kill sends exactly what the
    destination is still missing.

    Retried: 429, every 5xx, and requests with no answer (refused, reset, timeout), up to
    --retries times (default 8), waiting 1, 2, 4, 8, 16, 32, 64, 128 s (--backoff-base,
    doubling, capped at --backoff-max), or the Retry-After the partner sent (also capped).
    Not retried: 400, 401, 404 and every other answer. Failed batches are reported one by
    one and their users written to the retry file (for you to inspect; not a snapshot).

    One sync per state file, destination and cohort at a time: another run of the same
    cohort waits --lock-timeout (default: not at all), then exits 3 naming the holder.
    The state file is checked before anything is read or sent; a damaged, foreign or newer
    one is one line and exit 2. A partner that lost the list (404 unknown list): run again
    with --recreate-list.

    --mode webhook sends Amplitude's Cohort Webhooks to --url itself (--path adds to it):
    POST, User-Agent Amplitude/Webhook/1.0, your --header values (at most 5), no
    Authorization; the default body (message_id {uuid}::enter|exit::{n}) or the --payload
    FreeMarker template's output; user properties from the CSV snapshot's other columns
    (--property, --all-properties), remembered in the state.

    Exit codes: 0 every user delivered, 1 a batch failed, 2 usage or input error (a damaged
    state file, a file that cannot be written), 3 busy (another sync of the cohort), 130
    interrupted.
    """
    check_verbosity(verbose, quiet)
    cfg = Config.load(profile, path=config)
    sync_plan = load_plan(plan) if plan is not None else None
    cohorts = _cohorts(snapshot, sync_plan, cohort_name, cohort_id, column)
    plan_dest = dict(sync_plan.destination) if sync_plan is not None else {}
    file = dest.load_destination(destination_name)
    default_mode = file.mode if file is not None else syncing.SyncMode.list.value
    resolved_mode = syncing.SyncMode(_pick(mode, plan_dest, "mode", default_mode))
    if batch is None:
        batch = file is None or payloads.IDENTIFY_BATCH in file.calls
    elif file is not None and resolved_mode is syncing.SyncMode.property:
        wanted = payloads.IDENTIFY_BATCH if batch else payloads.IDENTIFY
        if wanted not in file.calls:
            raise InputError(f"destination {file.name!r} has no {wanted} call")
    property_call = payloads.IDENTIFY_BATCH if batch else payloads.IDENTIFY
    webhook_mode = resolved_mode is syncing.SyncMode.webhook
    if not webhook_mode and (prop or all_properties or resend_changed_properties):
        raise InputError(
            "--property, --all-properties and --resend-changed-properties are for --mode webhook"
        )
    default_batch = DEFAULT_BATCH_SIZE
    if file is not None and file.batch_size is not None:
        default_batch = file.batch_size
    variables = dest.custom_variables(file, parse_vars(var or []))
    if path is not None and resolved_mode is syncing.SyncMode.list:
        raise InputError(
            "--path is the identify path of property mode; in list mode use "
            "--create-path, --add-path and --remove-path"
        )
    paths = dest.call_paths(
        create=_pick(create_path, plan_dest, "create_path", None),
        add=_pick(add_path, plan_dest, "add_path", None),
        remove=_pick(remove_path, plan_dest, "remove_path", None),
        identify=plan_dest.get("identify_path"),
        batch=plan_dest.get("batch_path"),
    )
    chosen_path = _pick(path, plan_dest, "path", None)
    if chosen_path is not None:
        paths[property_call] = chosen_path
    settings = syncing.SyncSettings(
        mode=resolved_mode,
        batch_size=int(_pick(batch_size, plan_dest, "batch_size", default_batch)),
        workers=int(_pick(workers, plan_dest, "workers", DEFAULT_WORKERS)),
        policy=named_policy(
            retry_policy, retries=retries, base_delay=backoff_base, max_delay=backoff_max
        ),
        full=full,
        batch=batch,
        templates=dest.merged_templates(
            file,
            _templates(
                resolved_mode,
                property_call,
                None if webhook_mode else payload,
                dest.load_templates(
                    create=create_payload,
                    add=add_payload,
                    remove=remove_payload,
                    identify=identify_payload,
                    batch=batch_payload,
                ),
            ),
        ),
        variables=variables,
        state_path=state,
        retry_file=retry_file,
        recreate_list=recreate_list,
        lock_timeout=parse_duration(lock_timeout, option="--lock-timeout"),
        list_id=list_id,
    )
    syncing.check_state(settings, create=not dry_run)
    period = parse_duration(every, option="--every") if every is not None else None
    if period is not None and period <= 0:
        raise InputError("--every must be longer than 0 seconds")
    if webhook_mode:
        from cohortctl.cli import sync_webhook
        from cohortctl.sync.webhook import WebhookSync

        wh.refuse_partner_auth(api_key=api_key, auth=auth, secret=secret, app_id=app_id)
        spec = WebhookSync(
            wh.webhook_destination(
                cfg,
                url=_pick(url, plan_dest, "url", None),
                path=chosen_path,
                headers=header,
                user_agent=user_agent,
                timeout=timeout,
                payload=payload,
                allow_insecure_http=allow_insecure_http,
                file=file,
            ),
            wh.selection(prop, all_properties, typed_properties),
            resend_changed_properties,
        )
        with wh.webhook_recording(None if dry_run else har, spec.destination):
            sync_webhook.run(
                spec,
                cohorts,
                settings,
                period=period,
                max_runs=max_runs,
                verbose=verbose >= 1,
                dry_run=dry_run,
                output=output,
            )
        return
    set_user_agent(user_agent)  # --user-agent also replaces cohortctl's own in list/property
    destination = dest.destination_from_options(
        cfg,
        url=_pick(url, plan_dest, "url", None),
        api_key=api_key,
        secret=secret,
        auth=_pick(auth, plan_dest, "auth", None),
        app_id=app_id,
        headers=header,
        list_id_path=_pick(list_id_path, plan_dest, "list_id_path", None),
        timeout=timeout,
        paths=paths,
        require_credentials=not dry_run,
        allow_insecure_http=allow_insecure_http,
        file=file,
        variables=variables,
    )
    if dry_run:
        plans = [syncing.plan_cohort(destination, c, settings) for c in cohorts]
        _render_dry_run(plans, output)
        return
    with recording(
        har,
        base_url=destination.base_url,
        secrets=destination.secrets(),
        call_of=call_matcher(destination),
    ):
        runs = syncing.run_schedule(
            lambda number: _one_run(
                destination,
                cohorts,
                settings,
                number,
                period is not None,
                verbose=verbose >= 1,
                quiet=quiet,
                output=output,
            ),
            every=period,
            max_runs=max_runs,
            on_wait=_announce_next,
        )
    raise_unless_ok(runs)


def raise_unless_ok(runs: Sequence[syncing.SyncRun]) -> None:
    """Exit 130 (through the error map) if the last run was interrupted, 1 if any failed."""
    if runs[-1].interrupted:
        raise Interrupted(
            "interrupted: what was confirmed is kept; run the same command to send the rest"
        )
    if not all(run.ok for run in runs):
        raise CheckFailed("the sync did not confirm everything it planned (see the summary)")


def _cohorts(
    snapshot: Path | None,
    sync_plan: Any,
    cohort_name: str | None,
    cohort_id: str | None,
    column: str | None,
) -> list[CohortSpec]:
    if sync_plan is not None:
        if snapshot is not None or cohort_name or cohort_id:
            raise InputError("give either --plan or SNAPSHOT with --cohort-name and --cohort-id")
        return list(sync_plan.cohorts)
    if snapshot is None:
        raise InputError("give the SNAPSHOT ID file (or --plan FILE)")
    if not cohort_name or not cohort_name.strip() or not cohort_id or not cohort_id.strip():
        raise InputError(
            "--cohort-name and --cohort-id are required (they name the list and "
            "the trait, as Amplitude does)"
        )
    return [CohortSpec(cohort_name, cohort_id.strip(), str(snapshot), column)]


def _templates(
    mode: syncing.SyncMode,
    property_call: str,
    payload: Path | None,
    per_call: dict[str, Template],
) -> dict[str, Template]:
    """``--payload`` for the calls carrying users, then the per-call templates (they win)."""
    found: dict[str, Template] = {}
    if payload is not None:
        shared = Template.from_file(payload)
        if mode is syncing.SyncMode.list:
            found[payloads.LIST_ADD] = found[payloads.LIST_REMOVE] = shared
        else:
            found[property_call] = shared
    found.update(per_call)
    return found


# -- a run --------------------------------------------------------------------------------------


def _one_run(
    destination: Destination,
    cohorts: Sequence[CohortSpec],
    settings: syncing.SyncSettings,
    number: int,
    scheduled: bool,
    *,
    verbose: bool,
    quiet: bool = False,
    output: OutputFormat,
) -> syncing.SyncRun:
    if scheduled:
        err.print(f"sync run {number} at {datetime.now().isoformat(timespec='seconds')}")
    results: list[syncing.CohortSync] = []
    with syncing.locked(destination, cohorts, settings):
        for cohort in cohorts:
            with _ProgressView(cohort, verbose=verbose, quiet=quiet) as view:
                hooks = syncing.SyncHooks(
                    on_progress=view.update,
                    on_retry=view.retry if verbose else None,
                    on_phase=view.phase,
                )
                result = syncing.sync_cohort(
                    destination, cohort, settings, hooks, many=len(cohorts) > 1
                )
            results.append(result)
            if result.status == syncing.INTERRUPTED:
                break
    run = syncing.SyncRun(
        cohorts=results, interrupted=any(c.status == syncing.INTERRUPTED for c in results)
    )
    _render_run(destination, run, output, quiet=quiet)
    return run


WIDE = 120  # columns from which the bar also shows requests and req/s


class _ProgressView:
    """A progress bar on a terminal, plain lines every few seconds otherwise (stderr)."""

    def __init__(self, cohort: CohortSpec, *, verbose: bool, quiet: bool = False) -> None:
        self.cohort = cohort
        self.verbose = verbose
        self.quiet = quiet
        self.tty = err.is_terminal
        self.total = 0
        self._meter = Meter(0, "users")
        self._bar: Any = None
        self._task: Any = None
        self._last_line = time.monotonic()

    def __enter__(self) -> _ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def phase(self, message: str) -> None:
        if message.startswith("sending "):
            self.total = int(message.split()[1].replace(",", ""))
            self._meter = Meter(self.total, "users")
            if self.tty and self.total and not self.quiet:
                self._bar, self._task = make_bar(self.cohort.name, self.total, err)
                self._bar.start()
        if self.quiet:
            return
        if self.verbose or message.startswith(("sending ", "repaired ")):
            err.print(escape(f"{self.cohort.name} ({self.cohort.id}): {message}"))

    def update(self, p: DeliveryProgress) -> None:
        if self.quiet:
            return
        done = p.users_done + p.users_failed
        extra = (
            f"{p.requests:,} requests, {p.retries:,} retries, {p.requests_per_second:,.0f} req/s"
        )
        if self._bar is not None and err.width < WIDE:
            extra = f"{p.retries:,} retries" if p.retries else ""  # the bar fits 80 columns
        line = self._meter.line(done, extra)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, line=line)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_PROGRESS_EVERY:
            self._last_line = now
            err.print(f"  {line}", markup=False)

    def retry(self, batch: Batch, attempt: int, delay: float, reason: str) -> None:
        err.print(escape(f"  retry {attempt} of {batch.key} in {_seconds(delay)} after {reason}"))


def _seconds(delay: float) -> str:
    return f"{delay:g}s"


def _announce_next(when: float) -> None:
    at = datetime.fromtimestamp(when).isoformat(timespec="seconds")
    err.print(
        f"next sync at {at} (in {format_duration(max(0.0, when - time.time()))}); Ctrl-C to stop"
    )


# -- rendering ----------------------------------------------------------------------------------


def _render_run(
    destination: Destination | WebhookDestination,
    run: syncing.SyncRun,
    output: OutputFormat,
    *,
    quiet: bool = False,
) -> None:
    if output is OutputFormat.json:
        print_json(
            {
                "ok": run.ok,
                "interrupted": run.interrupted,
                "cohorts": [c.to_dict(destination.scrub) for c in run.cohorts],
            }
        )
        return
    for result in run.cohorts:
        if quiet:
            r = result.report
            err.print(
                f"{result.cohort.name} ({result.cohort.id}): {result.status}, "
                f"{result.added:,} added, {result.removed:,} removed, {r.requests:,} requests, "
                f"{r.batches_failed:,} failed batches",
                markup=False,
            )
        else:
            _render_cohort(destination, result)


def _render_cohort(
    destination: Destination | WebhookDestination, result: syncing.CohortSync
) -> None:
    r = result.report
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(r.failed_by.items())) or "none"
    attempts = ", ".join(f"{k}: {v}" for k, v in sorted(r.attempt_failures.items())) or "none"
    rows: list[tuple[str, Any]] = [
        ("status", result.status + (f": {result.error}" if result.error else "")),
        ("mode", result.mode.value),
        (
            "list id",
            (result.list_id or "-") + (f" ({result.list_source})" if result.list_source else ""),
        ),
        ("snapshot", f"{result.snapshot_users:,} users"),
        (
            "to send",
            f"{result.entered:,} entered, {result.left:,} left, {result.unchanged:,} unchanged",
        ),
        ("added", f"{result.added:,}"),
        ("removed", f"{result.removed:,}"),
        ("requests", f"{r.requests:,} ({r.batches_ok:,} batches ok, {r.batches_failed:,} failed)"),
        ("retries", f"{r.retries:,}"),
        ("failed batches by status", failures),
        ("failed attempts by status", attempts),
        (
            "latency p50/p95/p99",
            f"{r.latency_ms(0.5):.1f} / {r.latency_ms(0.95):.1f} / {r.latency_ms(0.99):.1f} ms",
        ),
        ("duration", format_duration(result.duration)),
        ("phases", _phases(result)),
        ("throughput", f"{r.users_per_second:,.0f} users/s, {r.requests_per_second:,.0f} req/s"),
    ]
    if result.retry_file:
        rows.append(("retry file", f"{result.retry_file} ({result.retry_users:,} users)"))
    title = f"{result.cohort.name} ({result.cohort.id})"
    out.print(key_values([(k, escape(str(v))) for k, v in rows], title=escape(title)))
    for warning in result.warnings:
        err.print(escape(f"warning: {warning}"))
    if r.failures:
        shown = r.failures[:FAILURES_SHOWN]
        out.print(
            table(
                ["batch", "call", "status", "meaning", "attempts", "users", "answer"],
                [
                    tuple(
                        escape(str(c))
                        for c in (
                            f.key,
                            f.kind,
                            f.reason,
                            f.meaning,
                            f.attempts,
                            len(f.user_ids),
                            destination.scrub(f.body)[:120],
                        )
                    )
                    for f in shown
                ],
                title="failed batches",
            )
        )
        if len(r.failures) > len(shown):
            out.print(f"… {len(r.failures) - len(shown)} more failed batches (see --output json)")


def _phases(result: syncing.CohortSync) -> str:
    seconds = result.phase_seconds()
    return ", ".join(f"{name} {seconds[f'{name}_s']:.3f}s" for name in syncing.PHASES)


def _render_dry_run(plans: Sequence[syncing.DryRun], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json({"dry_run": True, "cohorts": [p.to_dict() for p in plans]})
        return
    lines: list[str] = []
    for plan in plans:
        calls = ", ".join(f"{n:,} {call}" for call, n in plan.calls.items()) or "no requests"
        lines += [
            f"# {plan.cohort.name} ({plan.cohort.id}), {plan.mode.value} mode: "
            f"{plan.snapshot_users:,} in the snapshot, {plan.entered:,} entered, "
            f"{plan.left:,} left, {plan.unchanged:,} unchanged",
            f"# would send: {calls}",
            "",
        ]
        for number, request in enumerate(plan.first_requests, 1):
            lines += dry_run_block(
                number,
                len(plan.first_requests),
                f"first {request['call']} ({request['users']:,} users)",
                request["method"],
                request["url"],
                list(request["headers"].items()),
                request["body"],
            )
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    err.print("dry run: nothing sent")
