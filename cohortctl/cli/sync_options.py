"""The options only ``cohortctl sync`` has, in bundles (see :mod:`cohortctl.cli.bundles`):
the cohorts (:class:`SyncCohorts`), how to send (:class:`SyncSending`), the state and output
files (:class:`SyncFiles`) and webhook mode's properties (:class:`SyncWebhook`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cohortctl.cli import webhook_options as wh
from cohortctl.cli.bundles import DryRunOptions
from cohortctl.cli.options import flag, option
from cohortctl.retry import RetryPolicy, named_policy
from cohortctl.sync.delivery import DEFAULT_WORKERS
from cohortctl.sync.encoders import DEFAULT_BATCH_SIZE
from cohortctl.sync.properties import PropertySelection
from cohortctl.sync.settings import SyncMode

COHORT = "Cohort"
SYNC = "Sync (Amplitude's defaults)"
STATE = "State and output"

Mode = Annotated[SyncMode | None, option("--mode", panel=COHORT, case_sensitive=False, help=(
    "list: create a list, then add / remove user ids; property: set the cohort trait true / "
    "false with identify calls; webhook: Cohort Webhook messages to --url itself (users "
    "entering and leaving). [default: the destination's, else list]"))]  # fmt: skip
CohortName = Annotated[
    str | None,
    option("--cohort-name", panel=COHORT, help="Cohort name, as in list names and trait keys."),
]
CohortId = Annotated[str | None, option("--cohort-id", panel=COHORT, help="Amplitude cohort id.")]
Column = Annotated[
    str | None, option("--column", panel=COHORT, help="CSV column of SNAPSHOT holding the ids.")
]
Plan = Annotated[Path | None, option("--plan", panel=COHORT, dir_okay=False, help=(
    "YAML plan: several cohorts (name, id, snapshot) for one destination; each is synced "
    "with its own requests. Flags override its destination keys."))]  # fmt: skip

Full = Annotated[bool, flag("--full", panel=SYNC, help=(
    "Resend every member, not only who entered (those who left are still removed)."))]  # fmt: skip
BatchSize = Annotated[int | None, option("--batch-size", panel=SYNC, min=1,
    help=f"Users per request [default: {DEFAULT_BATCH_SIZE}].")]  # fmt: skip
Workers = Annotated[int | None, option("--workers", panel=SYNC, min=1, help=(
    f"Requests in flight at once [default: {DEFAULT_WORKERS}]; raise it to "
    "load-test."))]  # fmt: skip
BatchCalls = Annotated[bool | None, option("--batch/--no-batch", panel=SYNC, help=(
    "Property mode: batch identify calls to --path (default /batch), or one identify call "
    "per user (/identify). [default: batch, unless the destination has identify "
    "only]"))]  # fmt: skip
RetryPolicyName = Annotated[str, option("--retry-policy", panel=SYNC, show_default=True, help=(
    "cohort-sync: Amplitude's cohort sync (8 retries from 1 s); streaming: its "
    "event-streaming webhooks (3 retries from 100 ms within 4 s, then 9 over 4 hours, 50% "
    "jitter). --retries and --backoff-* override either."))]  # fmt: skip
Retries = Annotated[int | None, option("--retries", panel=SYNC, min=0, help=(
    "Retries of a failed request (429, 5xx, no answer) [default: 8; streaming 12]."))]  # fmt: skip
BackoffBase = Annotated[float | None, option("--backoff-base", panel=SYNC, min=0.0, help=(
    "Seconds before the first retry; doubles each time [default: 1; streaming 0.1]."))]  # fmt: skip
BackoffMax = Annotated[float | None, option("--backoff-max", panel=SYNC, min=0.0, help=(
    "Longest wait between retries, Retry-After included [default: 128; streaming "
    "7200]."))]  # fmt: skip
Every = Annotated[str | None, option("--every", panel=SYNC, help=(
    "Sync again on this schedule until Ctrl-C: 1h (hourly), 1d (daily), any duration. "
    "[default: one-time]"))]  # fmt: skip
MaxRuns = Annotated[
    int | None, typer.Option("--max-runs", hidden=True, min=1, help="Stop --every after N.")
]
RecreateList = Annotated[bool, flag("--recreate-list", panel=SYNC, help=(
    "List mode: create a new list and send the whole cohort to it (after the partner lost "
    "the list: 404 unknown list). The state moves to the new list once its create answered "
    "2xx."))]  # fmt: skip

StateFile = Annotated[Path | None, option("--state", panel=STATE, dir_okay=False, help=(
    "SQLite state file: list ids and the members each destination has [default: "
    "state.sqlite in the user data dir]."))]  # fmt: skip
RetryFile = Annotated[Path | None, option("--retry-file", panel=STATE, dir_okay=False, help=(
    "Where the users of failed batches go, one per line [default: next to the state "
    "file]."))]  # fmt: skip
LockTimeout = Annotated[str, option("--lock-timeout", panel=STATE, show_default=True, help=(
    "How long to wait while another sync of the same state file, destination and cohort "
    "runs (10s, 2m, seconds); then exit 3 (busy)."))]  # fmt: skip
DryRun = Annotated[bool, flag("--dry-run", panel=STATE, help=(
    "Print the plan, then every request the sync would send (credentials redacted, bodies "
    "whole), and send nothing; -o json: the plan and the first request of each."))]  # fmt: skip
AsCurl = Annotated[bool, flag("--as-curl", panel=STATE, help=(
    "With --dry-run: each request as a runnable curl command, credentials as $ENV_VAR "
    "references (COHORTCTL_PARTNER_API_KEY ...), never their values."))]  # fmt: skip

ResendChanged = Annotated[bool, flag("--resend-changed-properties", panel=wh.PANEL, help=(
    "Webhook mode: also send members whose selected properties changed since the last "
    "sync (as in_cohort true), for endpoints that keep properties."))]  # fmt: skip


@dataclass(frozen=True)
class SyncCohorts:
    """``--mode``, ``--cohort-name``, ``--cohort-id``, ``--column``, ``--plan``."""

    mode: Mode = None
    cohort_name: CohortName = None
    cohort_id: CohortId = None
    column: Column = None
    plan: Plan = None


@dataclass(frozen=True)
class SyncSending:
    """How a sync sends: ``--full``, batches, workers, retries, ``--every``,
    ``--recreate-list``."""

    full: Full = False
    batch_size: BatchSize = None
    workers: Workers = None
    batch: BatchCalls = None
    retry_policy: RetryPolicyName = "cohort-sync"
    retries: Retries = None
    backoff_base: BackoffBase = None
    backoff_max: BackoffMax = None
    every: Every = None
    max_runs: MaxRuns = None
    recreate_list: RecreateList = False

    def policy(self) -> RetryPolicy:
        """The retry policy: ``--retry-policy`` with ``--retries`` and ``--backoff-*`` over it."""
        return named_policy(
            self.retry_policy,
            retries=self.retries,
            base_delay=self.backoff_base,
            max_delay=self.backoff_max,
        )


@dataclass(frozen=True)
class SyncFiles(DryRunOptions):
    """``--state``, ``--retry-file``, ``--lock-timeout``, ``--dry-run``, ``--as-curl``."""

    state: StateFile = None
    retry_file: RetryFile = None
    lock_timeout: LockTimeout = "0s"
    dry_run: DryRun = False
    as_curl: AsCurl = False


@dataclass(frozen=True)
class SyncWebhook:
    """Webhook mode: ``--user-agent``, ``--property``, ``--all-properties``,
    ``--typed-properties``, ``--resend-changed-properties``."""

    user_agent: wh.UserAgent = None
    prop: wh.Property = None
    all_properties: wh.AllProperties = False
    typed_properties: wh.TypedProperties = False
    resend_changed_properties: ResendChanged = False

    @property
    def properties_given(self) -> bool:
        """True when an option of webhook properties was given."""
        return bool(self.prop or self.all_properties or self.resend_changed_properties)

    def selection(self) -> PropertySelection:
        """The properties to send."""
        return wh.selection(self.prop, self.all_properties, self.typed_properties)
