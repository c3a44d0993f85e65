"""``cohortctl sync``: replay Amplitude's whole cohort sync against a partner endpoint."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

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
    option,
    set_user_agent,
)
from cohortctl.cli.render import OutputFormat
from cohortctl.cli.sync_options import SyncCohorts, SyncFiles, SyncSending, SyncWebhook
from cohortctl.cli.sync_render import render_dry_run, run_and_render
from cohortctl.partner.destination import Destination
from cohortctl.partner.webhooks.payload import WebhookDestination
from cohortctl.sync.dry_run import DryRun, plan_cohort, plan_webhook_cohort
from cohortctl.sync.job import SyncFlags, prepare
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.run import check_state
from cohortctl.sync.settings import SyncSettings
from cohortctl.sync.webhook import WebhookSync

_SYNC_FLAGS = frozenset(field.name for field in fields(SyncFlags))


def _flags_of(*bundles: Any) -> dict[str, Any]:
    """The options of ``bundles`` that :class:`SyncFlags` has a field of the same name for
    (the same option: ``--mode`` of SyncCohorts, ``--url`` of the destination, ``--state``...),
    so a bundle's options reach the job whole rather than one keyword at a time."""
    return {
        field.name: getattr(bundle, field.name)
        for bundle in bundles
        for field in fields(bundle)
        if field.name in _SYNC_FLAGS
    }


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
    cohorts: SyncCohorts,
    sending: SyncSending,
    path: Annotated[
        str | None,
        option(
            "--path",
            help=(
                "Property mode: path of the identify call [default: /batch, or /identify with "
                "--no-batch]."
            ),
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
    files: SyncFiles,
    verbose: SyncVerbose = 0,
    quiet: Quiet = False,
    webhook: SyncWebhook,
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
            **_flags_of(cohorts, target, sending, files),
            path=path,
            create_path=create_path,
            add_path=add_path,
            remove_path=remove_path,
            policy=sending.policy(),
            payload=payload,
            templates=templates.templates(None),  # routed and put over the file's in prepare
            variables=templates.variables(file),
            list_id=list_id,
            webhook_options=webhook.properties_given,
        ),
        file,
    )
    check_state(job.settings, create=not files.dry_run)
    har_file = None if files.dry_run else har
    sender: Destination | WebhookSync
    shown: Destination | WebhookDestination
    recording: AbstractContextManager[object]
    plan: Callable[[CohortSpec, SyncSettings], DryRun]
    if job.webhook:
        from cohortctl.cli import sync_webhook

        spec = sync_webhook.target(
            cfg,
            job,
            target,
            user_agent=webhook.user_agent,
            payload=payload,
            file=file,
            selection=webhook.selection(),
            resend_changed=webhook.resend_changed_properties,
        )
        sender, shown = spec, spec.destination
        recording = wh.webhook_recording(har_file, spec.destination)
        plan = partial(plan_webhook_cohort, spec)
    else:
        set_user_agent(webhook.user_agent)  # --user-agent: cohortctl's own in list/property too
        merged = replace(target, url=job.url, auth=job.auth, list_id_path=job.list_id_path)
        destination = merged.destination(
            cfg,
            paths=job.paths,
            require_credentials=not files.dry_run,
            file=file,
            variables=job.settings.variables,
        )
        sender = shown = destination
        recording = dest.partner_recording(har_file, destination)
        plan = partial(plan_cohort, destination)
    with recording:
        if files.dry_run:
            plans = [plan(cohort, job.settings) for cohort in job.cohorts]
            render_dry_run(shown, plans, output, as_curl=files.as_curl)
            return
        run_and_render(
            sender,
            shown,
            job.cohorts,
            job.settings,
            period=job.period,
            max_runs=sending.max_runs,
            verbose=verbose >= 1,
            quiet=quiet,
            output=output,
        )
