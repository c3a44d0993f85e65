"""``sync --dry-run``: what a sync would send, sending nothing and writing nothing.

A :class:`DryRun` holds the plan (counts per call, the first request of each kind, abbreviated,
for ``-o json``) and streams every request exactly as the sync would send it
(:meth:`DryRun.each_request`): bodies are built one batch at a time, as the sync builds them,
so a dry run of millions of users never holds their bodies in memory. The requests carry the
real headers; the caller shows them redacted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cohortctl.errors import InputError
from cohortctl.http.har import redact_url
from cohortctl.ids import chunked
from cohortctl.partner import payloads, templates
from cohortctl.partner.destination import Destination
from cohortctl.partner.mock import abbreviate_json
from cohortctl.partner.webhooks.payload import CALL, WebhookDestination, WebhookRun
from cohortctl.sync import inventory
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.properties import read_with_properties
from cohortctl.sync.requests import Requests
from cohortctl.sync.run import cohort_key, read_snapshot
from cohortctl.sync.settings import SyncMode, SyncSettings
from cohortctl.sync.state import Diff, SyncState, plan_diff
from cohortctl.sync.webhook import WebhookSync, message_content, resent_users
from cohortctl.sync.webhook import cohort_key as webhook_cohort_key

PAYLOAD_KEEP = 5  # ids shown per array in a dry run's first payloads (-o json)


@dataclass(frozen=True)
class PlannedRequest:
    """One request a sync would send, exactly (its URL and headers may hold credentials)."""

    call: str  # list-create, list-add, identify-batch (true), webhook (entering) ...
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes
    users: int


EachRequest = Callable[[], Iterator[PlannedRequest]]


@dataclass
class DryRun:
    """What a sync of one cohort would send, without sending anything."""

    cohort: CohortSpec
    mode: SyncMode
    state_file: str
    snapshot_users: int
    entered: int
    left: int
    unchanged: int
    list_id: str | None
    calls: dict[str, int]
    first_requests: list[dict[str, Any]]
    requests: EachRequest = field(default=lambda: iter(()), repr=False, compare=False)

    @property
    def request_count(self) -> int:
        """How many requests the sync would send."""
        return sum(self.calls.values())

    def each_request(self) -> Iterator[PlannedRequest]:
        """Every request, in the order the sync sends them, built as they are asked for."""
        return self.requests()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plan."""
        return {
            "cohort": {"name": self.cohort.name, "id": self.cohort.id},
            "mode": self.mode.value,
            "state_file": self.state_file,
            "snapshot_users": self.snapshot_users,
            "entered": self.entered,
            "left": self.left,
            "unchanged": self.unchanged,
            "list_id": self.list_id,
            "calls": self.calls,
            "requests": self.request_count,
            "first_requests": self.first_requests,
        }


@dataclass(frozen=True)
class _Direction:
    """The requests of one kind: which call, under what label, for which users."""

    call: str
    label: str
    ids: Sequence[str]
    member: bool


def plan_cohort(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> DryRun:
    """The requests a sync would send, sending nothing and writing nothing: a state file is
    only read (and not created)."""
    snapshot = read_snapshot(cohort)
    requests = Requests(destination, cohort, settings)
    list_id: str | None = None
    held = inventory.believed(settings.state_file, cohort_key(destination, cohort, settings))
    if held is None or settings.recreate_list:  # a new list starts empty
        diff = plan_diff_empty(snapshot)
    else:
        list_id = held[0] if settings.mode is SyncMode.list else None
        diff = diff_against(snapshot, held[1], full=settings.full)
    if settings.mode is SyncMode.list and settings.list_id is not None:
        if list_id != settings.list_id:
            diff = plan_diff_empty(snapshot)
        list_id = settings.list_id
    requests.check_templates(list_id)
    shown_list_id = list_id if list_id is not None else templates.Unresolved("{listId}")
    size = requests.batch_size(diff.entered, diff.left, shown_list_id)
    enter_call, leave_call = settings.calls()
    list_mode = settings.mode is SyncMode.list
    enter_label, leave_label = (
        (enter_call, leave_call) if list_mode else (f"{enter_call} (true)", f"{leave_call} (false)")
    )
    directions = [
        _Direction(enter_call, enter_label, diff.entered, True),
        _Direction(leave_call, leave_label, diff.left, False),
    ]
    create = list_mode and list_id is None
    if create and not destination.has_call(payloads.LIST_CREATE):
        raise InputError(
            f"destination {destination.name or destination.base_url!r} has no list-create "
            "call: give the id of an existing list with --list-id"
        )
    headers = destination.request_headers()

    creating = _Direction(payloads.LIST_CREATE, payloads.LIST_CREATE, (), True)
    kinds = ([creating] if create else []) + [d for d in directions if d.ids]

    def kind(direction: _Direction) -> Iterator[PlannedRequest]:
        call, member = direction.call, direction.member
        encode = requests.encoder(call, shown_list_id, member)
        method = destination.method_for(call)
        chunks = iter([()]) if direction is creating else chunked(direction.ids, size)
        for ids in chunks:
            url = destination.url(call, shown_list_id, requests.values(ids, shown_list_id, member))
            yield PlannedRequest(direction.label, method, url, headers, encode(ids), len(ids))

    def each() -> Iterator[PlannedRequest]:
        for direction in kinds:
            yield from kind(direction)

    calls = {d.label: 1 if d is creating else -(-len(d.ids) // size) for d in kinds}
    first = [_shown(destination, next(kind(d))) for d in kinds]
    return DryRun(
        cohort=cohort,
        mode=settings.mode,
        state_file=str(settings.state_file),
        snapshot_users=len(snapshot),
        entered=len(diff.entered),
        left=len(diff.left),
        unchanged=diff.unchanged,
        list_id=list_id,
        calls=calls,
        first_requests=first,
        requests=each,
    )


def plan_webhook_cohort(webhook: WebhookSync, cohort: CohortSpec, settings: SyncSettings) -> DryRun:
    """What a webhook sync would send, sending nothing; a state file that does not exist yet
    is not created."""
    destination = webhook.destination
    read, properties = read_with_properties(cohort.snapshot, cohort.column, webhook.properties)
    resent: list[str] = []
    if settings.state_file.exists():
        with SyncState.open(settings.state_file, webhook_cohort_key(destination, cohort)) as state:
            diff = plan_diff(read.ids, state, full=settings.full)
            resent = resent_users(webhook, settings, diff, read.ids, properties, state)
    else:
        diff = plan_diff_empty(read.ids)
    run = WebhookRun()
    size = settings.batch_size
    headers = destination.request_headers()
    kinds = [
        (label, ids, entering)
        for label, ids, entering in (
            (f"{CALL} (entering)", [*diff.entered, *resent], True),
            (f"{CALL} (leaving)", diff.left, False),
        )
        if ids
    ]

    def kind(ids: Sequence[str], label: str, entering: bool) -> Iterator[PlannedRequest]:
        shown = properties if entering else None
        for index, chunk in enumerate(chunked(ids, size)):
            body = message_content(
                destination, cohort, run, shown, chunk, entering=entering, index=index
            )
            yield PlannedRequest(label, "POST", destination.url, headers, body, len(chunk))

    def each() -> Iterator[PlannedRequest]:
        for label, ids, entering in kinds:
            yield from kind(ids, label, entering)

    return DryRun(
        cohort=cohort,
        mode=settings.mode,
        state_file=str(settings.state_file),
        snapshot_users=len(read.ids),
        entered=len(diff.entered),
        left=len(diff.left),
        unchanged=diff.unchanged,
        list_id=None,
        calls={label: -(-len(ids) // size) for label, ids, _ in kinds},
        first_requests=[
            _shown(destination, next(kind(ids, label, entering))) for label, ids, entering in kinds
        ],
        requests=each,
    )


def _shown(
    destination: Destination | WebhookDestination, request: PlannedRequest
) -> dict[str, Any]:
    """The request as ``-o json`` shows it: redacted, each id array cut to a few ids."""
    text = destination.scrub(request.body.decode("utf-8", errors="replace"))
    body: Any = text
    with contextlib.suppress(ValueError):
        body = abbreviate_json(json.loads(text), PAYLOAD_KEEP)
    return {
        "call": request.call,
        "method": request.method,
        "url": destination.scrub(redact_url(request.url)),
        "headers": destination.redacted_headers(request.headers),
        "users": request.users,
        "body": body,
    }


def diff_against(snapshot: Sequence[str], members: Sequence[str], *, full: bool) -> Diff:
    """:func:`plan_diff` against a list of believed members (read-only; for dry runs)."""
    snap = set(snapshot)
    held = set(members)
    left = [uid for uid in members if uid not in snap]
    entered = [uid for uid in dict.fromkeys(snapshot) if full or uid not in held]
    return Diff(entered=entered, left=left, unchanged=len(snap) - len(entered))


def plan_diff_empty(snapshot: Sequence[str]) -> Diff:
    """The diff against a destination that has nothing yet: everyone entered."""
    return Diff(entered=list(snapshot), left=[], unchanged=0)
