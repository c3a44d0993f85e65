"""``sync --dry-run``: what a sync would send, sending nothing and writing nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cohortctl.errors import InputError
from cohortctl.http.har import redact_url
from cohortctl.partner import payloads, templates
from cohortctl.partner.destination import Destination
from cohortctl.partner.mock import abbreviate_json
from cohortctl.sync import inventory
from cohortctl.sync.plan import CohortSpec
from cohortctl.sync.requests import Requests
from cohortctl.sync.run import cohort_key, read_snapshot
from cohortctl.sync.settings import SyncMode, SyncSettings
from cohortctl.sync.state import Diff

PAYLOAD_KEEP = 5  # ids shown per array in a dry run's first payloads


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
            "requests": sum(self.calls.values()),
            "first_requests": self.first_requests,
        }


def plan_cohort(destination: Destination, cohort: CohortSpec, settings: SyncSettings) -> DryRun:
    """The requests a sync would send (counts per call, the first payload of each), sending
    nothing and writing nothing: a state file is only read (and not created).
    """
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
    size = settings.users_per_request
    enter_call, leave_call = settings.calls()
    shown_list_id = list_id if list_id is not None else templates.Unresolved("{listId}")
    calls: dict[str, int] = {}
    first: list[dict[str, Any]] = []
    headers = destination.redacted_headers()

    def show(call: str, label: str, ids: Sequence[str], member: bool, count: int) -> None:
        if count == 0:
            return
        calls[label] = calls.get(label, 0) + count
        url_values = requests.values(ids, shown_list_id, member)
        url = destination.url(call, shown_list_id, url_values)
        body = json.loads(requests.encoder(call, shown_list_id, member)(ids))
        first.append(
            {
                "call": label,
                "method": destination.method_for(call),
                "url": destination.scrub(redact_url(url)),
                "headers": headers,
                "users": len(ids),
                "body": json.loads(
                    destination.scrub(json.dumps(abbreviate_json(body, PAYLOAD_KEEP)))
                ),
            }
        )

    if settings.mode is SyncMode.list and list_id is None:
        if not destination.has_call(payloads.LIST_CREATE):
            raise InputError(
                f"destination {destination.name or destination.base_url!r} has no list-create "
                "call: give the id of an existing list with --list-id"
            )
        show(payloads.LIST_CREATE, payloads.LIST_CREATE, (), True, 1)
    enter_label, leave_label = (
        (enter_call, leave_call)
        if settings.mode is SyncMode.list
        else (f"{enter_call} (true)", f"{leave_call} (false)")
    )
    show(enter_call, enter_label, diff.entered[:size], True, -(-len(diff.entered) // size))
    show(leave_call, leave_label, diff.left[:size], False, -(-len(diff.left) // size))
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
    )


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
