"""Make a cohort hold exactly the ids of a file, sending only the differences.

Replacing a cohort (``upload --existing-cohort-id``) of more than 100,000 ids leaves it holding
only a part of its members for a while, and a real-time sync landing then tells every partner
to remove everyone else. Reconciling instead:

1. reads the cohort's metadata (an unknown id fails here, before an export is spent);
2. exports the cohort and reads its members as the file streams in;
3. reads the metadata again: a size that no longer matches the export means the cohort
   changed meanwhile, and nothing is sent (the diff would be wrong);
4. sends membership ADDs of the missing ids, then REMOVEs of the extra ones, in chunks of at
   most 100,000, strictly one request after another (ADD and REMOVE at once answer 429);
   REMOVEs come earlier only when the ADDs would push the cohort past 2,000,000 members;
5. reads the size once more: if it is not what the changes should have left, the cohort
   changed while reconciling, and the result says so.

Never an upload with ``existing_cohort_id``. ``dry_run`` does steps 1 to 3 only (reads).
The core returns a :class:`ReconcileResult` and reports :class:`ReconcileEvent` s; the CLI
renders both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cohortctl.customer.api import (
    ADD,
    BY_ID,
    BY_NAME,
    MAX_COHORT_SIZE,
    MAX_IDS_PER_REQUEST,
    MEMBERSHIP_PATH,
    REMOVE,
    ExportPoll,
    membership_body,
)
from cohortctl.customer.client import AmplitudeClient
from cohortctl.customer.cohorts import (
    AMPLITUDE,
    USER,
    Members,
    cohort_size,
    export_members,
    find_cohort,
    join_hints,
)
from cohortctl.customer.uploading import describe_request
from cohortctl.errors import CheckFailed, CohortctlError, InputError
from cohortctl.ids import chunked

CHANGE_ID_SAMPLE = 10

# Event phases, in the order they happen.
LOOKUP = "lookup"
EXPORT = "export"
EXPORTED = "exported"
APPLY = "apply"


@dataclass(frozen=True)
class ReconcileEvent:
    """Reported as a reconcile goes: the phase, and how far it is (ids for ``apply``)."""

    phase: str
    done: int = 0
    total: int = 0
    call: str | None = None
    poll: ExportPoll | None = None


@dataclass(frozen=True)
class Change:
    """One planned membership request."""

    operation: str  # ADD | REMOVE
    id_type: str  # BY_NAME | BY_ID
    ids: Sequence[str]

    @property
    def call(self) -> str:
        """How the request is named in progress and summaries."""
        return f"membership {self.operation}"

    def body(self, cohort_id: str, *, strict_ids: bool = False) -> dict[str, Any]:
        """The exact JSON body of this membership request."""
        return membership_body(
            cohort_id, self.ids, id_type=self.id_type, operation=self.operation,
            strict_ids=strict_ids,
        )  # fmt: skip


@dataclass
class ReconcileResult:
    """What a reconcile found and did; ``summary()`` is its ``-o json``."""

    cohort_id: str
    name: str | None
    id_type: str
    dry_run: bool
    file_ids: int
    size_before: int | None
    members_exported: int
    size_checked: int | None  # the size read right after the export
    to_add: list[str]
    to_remove: list[str]  # user ids (user mode) or Amplitude ids
    to_remove_by_amplitude_id: list[str]  # user mode: members that have no user id
    export_request_id: str
    export_polls: int
    planned_requests: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)
    size_after: int | None = None
    expected_size: int | None = None
    changed: str | None = None  # why the cohort seems to have changed while reconciling
    planned: list[Change] = field(default_factory=list, repr=False)  # in the order sent

    def describe(self, base_url: str, *, strict_ids: bool = False) -> list[dict[str, Any]]:
        """The planned requests as ``--dry-run`` shows them (bodies whole, auth redacted)."""
        return [
            describe_request(
                number, change.call, "POST", base_url, MEMBERSHIP_PATH,
                change.body(self.cohort_id, strict_ids=strict_ids),
            )
            for number, change in enumerate(self.planned, 1)
        ]  # fmt: skip

    @property
    def unchanged(self) -> int:
        """Members that were already in the file."""
        removed = len(self.to_remove) + len(self.to_remove_by_amplitude_id)
        return self.members_exported - removed

    @property
    def changes(self) -> int:
        """Ids that must be added or removed."""
        return len(self.to_add) + len(self.to_remove) + len(self.to_remove_by_amplitude_id)

    @property
    def ids_sent(self) -> int:
        """Ids sent in membership requests."""
        return sum(int(r["ids"]) for r in self.requests)

    @property
    def replace_ids(self) -> int:
        """Ids a replace (``upload --existing-cohort-id`` of the whole file) would send."""
        return self.file_ids

    @property
    def replace_requests(self) -> int:
        """Requests a replace would send: one upload, then ADDs of 100,000."""
        return math.ceil(self.file_ids / MAX_IDS_PER_REQUEST)

    def summary(self, *, sample: int = CHANGE_ID_SAMPLE) -> dict[str, Any]:
        """JSON-ready: counts, the first ids of each side, what was sent, the size checks."""
        return {
            "cohort_id": self.cohort_id,
            "name": self.name,
            "id_type": self.id_type,
            "dry_run": self.dry_run,
            "file_ids": self.file_ids,
            "size_before": self.size_before,
            "members_exported": self.members_exported,
            "size_after_export": self.size_checked,
            "unchanged": self.unchanged,
            "to_add": {"count": len(self.to_add), "first": self.to_add[:sample]},
            "to_remove": {
                "count": len(self.to_remove) + len(self.to_remove_by_amplitude_id),
                "first": (self.to_remove + self.to_remove_by_amplitude_id)[:sample],
                "by_amplitude_id": len(self.to_remove_by_amplitude_id),
            },
            "changes": {"ids": self.changes, "requests": self.planned_requests},
            "sent": {"ids": self.ids_sent, "requests": len(self.requests)},
            "replace_would_send": {"ids": self.replace_ids, "requests": self.replace_requests},
            "requests": self.requests,
            "skipped_ids": {"count": len(self.skipped_ids), "first": self.skipped_ids[:sample]},
            "size_after": self.size_after,
            "expected_size": self.expected_size,
            "changed": self.changed,
            "export_request_id": self.export_request_id,
            "export_polls": self.export_polls,
        }


def diff(
    file_ids: Sequence[str], members: Members, *, id_type: str = USER
) -> tuple[list[str], list[str], list[str]]:
    """``(to_add, to_remove, to_remove_by_amplitude_id)``: file order, then export order."""
    wanted = dict.fromkeys(file_ids)
    to_add = [i for i in wanted if i not in members.ids]
    to_remove = [i for i in members.ids if i not in wanted]
    by_amplitude_id = list(members.without_id) if id_type == USER else []
    return to_add, to_remove, by_amplitude_id


def plan_changes(
    current: int,
    to_add: Sequence[str],
    to_remove: Sequence[tuple[str, Sequence[str]]],
    *,
    add_type: str = BY_NAME,
    chunk_size: int = MAX_IDS_PER_REQUEST,
    max_size: int = MAX_COHORT_SIZE,
) -> list[Change]:
    """The membership requests in order: ADDs first, a REMOVE earlier only to keep the
    cohort within ``max_size``. ``to_remove`` is ``(id_type, ids)`` groups; ADDs use
    ``add_type``."""
    adds = list(chunked(to_add, chunk_size))
    removes = [
        Change(REMOVE, id_type, chunk)
        for id_type, ids in to_remove
        for chunk in chunked(ids, chunk_size)
    ]
    planned: list[Change] = []
    size = current
    for chunk in adds:
        while size + len(chunk) > max_size and removes:
            change = removes.pop(0)
            planned.append(change)
            size -= len(change.ids)
        planned.append(Change(ADD, add_type, chunk))
        size += len(chunk)
    planned.extend(removes)
    return planned


def reconcile(
    client: AmplitudeClient,
    cohort_id: str,
    file_ids: Sequence[str],
    *,
    id_type: str = USER,
    dry_run: bool = False,
    strict_ids: bool = False,
    export_timeout: float = 900.0,
    chunk_size: int = MAX_IDS_PER_REQUEST,
    max_size: int = MAX_COHORT_SIZE,
    on_event: Callable[[ReconcileEvent], None] | None = None,
) -> ReconcileResult:
    """Make cohort ``cohort_id`` hold exactly ``file_ids`` (unique), sending only changes.

    Raises CheckFailed when the cohort is unknown, or changed during the export (nothing is
    sent then). A cohort that changed while the changes were sent is reported in
    ``result.changed``; a failure part-way says how far it got and that running again is safe.
    """
    if id_type not in (USER, AMPLITUDE):
        raise InputError(f"id type must be user or amplitude, got {id_type!r}")
    if not file_ids:
        raise InputError(
            "no ids: reconciling with an empty file would remove every member; nothing was sent"
        )
    if len(file_ids) > max_size:
        raise InputError(
            f"{len(file_ids):,} unique ids: Amplitude allows at most {max_size:,} users per "
            "cohort; nothing was sent",
            hint="split the file into several cohorts",
        )
    emit = on_event or (lambda event: None)
    emit(ReconcileEvent(LOOKUP))
    before = find_cohort(client, cohort_id)
    emit(ReconcileEvent(EXPORT))
    members = export_members(
        client,
        cohort_id,
        id_type=id_type,
        timeout=export_timeout,
        on_poll=lambda poll: emit(ReconcileEvent(EXPORT, poll=poll)),
    )
    emit(ReconcileEvent(EXPORTED, done=members.count, total=members.count))
    now = cohort_size(find_cohort(client, cohort_id))
    to_add, to_remove, by_amplitude_id = diff(file_ids, members, id_type=id_type)
    name = before.get("name")
    result = ReconcileResult(
        cohort_id=str(cohort_id),
        name=None if name is None else str(name),
        id_type=id_type,
        dry_run=dry_run,
        file_ids=len(file_ids),
        size_before=cohort_size(before),
        members_exported=members.count,
        size_checked=now,
        to_add=to_add,
        to_remove=to_remove,
        to_remove_by_amplitude_id=by_amplitude_id,
        export_request_id=members.request_id,
        export_polls=members.polls,
    )
    if now is not None and now != members.count:
        result.changed = (
            f"cohort {cohort_id} changed while it was exported: the export lists "
            f"{members.count:,} members, the cohort now has {now:,}"
        )
        if not dry_run:
            raise CheckFailed(
                f"{result.changed}; nothing was sent",
                hint="something else is changing this cohort: run reconcile again once it is done",
            )
    name_type = BY_NAME if id_type == USER else BY_ID
    groups = [(name_type, to_remove), (BY_ID, by_amplitude_id)]
    changes = plan_changes(
        members.count,
        to_add,
        [(t, ids) for t, ids in groups if ids],
        add_type=name_type,
        chunk_size=chunk_size,
        max_size=max_size,
    )
    result.planned_requests = len(changes)
    result.planned = changes
    if dry_run:
        return result
    _apply(client, result, changes, strict_ids=strict_ids, emit=emit)
    return result


def _apply(
    client: AmplitudeClient,
    result: ReconcileResult,
    changes: Sequence[Change],
    *,
    strict_ids: bool,
    emit: Callable[[ReconcileEvent], None],
) -> None:
    total = sum(len(c.ids) for c in changes)
    emit(ReconcileEvent(APPLY, done=0, total=total))
    size = result.members_exported
    for change in changes:
        try:
            answer = client.membership(change.body(result.cohort_id, strict_ids=strict_ids))
        except CohortctlError as error:
            error.hint = join_hints(error.hint, _partial_hint(result, total))
            raise
        skipped = len(answer.skipped_ids)
        room = CHANGE_ID_SAMPLE * 4 - len(result.skipped_ids)
        result.skipped_ids.extend(answer.skipped_ids[: max(room, 0)])
        result.requests.append(
            {
                "call": change.call,
                "id_type": change.id_type,
                "ids": len(change.ids),
                "skipped": skipped,
            }
        )
        applied = len(change.ids) - skipped
        size += applied if change.operation == ADD else -applied
        emit(ReconcileEvent(APPLY, done=result.ids_sent, total=total, call=change.call))
    result.expected_size = size
    try:
        result.size_after = cohort_size(find_cohort(client, result.cohort_id))
    except CohortctlError as error:
        error.hint = join_hints(
            error.hint,
            f"all {total:,} changes were sent to cohort {result.cohort_id}; only the final "
            "size check failed: run reconcile again (or --dry-run) to check the cohort",
        )
        raise
    if result.size_after is not None and result.size_after != size:
        result.changed = (
            f"cohort {result.cohort_id} has {result.size_after:,} members after reconciling, "
            f"{size:,} expected: it changed while reconciling (another upload or membership "
            "change); run reconcile again to bring it back to the file"
        )


def _partial_hint(result: ReconcileResult, total: int) -> str | None:
    sent = result.ids_sent
    if not sent:
        return None
    return (
        f"{sent:,} of {total:,} changes were already applied to cohort {result.cohort_id}; "
        "running the same reconcile again is safe: it exports again and sends what is left"
    )
