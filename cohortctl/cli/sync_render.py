"""What ``cohortctl sync`` shows: the progress of each cohort (stderr), the phases it goes
through, the summary (a table or ``-o json``) and the dry run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.markup import escape

from cohortctl.cli.destination_options import curl_credentials
from cohortctl.cli.exchanges import (
    EnvRef,
    curl_command,
    dry_run_block,
    env_name_for_header,
    write_lines,
)
from cohortctl.cli.progress import Meter, make_bar
from cohortctl.cli.render import OutputFormat, err, key_values, out, print_json, table
from cohortctl.durations import format_duration
from cohortctl.errors import Busy, CheckFailed, Interrupted
from cohortctl.http.har import redact_url
from cohortctl.partner.destination import Destination
from cohortctl.partner.webhooks.payload import WebhookDestination
from cohortctl.sync import hooks as phases
from cohortctl.sync.batches import Batch, DeliveryProgress
from cohortctl.sync.dry_run import DryRun, PlannedRequest
from cohortctl.sync.hooks import PhaseStarted, SyncHooks
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.results import BUSY, PHASES, CohortSync, SyncRun
from cohortctl.sync.schedule import run_schedule, sync_all
from cohortctl.sync.settings import SyncMode, SyncSettings
from cohortctl.sync.webhook import WebhookSync

FAILURES_SHOWN = 20
PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
LINES_PER_WRITE = 2000  # a dry run is written in pieces as its requests are built
WIDE = 120  # columns from which the bar also shows requests and req/s
SHOWN_ALWAYS = (phases.SENDING, phases.REPAIRED)  # the other phases with -v only


def phase_text(event: PhaseStarted) -> str:
    """The words for a phase of a sync (stderr)."""
    name = event.name
    if name == phases.READING:
        return f"reading {event.path}"
    if name == phases.SENDING:
        return f"sending {event.users:,} users in {event.batches:,} requests"
    if name == phases.REPAIRED:
        return (
            f"repaired the state file: dropped {event.batches:,} confirmations of a "
            "plan another run discarded (their users are sent again)"
        )
    if name == phases.OTHER_LIST:
        return f"a different list ({event.list_id}): what the old one had no longer counts"
    return {
        phases.COMPARING: "comparing with what the destination already has",
        phases.PLANNING: "planning the batches",
        phases.RECORDING: "recording what the destination now has",
        phases.CREATING_LIST: "creating the list",
        phases.RECREATING_LIST: "creating a new list (--recreate-list)",
    }.get(name, name)


class ProgressView:
    """A progress bar on a terminal, plain lines every few seconds otherwise (stderr); the
    cohort's :class:`SyncHooks` as ``with ProgressView(...) as hooks``."""

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

    def __enter__(self) -> SyncHooks:
        return SyncHooks(
            on_progress=self.update,
            on_retry=self.retry if self.verbose else None,
            on_phase=self.phase,
        )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def phase(self, event: PhaseStarted) -> None:
        """Start the bar when the sending starts; say which phase starts."""
        if event.name == phases.SENDING:
            self.total = event.users
            self._meter = Meter(self.total, "users")
            if self.tty and self.total and not self.quiet:
                self._bar, self._task = make_bar(self.cohort.name, self.total, err)
                self._bar.start()
        if self.quiet:
            return
        if self.verbose or event.name in SHOWN_ALWAYS:
            err.print(escape(f"{self.cohort.name} ({self.cohort.id}): {phase_text(event)}"))

    def update(self, p: DeliveryProgress) -> None:
        """Move the bar (or print a line every few seconds)."""
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
        """One line per retry (-v)."""
        err.print(escape(f"  retry {attempt} of {batch.key} in {_seconds(delay)} after {reason}"))


def views(*, verbose: bool, quiet: bool = False) -> Any:
    """``hooks_for`` of :func:`cohortctl.sync.schedule.sync_all`: a view per cohort."""
    return lambda cohort: ProgressView(cohort, verbose=verbose, quiet=quiet)


def announce_run(number: int) -> None:
    """``sync run N at …`` before each run of a schedule."""
    err.print(f"sync run {number} at {datetime.now().isoformat(timespec='seconds')}")


def _seconds(delay: float) -> str:
    return f"{delay:g}s"


def announce_next(when: float) -> None:
    """When the next run of a schedule starts."""
    at = datetime.fromtimestamp(when).isoformat(timespec="seconds")
    err.print(
        f"next sync at {at} (in {format_duration(max(0.0, when - time.time()))}); Ctrl-C to stop"
    )


def raise_unless_ok(runs: Sequence[SyncRun]) -> None:
    """Exit 130 (through the error map) if the last run was interrupted, 1 if a cohort
    failed, 3 if one was busy (another sync held it; the others ran), else 0."""
    if runs[-1].interrupted:
        raise Interrupted(
            "interrupted: what was confirmed is kept; run the same command to send the rest"
        )
    cohorts = [c for run in runs for c in run.cohorts]
    if any(not c.ok and c.status != BUSY for c in cohorts):
        raise CheckFailed("the sync did not confirm everything it planned (see the summary)")
    busy = [c for c in cohorts if c.status == BUSY]
    if len(busy) == 1 and len(runs[-1].cohorts) == 1:
        raise Busy(busy[0].error or "busy")
    if busy:
        raise Busy(
            f"busy: {len(busy):,} of {len(cohorts):,} cohort syncs did not run: another sync "
            "held them (named above); the others ran. Run again, or wait with --lock-timeout"
        )


def render_run(
    destination: Destination | WebhookDestination,
    run: SyncRun,
    output: OutputFormat,
    *,
    quiet: bool = False,
) -> None:
    if output is OutputFormat.json:
        print_json(
            {
                "ok": run.ok,
                "interrupted": run.interrupted,
                "error": next((c.error for c in run.cohorts if c.status == BUSY), None),
                "cohorts": [c.to_dict(destination.scrub) for c in run.cohorts],
            }
        )
        return
    for result in run.cohorts:
        if result.status == BUSY:
            if len(run.cohorts) > 1:  # one cohort alone: the exit line says it
                err.print(
                    f"{result.cohort.name} ({result.cohort.id}): {result.error}", markup=False
                )
            continue
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


def _render_cohort(destination: Destination | WebhookDestination, result: CohortSync) -> None:
    r = result.report
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(r.failed_by.items())) or "none"
    attempts = ", ".join(f"{k}: {v}" for k, v in sorted(r.attempt_failures.items())) or "none"
    rows: list[tuple[str, Any]] = [
        ("status", result.status + (f": {result.error}" if result.error else "")),
        ("mode", result.mode.value),
    ]
    if result.list_id or result.mode is SyncMode.list:  # webhooks and traits have no list
        source = f" ({result.list_source})" if result.list_source else ""
        list_id = (result.list_id or "-") + source
        rows.append(("list id", list_id))
    rows += [
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


def _phases(result: CohortSync) -> str:
    seconds = result.phase_seconds()
    return ", ".join(f"{name} {seconds[f'{name}_s']:.3f}s" for name in PHASES)


def render_dry_run(
    destination: Destination | WebhookDestination,
    plans: Sequence[DryRun],
    output: OutputFormat,
    *,
    as_curl: bool = False,
) -> None:
    """The plan of each cohort, then every request it would send, in the one dry-run format
    of every command (credentials redacted, bodies whole) or as runnable curl commands
    (credentials as ``$ENV`` references); written as they are built. ``-o json``: the plans,
    each with the first request of each kind."""
    if output is OutputFormat.json and not as_curl:
        print_json({"ok": True, "dry_run": True, "cohorts": [p.to_dict() for p in plans]})
        return
    lines: list[str] = []
    shown = 0
    for plan in plans:
        calls = ", ".join(f"{n:,} {call}" for call, n in plan.calls.items()) or "no requests"
        lines += [
            f"# {plan.cohort.name} ({plan.cohort.id}), {plan.mode.value} mode: "
            f"{plan.snapshot_users:,} in the snapshot, {plan.entered:,} entered, "
            f"{plan.left:,} left, {plan.unchanged:,} unchanged",
            f"# would send: {calls}",
            "",
        ]
        total = plan.request_count
        for number, request in enumerate(plan.each_request(), 1):
            lines += _request_lines(destination, request, number, total, as_curl=as_curl)
            if len(lines) >= LINES_PER_WRITE:
                write_lines(lines)
                lines = []
        shown += total
    write_lines(lines)
    err.print(f"dry run: {shown:,} request(s) shown, nothing sent")


def _request_lines(
    destination: Destination | WebhookDestination,
    request: PlannedRequest,
    number: int,
    total: int,
    *,
    as_curl: bool,
) -> list[str]:
    title = f"{request.call} ({request.users:,} users)"
    url = destination.scrub(redact_url(request.url))
    body = destination.scrub(request.body.decode("utf-8", errors="replace"))
    if not as_curl:
        headers = destination.redacted_headers(request.headers)
        return dry_run_block(number, total, title, request.method, url, list(headers.items()), body)
    user: EnvRef | None = None
    if isinstance(destination, Destination):
        user, pairs = curl_credentials(destination, request.headers)
    else:  # a webhook's custom headers are its only credentials
        custom = {name.lower() for name, _ in destination.headers}
        pairs = [
            (name, EnvRef(f"${env_name_for_header(name)}") if name.lower() in custom else value)
            for name, value in request.headers.items()
        ]
    command = curl_command(request.method, url, pairs, body.encode(), user=user)
    return [f"# {number}/{total} {title}", command, ""]


def run_and_render(
    destination: Destination | WebhookSync,
    shown: Destination | WebhookDestination,
    cohorts: Sequence[CohortSpec],
    settings: SyncSettings,
    *,
    period: float | None,
    max_runs: int | None,
    verbose: bool,
    quiet: bool,
    output: OutputFormat,
) -> None:
    """Sync every cohort once or on a schedule, each run's summary shown as it ends; raises
    unless everything was confirmed (:func:`raise_unless_ok`)."""

    def once(number: int) -> SyncRun:
        if period is not None:
            announce_run(number)
        run = sync_all(
            destination,
            cohorts,
            settings,
            hooks_for=views(verbose=verbose, quiet=quiet),
            check=False,  # checked before anything was read
        )
        render_run(shown, run, output, quiet=quiet)
        return run

    raise_unless_ok(run_schedule(once, every=period, max_runs=max_runs, on_wait=announce_next))
