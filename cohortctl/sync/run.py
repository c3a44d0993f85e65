"""``cohortctl sync``: replay Amplitude's cohort sync at a partner endpoint, request for request.

One cohort (:func:`sync_cohort`), as Amplitude runs it (spec part B, "How Amplitude runs a sync"):

1. read the snapshot (an ID file: the cohort's members now), open the state of this
   destination + mode + cohort, and diff: who entered, who left (:func:`plan_diff`);
2. list mode without a list yet: send the list-create alone (retried like every call) and
   record the list id read from the answer;
3. store the run's batches in the state (:meth:`SyncState.plan_batches`), entered users first
   (list-add / trait ``true``), then those who left (list-remove / trait ``false``);
4. deliver them with Amplitude's workers and retries, confirming each batch in the state right
   after its 2xx, and only then;
5. fold the confirmations, record the run, and write the users of failed batches to a file.

Re-running the same command sends exactly what the destination is still missing: the users of
failed batches, of batches a Ctrl-C or a kill cut off, and whatever changed in the snapshot.
The retry file is for a person to inspect (or to replay with ``cohortctl mock``); it is not a
snapshot, since syncing it would remove everyone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohortctl.errors import CheckFailed, InputError
from cohortctl.files import write_atomically
from cohortctl.http.outcomes import names_unknown_list
from cohortctl.http.proxy import proxy_for
from cohortctl.http.redact import Redactor
from cohortctl.ids import read_ids
from cohortctl.partner import payloads
from cohortctl.partner.classify import REDIRECTS, Reply
from cohortctl.partner.destination import Destination
from cohortctl.sync import storage
from cohortctl.sync.batches import (
    Batch,
    BatchFailure,
    BatchResult,
    DeliveryInterrupted,
    DeliveryReport,
    write_retry_file,
)
from cohortctl.sync.delivery import deliver
from cohortctl.sync.hooks import (
    COMPARING,
    CREATING_LIST,
    OTHER_LIST,
    PLANNING,
    READING,
    RECORDING,
    RECREATING_LIST,
    REPAIRED,
    SENDING,
    SyncHooks,
)
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.requests import Requests, key_prefixes
from cohortctl.sync.results import FAILED, INTERRUPTED, OK, CohortSync
from cohortctl.sync.settings import SyncMode, SyncSettings
from cohortctl.sync.state import (
    ADD,
    LIST_CREATED,
    LIST_GIVEN,
    LIST_NONE,
    REMOVE,
    Diff,
    PlannedBatches,
    SyncState,
    destination_key,
    plan_diff,
)

if TYPE_CHECKING:
    from cohortctl.sync.webhook import WebhookSync


def read_snapshot(cohort: CohortSpec) -> list[str]:
    """The cohort's members now, from its ID file (validated, deduplicated)."""
    return read_ids(cohort.snapshot, column=cohort.column).ids


def cohort_key(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> str:
    """The state key of this destination + mode + cohort."""
    return destination_key(destination.base_url, settings.mode.value, cohort.id)


def cohort_state(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> SyncState:
    """Open the state of this destination + mode + cohort."""
    return SyncState.open(settings.state_file, cohort_key(destination, cohort, settings))


def check_state(settings: SyncSettings, *, create: bool = True) -> None:
    """Check the whole state file (identity, version, ``quick_check``) before anything else.

    Raises :class:`StateFileError`; creates a new state file when there is none and
    ``create`` is true. Call it before reading snapshots or sending anything.
    """
    path = settings.state_file
    if not create and not path.exists():
        return
    storage.connect(path, quick_check=True).close()


class PhaseClock:
    """Adds the time spent in each ``with clock("phase")`` block to ``phases``."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started


def deliver_batches(
    batches: Iterable[Batch],
    size: int,
    on_done: Callable[[Batch, BatchResult], None],
    hooks: SyncHooks,
    options: dict[str, Any],
) -> tuple[DeliveryReport, bool]:
    """Deliver with the run's progress hooks: the report, and whether Ctrl-C/SIGTERM stopped it."""
    try:
        report = deliver(
            batches,
            max_batch_size=size,
            on_done=on_done,
            **options,
        )
    except DeliveryInterrupted as stopped:
        return stopped.report, True
    return report, False


def delivery_options(
    settings: SyncSettings,
    hooks: SyncHooks,
    *,
    url: str,
    headers: dict[str, str],
    timeout: float,
    redactor: Redactor,
    workers: int,
    **extra: Any,
) -> dict[str, Any]:
    """The options of :func:`deliver` for one destination: its headers, deadline, proxy and
    redactor, the run's retry policy and hooks."""
    return {
        "headers": headers,
        "workers": workers,
        "policy": settings.policy,
        "timeout": timeout,
        "hooks": hooks,
        "proxy": proxy_for(url),
        "redactor": redactor,
        **extra,
    }


def partner_delivery_options(
    destination: Destination, settings: SyncSettings, hooks: SyncHooks, workers: int
) -> dict[str, Any]:
    """:func:`delivery_options` for a partner destination (its success statuses, rate limit)."""
    return delivery_options(
        settings,
        hooks,
        url=destination.base_url,
        headers=destination.request_headers(),
        timeout=destination.timeout,
        redactor=destination.redactor(),
        workers=workers,
        success=destination.success,
        rate_limit=destination.rate_limit,
    )


def _create_list(
    destination: Destination,
    requests: Requests,
    settings: SyncSettings,
    hooks: SyncHooks,
    result: CohortSync,
) -> str | None:
    """Send the list-create alone; the list id from its answer, or None (recorded in result)."""
    call = payloads.LIST_CREATE
    body = requests.encoder(call, None, True)(())
    method = destination.method_for(call)
    batch = Batch(call, method, requests.url(call, None, True), body, (), call)
    answers: list[BatchResult] = []
    # The list-create is no part of the users' progress.
    quiet = replace(hooks, on_progress=None)
    report = deliver(
        [batch],
        on_done=lambda _b, r: answers.append(r),
        **partner_delivery_options(destination, settings, quiet, 1),
    )
    _merge(result.report, report, destination)
    if not report.ok or not answers:
        result.status = FAILED
        result.error = "the list-create request failed: nothing else was sent"
        return None
    if destination.no_list_id:
        return ""
    answer_text = answers[0].body.decode("utf-8", "replace")
    try:
        list_id = destination.find_list_id(answer_text)
    except CheckFailed as exc:
        result.status = FAILED
        result.error = exc.message
        return None
    warning = destination.list_id_warning(answer_text)
    if warning is not None:
        result.warnings.append(warning)
    return list_id


def _labelled(destination: Destination, failure: BatchFailure) -> BatchFailure:
    """The failure labelled with the destination's error classification (or a named shape)."""
    if not failure.reason.isdigit() or int(failure.reason) in REDIRECTS:
        return failure  # redirects already carry the delivery's note (and its Location)
    label = destination.meaning(Reply(int(failure.reason), failure.kind, "", failure.body))
    return failure if label is None else replace(failure, meaning=label)


def _merge(
    into: DeliveryReport, report: DeliveryReport, destination: Destination | None = None
) -> None:
    if destination is not None:
        report.failures = [_labelled(destination, f) for f in report.failures]
    into.batches_ok += report.batches_ok
    into.batches_failed += report.batches_failed
    into.users_ok += report.users_ok
    into.users_failed += report.users_failed
    into.requests += report.requests
    into.retries += report.retries
    into.duration += report.duration
    into.interrupted = into.interrupted or report.interrupted
    into.attempt_failures.update(report.attempt_failures)
    into.failed_by.update(report.failed_by)
    into.retry_delays.extend(report.retry_delays)
    into.failures.extend(report.failures)
    into.latencies.extend(report.latencies)


def retry_file_for(settings: SyncSettings, cohort: CohortSpec, key: str, *, many: bool) -> Path:
    """Where the users of failed batches go: ``--retry-file`` or next to the state file.

    With several cohorts, a given ``--retry-file`` gets the cohort id before its suffix.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", cohort.id)[:60]
    if settings.retry_file is not None:
        path = settings.retry_file
        return path.with_name(f"{path.stem}.{slug}{path.suffix}") if many else path
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return settings.state_file.with_name(f"retry-{slug}-{settings.mode.value}-{digest}.txt")


def sync_cohort(
    destination: Destination | WebhookSync,
    cohort: CohortSpec,
    settings: SyncSettings,
    hooks: SyncHooks | None = None,
    *,
    many: bool = False,
) -> CohortSync:
    """Sync one cohort (see the module docstring); never raises for failed requests.

    ``destination`` is a partner destination, or a :class:`~cohortctl.sync.webhook.WebhookSync`
    in webhook mode (:func:`cohortctl.sync.webhook.sync_webhook_cohort` does the rest).
    A Ctrl-C during the delivery ends it with status ``interrupted`` (recorded in the state);
    what was confirmed stays confirmed and the next run sends the rest. A state file that
    cannot be written raises :class:`StateFileError` (what was committed before is kept).
    The caller holds the sync lock (see :func:`cohortctl.sync.schedule.sync_all`).
    """
    hooks = hooks or SyncHooks()
    started = time.perf_counter()
    hooks.phase(READING, path=cohort.snapshot)
    if not isinstance(destination, Destination):
        from cohortctl.sync import webhook

        return webhook.sync_webhook_cohort(destination, cohort, settings, hooks, started, many)
    phases: dict[str, float] = {}
    clock = PhaseClock(phases)
    with clock("read"):
        snapshot = read_snapshot(cohort)
    requests = Requests(destination, cohort, settings)
    state = cohort_state(destination, cohort, settings)
    result = CohortSync(cohort, settings.mode, state.key, started_at=time.time(), phases=phases)
    result.snapshot_users = len(snapshot)
    with in_state(state, result, started):
        return _sync_opened(destination, requests, settings, hooks, state, snapshot, result, many)


@contextlib.contextmanager
def in_state(state: SyncState, result: CohortSync, started: float) -> Iterator[None]:
    """Around one cohort's sync: a failing state file becomes one :class:`StateFileError`;
    at the end the duration is recorded and the state closed."""
    try:
        yield
    except sqlite3.Error as exc:
        raise storage.state_error(state.path, exc) from None
    finally:
        result.duration = time.perf_counter() - started
        state.close()


def _sync_opened(
    destination: Destination,
    requests: Requests,
    settings: SyncSettings,
    hooks: SyncHooks,
    state: SyncState,
    snapshot: list[str],
    result: CohortSync,
    many: bool,
) -> CohortSync:
    clock = PhaseClock(result.phases)
    list_mode = settings.mode is SyncMode.list
    if list_mode:
        _given_list(destination, settings, hooks, state)
    list_id = state.list_id if list_mode else None
    requests.check_templates(list_id)
    if list_mode and settings.recreate_list:
        hooks.phase(RECREATING_LIST)
        new_id = _create_list(destination, requests, settings, hooks, result)
        if new_id is None:
            return result
        # The create answered 2xx: from here the state is about the new, empty list.
        state.replace_list(new_id, LIST_NONE if destination.no_list_id else LIST_CREATED)
        list_id = new_id
        result.list_created = True
    hooks.phase(COMPARING)
    with clock("diff"):
        diff = plan_diff(snapshot, state, full=settings.full)
    del snapshot
    result.repaired_batches = state.repaired_batches
    if state.repaired_batches:
        hooks.phase(REPAIRED, batches=state.repaired_batches)
    result.entered, result.left, result.unchanged = (
        len(diff.entered),
        len(diff.left),
        diff.unchanged,
    )
    if list_mode and list_id is None:
        hooks.phase(CREATING_LIST)
        list_id = _create_list(destination, requests, settings, hooks, result)
        if list_id is None:
            return result
        state.set_list_id(list_id, LIST_NONE if destination.no_list_id else LIST_CREATED)
        result.list_created = True
    if list_mode:
        result.list_source = state.list_source
    result.list_id = list_id or None
    _deliver_diff(destination, requests, settings, hooks, state, diff, result, list_id)
    if list_mode and list_id and _list_is_gone(result.report):
        result.lost_list = list_id
        result.error = (
            f"the partner no longer has list {list_id} (it answered 404 unknown list); "
            "run the same command with --recreate-list to create a new list and send the "
            "whole cohort to it"
        )
    if result.status == INTERRUPTED:
        return result
    path = retry_file_for(settings, requests.cohort, state.key, many=many)
    _write_retry_file(result, path, explicit=settings.retry_file is not None)
    return result


def _list_is_gone(report: DeliveryReport) -> bool:
    """True when a failed list-add / list-remove was a 404 naming the list as unknown."""
    return any(
        f.kind in (payloads.LIST_ADD, payloads.LIST_REMOVE)
        and f.reason == "404"
        and names_unknown_list(404, f.body)
        for f in report.failures
    )


def _given_list(
    destination: Destination, settings: SyncSettings, hooks: SyncHooks, state: SyncState
) -> None:
    """Record a ``--list-id`` list (a new one starts the destination over); InputError when
    the destination has no list-create and no list is given or remembered."""
    given = settings.list_id
    if given is None:
        if state.list_id is None and not destination.has_call(payloads.LIST_CREATE):
            raise InputError(
                f"destination {destination.name or destination.base_url!r} has no list-create "
                "call: give the id of an existing list with --list-id"
            )
        return
    if state.list_id == given:
        return
    if state.list_id is None:
        state.set_list_id(given, LIST_GIVEN)
        return
    hooks.phase(OTHER_LIST, list_id=given)
    state.replace_list(given, LIST_GIVEN)


def _deliver_diff(
    destination: Destination,
    requests: Requests,
    settings: SyncSettings,
    hooks: SyncHooks,
    state: SyncState,
    diff: Diff,
    result: CohortSync,
    list_id: str | None,
) -> None:
    clock = PhaseClock(result.phases)
    size = requests.batch_size(diff.entered, diff.left, list_id)
    enter_plan, leave_plan, run_id = plan_batches(
        state, diff, diff.entered, size, hooks, clock, full=settings.full
    )
    enter_call, leave_call = settings.calls()
    enter_key, leave_key = key_prefixes(settings)
    deliver_planned(
        state,
        result,
        run_id,
        itertools.chain(
            requests.batches(enter_plan, enter_call, list_id, key_prefix=enter_key),
            requests.batches(leave_plan, leave_call, list_id, key_prefix=leave_key),
        ),
        size,
        hooks,
        partner_delivery_options(destination, settings, hooks, settings.workers),
        clock=clock,
        labels=destination,
    )


def plan_batches(
    state: SyncState,
    diff: Diff,
    entering: Sequence[str],
    size: int,
    hooks: SyncHooks,
    clock: PhaseClock,
    *,
    full: bool,
) -> tuple[PlannedBatches, PlannedBatches, int]:
    """Store this run's batches (``entering`` users, then those who left) in place of any
    earlier plan, and start the run record: the two plans and the run id."""
    hooks.phase(PLANNING)
    with clock("diff"):
        state.discard_plans()
        enter_plan = state.plan_batches(ADD, entering, size)
        leave_plan = state.plan_batches(REMOVE, diff.left, size)
        run_id = state.start_run(diff, full=full)
    users = len(enter_plan.user_ids) + len(leave_plan.user_ids)
    hooks.phase(SENDING, users=users, batches=enter_plan.count + leave_plan.count)
    return enter_plan, leave_plan, run_id


def deliver_planned(
    state: SyncState,
    result: CohortSync,
    run_id: int,
    batches: Iterable[Batch],
    size: int,
    hooks: SyncHooks,
    options: dict[str, Any],
    *,
    clock: PhaseClock,
    labels: Destination | None = None,
    on_confirmed: Callable[[Batch], None] | None = None,
    finish: Callable[[], None] | None = None,
) -> None:
    """Deliver planned batches, confirming each in the state right after its 2xx (and only
    then), then record the run in ``result`` and the state.

    ``on_confirmed`` runs after each confirmation, ``finish`` once the confirmations are
    committed; ``labels``: the destination whose error classes label the failures. An
    interrupted run keeps its plans (the next run folds their confirmations first).
    """
    confirmer = state.confirmer()

    def guarded() -> Iterator[Batch]:
        for batch in batches:
            if confirmer.error is not None:
                return  # the state cannot record confirmations (disk full): send no more
            yield batch

    done = [0, 0]  # users confirmed, indexed by op: REMOVE (0), ADD (1)
    status = OK
    report: DeliveryReport
    try:
        confirm = confirmer.confirm

        def on_done(batch: Batch, answer: BatchResult) -> None:
            if answer.ok:
                ref = batch.ref
                confirm(ref)
                done[ref[1]] += ref[2]
                if on_confirmed is not None:
                    on_confirmed(batch)

        with clock("deliver"):
            report, stopped = deliver_batches(guarded(), size, on_done, hooks, options)
        if stopped:
            status = INTERRUPTED
    finally:
        with clock("confirm"):
            confirmer.close()
            if finish is not None:
                finish()
    _merge(result.report, report, labels)
    result.added, result.removed = done[ADD], done[REMOVE]
    if status == OK and not report.ok:
        status = FAILED
    result.status = status
    with clock("confirm"):
        state.finish_run(
            run_id,
            status=status,
            added=result.added,
            removed=result.removed,
            failed=report.users_failed,
        )
        if status == INTERRUPTED:
            return
        hooks.phase(RECORDING)
        state.discard_plans()


def _write_retry_file(result: CohortSync, path: Path, *, explicit: bool) -> None:
    if result.report.users_failed:
        report = result.report
        result.retry_users = write_atomically(
            path, lambda tmp: write_retry_file(report, tmp), what="retry file"
        )
        result.retry_file = str(path)
    elif not explicit and path.exists():
        path.unlink()  # a stale file from an earlier run would point at users now delivered
