"""``sync --mode webhook``: Amplitude's Cohort Webhook sync, batch for batch (spec part C).

The same engine as the other modes (:mod:`cohortctl.sync.run`): the snapshot is diffed against
the state, the entered users go out first (``in_cohort: true``, ``{uuid}::enter::{n}``), then
those who left (``in_cohort: false``, ``{uuid}::exit::{n}``), each batch confirmed in the state
only after its 2xx, with Amplitude's workers and retries. A retry sends the same bytes, so the
same ``message_id``; one uuid and one ``computed_time`` per run.

User properties come from the CSV snapshot's other columns (:mod:`cohortctl.sync.properties`).
The state remembers the properties each user was last sent; with ``resend_changed`` a delta
also sends the members whose selected properties changed (as entering users).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cohortctl.http.redact import Redactor
from cohortctl.partner.webhooks.payload import (
    CALL,
    WebhookDestination,
    WebhookRun,
    encode_message,
    webhook_body,
)
from cohortctl.sync.batches import Batch
from cohortctl.sync.encoders import ids_are_plain
from cohortctl.sync.hooks import COMPARING, SyncHooks
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.properties import (
    Properties,
    PropertySelection,
    changed_users,
    properties_json,
    read_with_properties,
)
from cohortctl.sync.results import INTERRUPTED, CohortSync
from cohortctl.sync.run import (
    PhaseClock,
    _write_retry_file,
    deliver_planned,
    delivery_options,
    in_state,
    plan_batches,
    retry_file_for,
)
from cohortctl.sync.settings import SyncSettings
from cohortctl.sync.state import ADD, Diff, PlannedBatches, SyncState, destination_key, plan_diff

ENTER_KEY = "webhook-enter"
EXIT_KEY = "webhook-exit"


@dataclass(frozen=True)
class WebhookSync:
    """What webhook mode adds to the sync settings: the endpoint and the properties."""

    destination: WebhookDestination
    properties: PropertySelection = field(default_factory=PropertySelection)
    resend_changed: bool = False


def cohort_key(destination: WebhookDestination, cohort: CohortSpec) -> str:
    """The state key of this webhook URL + webhook mode + cohort."""
    return destination_key(destination.url, "webhook", cohort.id)


def message_content(
    destination: WebhookDestination,
    cohort: CohortSpec,
    run: WebhookRun,
    properties: Mapping[str, Properties] | None,
    ids: Sequence[str],
    *,
    entering: bool,
    index: int,
    plain: bool = False,
) -> bytes:
    """The bytes of message ``index`` of one direction (``properties`` for entering users)."""
    head: dict[str, Any] = {
        "in_cohort": entering,
        "computed_time": run.computed_time,
        "message_id": run.message_id(entering=entering, batch=index),
    }
    if destination.template is None:
        return encode_message(
            cohort.name, cohort.id, **head, user_ids=ids, properties=properties, plain=plain
        )
    users = [(uid, properties.get(uid) or None if properties else None) for uid in ids]
    content, _ = destination.render(webhook_body(cohort.name, cohort.id, **head, users=users))
    return content


def _batches(
    plan: PlannedBatches,
    destination: WebhookDestination,
    cohort: CohortSpec,
    run: WebhookRun,
    properties: Mapping[str, Properties],
    *,
    entering: bool,
) -> Iterator[Batch]:
    key = ENTER_KEY if entering else EXIT_KEY
    plain = ids_are_plain(plan.user_ids)
    shown = properties if entering else None
    for index, (ids, ref) in enumerate(plan.batches()):
        content = message_content(
            destination, cohort, run, shown, ids, entering=entering, index=index, plain=plain
        )
        yield Batch(f"{key}:{index}", "POST", destination.url, content, ids, CALL, ref)


def resent_users(
    webhook: WebhookSync,
    settings: SyncSettings,
    diff: Diff,
    snapshot: Sequence[str],
    properties: Mapping[str, Properties],
    state: SyncState,
) -> list[str]:
    """With ``--resend-changed-properties``: the staying members whose properties changed."""
    if not (webhook.resend_changed and webhook.properties.active and not settings.full):
        return []
    entered = set(diff.entered)
    staying = [uid for uid in snapshot if uid not in entered]
    return changed_users(staying, properties, state.sent_properties())


def webhook_delivery_options(
    destination: WebhookDestination, settings: SyncSettings, hooks: SyncHooks, workers: int
) -> dict[str, Any]:
    """The options of :func:`deliver` for webhook messages (custom headers are secrets)."""
    headers, secrets = destination.request_headers(), destination.secrets()
    return delivery_options(
        settings, hooks, url=destination.url, headers=headers, timeout=destination.timeout,
        redactor=Redactor(secrets), workers=workers, user_agent=destination.user_agent,
    )  # fmt: skip


def sync_webhook_cohort(
    webhook: WebhookSync,
    cohort: CohortSpec,
    settings: SyncSettings,
    hooks: SyncHooks,
    started: float,
    many: bool,
) -> CohortSync:
    """The webhook half of :func:`cohortctl.sync.run.sync_cohort`, once it has begun (at
    ``started``) reading the snapshot: never raises for failed requests."""
    read, properties = read_with_properties(cohort.snapshot, cohort.column, webhook.properties)
    snapshot = read.ids
    state = SyncState.open(settings.state_file, cohort_key(webhook.destination, cohort))
    result = CohortSync(cohort, settings.mode, state.key, started_at=time.time())
    result.snapshot_users = len(snapshot)
    with in_state(state, result, started):
        _sync(webhook, cohort, settings, hooks, state, snapshot, properties, result)
        if result.status != INTERRUPTED:
            path = retry_file_for(settings, cohort, state.key, many=many)
            _write_retry_file(result, path, explicit=settings.retry_file is not None)
    return result


def _sync(
    webhook: WebhookSync,
    cohort: CohortSpec,
    settings: SyncSettings,
    hooks: SyncHooks,
    state: SyncState,
    snapshot: list[str],
    properties: dict[str, Properties],
    result: CohortSync,
) -> None:
    destination = webhook.destination
    hooks.phase(COMPARING)
    diff = plan_diff(snapshot, state, full=settings.full)
    result.entered, result.left, result.unchanged = (
        len(diff.entered),
        len(diff.left),
        diff.unchanged,
    )
    resent = resent_users(webhook, settings, diff, snapshot, properties, state)
    result.resent = len(resent)
    del snapshot
    size = settings.batch_size
    clock = PhaseClock(result.phases)
    enter_plan, leave_plan, run_id = plan_batches(
        state, diff, [*diff.entered, *resent], size, hooks, clock, full=settings.full
    )
    run = WebhookRun()
    sent: list[tuple[str, str]] = []
    dropped: list[str] = []

    def remember(batch: Batch) -> None:
        if batch.ref[1] == ADD:
            sent.extend((uid, properties_json(properties.get(uid))) for uid in batch.user_ids)
        else:
            dropped.extend(batch.user_ids)

    deliver_planned(
        state,
        result,
        run_id,
        itertools.chain(
            _batches(enter_plan, destination, cohort, run, properties, entering=True),
            _batches(leave_plan, destination, cohort, run, properties, entering=False),
        ),
        size,
        hooks,
        webhook_delivery_options(destination, settings, hooks, settings.workers),
        clock=clock,
        on_confirmed=remember if webhook.properties.active else None,
        finish=lambda: state.record_properties(sent, dropped),
    )
