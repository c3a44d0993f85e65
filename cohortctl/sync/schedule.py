"""Several cohorts and schedules: :func:`sync_all` over a plan, :func:`run_schedule` for
``--every``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from cohortctl.errors import Busy
from cohortctl.partner.destination import Destination
from cohortctl.sync import lock
from cohortctl.sync.hooks import SyncHooks
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.results import BUSY, INTERRUPTED, CohortSync, SyncRun
from cohortctl.sync.run import check_state, cohort_key, sync_cohort
from cohortctl.sync.settings import SyncSettings

if TYPE_CHECKING:
    from cohortctl.sync.webhook import WebhookSync

HooksFor = Callable[[CohortSpec], AbstractContextManager[SyncHooks | None]]
"""Per cohort, a context (a progress view, say) that gives the cohort's hooks."""


def sync_all(
    destination: Destination | WebhookSync,
    cohorts: Sequence[CohortSpec],
    settings: SyncSettings,
    hooks: SyncHooks | None = None,
    *,
    hooks_for: HooksFor | None = None,
    on_cohort: Callable[[CohortSync], object] | None = None,
    check: bool = True,
) -> SyncRun:
    """Sync each cohort in turn, each with its own requests (as Amplitude does).

    ``destination`` is a partner destination, or a :class:`~cohortctl.sync.webhook.WebhookSync`
    in webhook mode. Each cohort holds its sync lock while it runs (waiting up to
    ``settings.lock_timeout``); a cohort another sync holds is skipped with status ``busy``
    and the lock holder in its error, and the others run. Stops at a Ctrl-C (the run is
    marked interrupted); a failed cohort does not stop the next. ``hooks_for`` gives each
    cohort its hooks (else ``hooks`` for all); ``check``: check the state file first.
    """
    from cohortctl.sync import webhook

    if check:
        check_state(settings)
    run = SyncRun(started_at=time.time())
    started = time.perf_counter()
    many = len(cohorts) > 1
    if isinstance(destination, webhook.WebhookSync):
        spec = destination

        def key_of(cohort: CohortSpec) -> str:
            return webhook.cohort_key(spec.destination, cohort)
    else:
        partner = destination

        def key_of(cohort: CohortSpec) -> str:
            return cohort_key(partner, cohort, settings)

    for cohort in cohorts:
        key = key_of(cohort)
        try:
            held = lock.acquire(
                settings.state_file,
                key,
                timeout=settings.lock_timeout,
                what=f"{cohort.name} ({cohort.id})",
            )
        except Busy as busy:
            result = CohortSync(cohort, settings.mode, key, status=BUSY, error=busy.message)
        else:
            context = hooks_for(cohort) if hooks_for is not None else nullcontext(hooks)
            with held, context as cohort_hooks:
                result = sync_cohort(destination, cohort, settings, cohort_hooks, many=many)
        run.cohorts.append(result)
        if on_cohort is not None:
            on_cohort(result)
        if result.status == INTERRUPTED:
            run.interrupted = True
            break
    run.duration = time.perf_counter() - started
    return run


def run_schedule(
    run_once: Callable[[int], SyncRun],
    *,
    every: float | None,
    max_runs: int | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.time,
    on_wait: Callable[[float], object] | None = None,
) -> list[SyncRun]:
    """Call ``run_once(n)`` once, or every ``every`` seconds until ``max_runs`` or Ctrl-C.

    The next run starts ``every`` seconds after the previous one started (a run longer than
    the period starts the next at once). An interrupted run ends the schedule. ``on_wait``
    gets the time of the next run before each wait.
    """
    runs: list[SyncRun] = []
    number = 0
    while True:
        number += 1
        started = clock()
        run = run_once(number)
        runs.append(run)
        if every is None or run.interrupted or (max_runs is not None and number >= max_runs):
            return runs
        next_at = started + every
        if on_wait is not None:
            on_wait(next_at)
        wait = next_at - clock()
        if wait > 0:
            sleep(wait)
