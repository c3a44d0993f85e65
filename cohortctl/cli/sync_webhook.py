"""``cohortctl sync --mode webhook``: the run loop of webhook mode (options parsed in sync)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cohortctl.cli.render import OutputFormat, err
from cohortctl.sync import run as syncing
from cohortctl.sync import webhook
from cohortctl.sync.plan import CohortSpec


def run(
    spec: webhook.WebhookSync,
    cohorts: Sequence[CohortSpec],
    settings: syncing.SyncSettings,
    *,
    period: float | None,
    max_runs: int | None,
    verbose: bool,
    dry_run: bool,
    output: OutputFormat,
) -> None:
    """Run (or plan, with ``dry_run``) the webhook sync of every cohort; raises on failure."""
    from cohortctl.cli import sync as sync_cli

    if dry_run:
        plans = [webhook.plan_webhook_cohort(spec, c, settings) for c in cohorts]
        sync_cli._render_dry_run(plans, output)
        return

    def once(number: int) -> syncing.SyncRun:
        if period is not None:
            err.print(f"sync run {number} at {datetime.now().isoformat(timespec='seconds')}")
        results: list[syncing.CohortSync] = []
        with webhook.locked_all(spec, cohorts, settings):
            for cohort in cohorts:
                with sync_cli._ProgressView(cohort, verbose=verbose) as view:
                    hooks = syncing.SyncHooks(
                        on_progress=view.update,
                        on_retry=view.retry if verbose else None,
                        on_phase=view.phase,
                    )
                    result = webhook.sync_webhook_cohort(
                        spec, cohort, settings, hooks, many=len(cohorts) > 1
                    )
                results.append(result)
                if result.status == syncing.INTERRUPTED:
                    break
        done = syncing.SyncRun(
            cohorts=results, interrupted=any(c.status == syncing.INTERRUPTED for c in results)
        )
        sync_cli._render_run(spec.destination, done, output)
        return done

    runs = syncing.run_schedule(
        once, every=period, max_runs=max_runs, on_wait=sync_cli._announce_next
    )
    sync_cli.raise_unless_ok(runs)
