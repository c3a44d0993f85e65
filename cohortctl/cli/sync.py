"""``cohortctl sync``: replay Amplitude's whole cohort sync against a partner endpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from cohortctl.cli import destination_options as dest
from cohortctl.cli import webhook_options as wh
from cohortctl.cli.bundles import with_bundles
from cohortctl.cli.options import (
    CaCert,
    Har,
    Output,
    Quiet,
    SyncVerbose,
    check_verbosity,
    set_user_agent,
)
from cohortctl.cli.render import OutputFormat
from cohortctl.cli.sync_render import render_dry_run, run_and_render
from cohortctl.retry import named_policy
from cohortctl.sync.delivery import DEFAULT_WORKERS
from cohortctl.sync.dry_run import plan_cohort
from cohortctl.sync.encoders import DEFAULT_BATCH_SIZE
from cohortctl.sync.job import SyncFlags, prepare
from cohortctl.sync.run import check_state
from cohortctl.sync.settings import SyncMode
from cohortctl.sync.webhook import plan_webhook_cohort

COHORT = "Cohort"
SYNC = "Sync (Amplitude's defaults)"
STATE = "State and output"


@with_bundles
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
    *,
    target: dest.DestinationOptions,
    list_id: dest.GivenListId = None,
    mode: Annotated[
        SyncMode | None,
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
    ca_cert: CaCert = None,
    payload: Annotated[
        Path | None,
        dest.payload_option("--payload", "the calls carrying users (add and remove, or identify)"),
    ] = None,
    templates: dest.TemplateOptions,
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
    cfg = target.load_config()
    file = target.load_file()
    job = prepare(
        SyncFlags(
            snapshot=snapshot,
            plan=plan,
            cohort_name=cohort_name,
            cohort_id=cohort_id,
            column=column,
            mode=mode,
            url=target.url,
            auth=target.auth,
            list_id_path=target.list_id_path,
            path=path,
            create_path=create_path,
            add_path=add_path,
            remove_path=remove_path,
            batch_size=batch_size,
            workers=workers,
            batch=batch,
            policy=named_policy(
                retry_policy, retries=retries, base_delay=backoff_base, max_delay=backoff_max
            ),
            full=full,
            payload=payload,
            templates=templates.templates(None),  # routed and put over the file's in prepare
            variables=templates.variables(file),
            state=state,
            retry_file=retry_file,
            recreate_list=recreate_list,
            lock_timeout=lock_timeout,
            list_id=list_id,
            every=every,
            webhook_options=bool(prop or all_properties or resend_changed_properties),
        ),
        file,
    )
    check_state(job.settings, create=not dry_run)
    if job.webhook:
        from cohortctl.cli import sync_webhook

        spec = sync_webhook.target(
            cfg,
            job,
            target,
            user_agent=user_agent,
            payload=payload,
            file=file,
            selection=wh.selection(prop, all_properties, typed_properties),
            resend_changed=resend_changed_properties,
        )
        with wh.webhook_recording(None if dry_run else har, spec.destination):
            if dry_run:
                render_dry_run(
                    [plan_webhook_cohort(spec, c, job.settings) for c in job.cohorts], output
                )
                return
            run_and_render(
                spec, spec.destination, job.cohorts, job.settings, period=job.period,
                max_runs=max_runs, verbose=verbose >= 1, quiet=quiet, output=output,
            )  # fmt: skip
        return
    set_user_agent(user_agent)  # --user-agent also replaces cohortctl's own in list/property
    merged = replace(target, url=job.url, auth=job.auth, list_id_path=job.list_id_path)
    destination = merged.destination(
        cfg,
        paths=job.paths,
        require_credentials=not dry_run,
        file=file,
        variables=job.settings.variables,
    )
    if dry_run:
        render_dry_run([plan_cohort(destination, c, job.settings) for c in job.cohorts], output)
        return
    with dest.partner_recording(har, destination):
        run_and_render(
            destination, destination, job.cohorts, job.settings, period=job.period,
            max_runs=max_runs, verbose=verbose >= 1, quiet=quiet, output=output,
        )  # fmt: skip
