"""Plan and run an upload (or a membership change) of any size, within Amplitude's limits.

Amplitude takes at most 100,000 ids per request and 2,000,000 users per cohort. So:

- up to 100,000 ids: one ``upload`` request;
- more: ``upload`` the first 100,000, then ``membership ADD`` the rest in chunks of at most
  100,000 (``BY_NAME`` for user ids, ``BY_ID`` for Amplitude ids) on the cohort the upload
  answered with, strictly one request after the other (Amplitude allows 5 concurrent
  requests per project and may answer 429 to overlapping changes of one cohort);
- more than 2,000,000: refused before anything is sent.

``--validate-only`` (``skip_save``) exists only on the upload endpoint, so a validate-only run
of more than 100,000 ids sends *every* chunk as its own ``skip_save`` upload: every id is
checked and nothing is saved (no membership request is sent).

A :class:`Plan` is pure data: ``describe()`` is what ``--dry-run`` prints, ``execute()`` sends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cohortctl.customer.api import (
    ADD,
    AMPLITUDE,
    BY_AMP_ID,
    BY_ID,
    BY_NAME,
    BY_USER_ID,
    MAX_COHORT_SIZE,
    MAX_IDS_PER_REQUEST,
    MEMBERSHIP_PATH,
    OPERATIONS,
    UPLOAD_PATH,
    USER,
    membership_body,
    upload_body,
)
from cohortctl.customer.client import AmplitudeClient
from cohortctl.errors import CohortctlError, InputError
from cohortctl.ids import spans

if TYPE_CHECKING:
    from cohortctl.ids import IdFileStats

UPLOAD = "upload"
MEMBERSHIP = "membership"
ID_SAMPLE_SIZE = 5
PENDING_COHORT_ID = "<cohortId from the upload answer>"
REDACTED_AUTH = "Basic ***redacted***"


def upload_id_type(id_type: str) -> str:
    """``BY_USER_ID`` or ``BY_AMP_ID`` for cohortctl's ``user`` / ``amplitude``."""
    return {USER: BY_USER_ID, AMPLITUDE: BY_AMP_ID}[_id_type(id_type)]


def membership_id_type(id_type: str) -> str:
    """``BY_NAME`` (user ids) or ``BY_ID`` (Amplitude ids) for ``user`` / ``amplitude``."""
    return {USER: BY_NAME, AMPLITUDE: BY_ID}[_id_type(id_type)]


def _id_type(id_type: str) -> str:
    value = str(getattr(id_type, "value", id_type))
    if value not in (USER, AMPLITUDE):
        raise InputError(f"id type must be user or amplitude, got {value!r}")
    return value


@dataclass(frozen=True)
class UploadSpec:
    """Everything an upload says about the cohort, besides its ids."""

    name: str
    app_id: int
    owner: str
    published: bool = True
    existing_cohort_id: str | None = None
    strict_ids: bool = False
    validate_only: bool = False
    group_type: str | None = None


@dataclass(frozen=True)
class PlannedRequest:
    """One planned request: which endpoint, and which slice of the ids it carries."""

    call: str  # "upload", "membership ADD", "membership REMOVE"
    method: str
    path: str
    start: int
    end: int

    @property
    def count(self) -> int:
        """How many ids this request carries."""
        return self.end - self.start


@dataclass(frozen=True)
class UploadProgress:
    """Reported after each request: how far the run is."""

    done: int
    steps: int
    ids_sent: int
    ids_total: int
    call: str


@dataclass
class Plan:
    """The requests an upload or membership change will make, in order."""

    kind: str  # UPLOAD or MEMBERSHIP
    ids: Sequence[str]
    id_type: str
    steps: list[PlannedRequest]
    spec: UploadSpec | None = None
    cohort_id: str | None = None  # membership: the cohort to change
    operation: str = ADD
    strict_ids: bool = False
    group_type: str | None = None
    stats: IdFileStats | None = None

    def body(self, step: PlannedRequest, cohort_id: str | None) -> dict[str, Any]:
        """The exact JSON body of ``step``; membership steps need the cohort id."""
        ids = self.ids[step.start : step.end]
        if step.path == UPLOAD_PATH:
            assert self.spec is not None
            # UploadSpec's fields are upload_body's options, name for name.
            return upload_body(**vars(self.spec), id_type=upload_id_type(self.id_type), ids=ids)
        return membership_body(
            cohort_id or PENDING_COHORT_ID,
            ids,
            id_type=membership_id_type(self.id_type),
            operation=self.operation,
            strict_ids=self.strict_ids,
            group_type=self.group_type,
        )

    def describe(
        self, base_url: str, *, sample: int = ID_SAMPLE_SIZE, whole: bool = False
    ) -> list[dict[str, Any]]:
        """What ``--dry-run`` shows: method, URL, headers (auth redacted), the body (``whole``)
        or a summary of it."""
        known = self.cohort_id or (self.spec.existing_cohort_id if self.spec else None)
        described = []
        for number, step in enumerate(self.steps, 1):
            body = self.body(step, known)
            shown = body if whole else summarize_body(body, sample=sample)
            described.append(
                describe_request(number, step.call, step.method, base_url, step.path, shown)
            )
        return described


def describe_request(
    number: int, call: str, method: str, base_url: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """One request as a dry run shows it: JSON ``body``, Authorization redacted."""
    return {
        "request": number,
        "call": call,
        "method": method,
        "url": base_url.rstrip("/") + path,
        "headers": {"Authorization": REDACTED_AUTH, "Content-Type": "application/json"},
        "body": body,
    }


def summarize_body(body: dict[str, Any], *, sample: int = ID_SAMPLE_SIZE) -> dict[str, Any]:
    """A body with every id list replaced by its count and its first ``sample`` ids."""

    def ids_summary(ids: Sequence[str]) -> dict[str, Any]:
        return {"count": len(ids), "first": list(ids[:sample])}

    summary = {k: v for k, v in body.items() if k not in ("ids", "memberships")}
    if "ids" in body:
        summary["ids"] = ids_summary(body["ids"])
    if "memberships" in body:
        summary["memberships"] = [
            {**{k: v for k, v in m.items() if k != "ids"}, "ids": ids_summary(m["ids"])}
            for m in body["memberships"]
        ]
    return summary


def _check_size(ids: Sequence[str], max_size: int, what: str) -> None:
    if not ids:
        raise InputError(f"no ids to {what}: the file has no ids (Amplitude rejects an empty list)")
    if len(ids) > max_size:
        raise InputError(
            f"{len(ids):,} unique ids: Amplitude allows at most {max_size:,} users per cohort; "
            "nothing was sent",
            hint="split the file into several cohorts",
        )


def plan_upload(
    ids: Sequence[str],
    spec: UploadSpec,
    *,
    id_type: str = USER,
    stats: IdFileStats | None = None,
    chunk_size: int = MAX_IDS_PER_REQUEST,
    max_size: int = MAX_COHORT_SIZE,
) -> Plan:
    """Plan an upload of ``ids`` (unique, in file order); refuses empty and oversize lists."""
    _id_type(id_type)
    if not spec.name.strip():
        raise InputError("--name must not be empty")
    if not spec.owner.strip():
        raise InputError("the owner must not be empty")
    _check_size(ids, max_size, "upload")
    chunks = list(spans(len(ids), chunk_size))
    if spec.validate_only:
        steps = [PlannedRequest(UPLOAD, "POST", UPLOAD_PATH, a, b) for a, b in chunks]
    else:
        first, *rest = chunks
        steps = [PlannedRequest(UPLOAD, "POST", UPLOAD_PATH, *first)]
        steps += [
            PlannedRequest(f"{MEMBERSHIP} {ADD}", "POST", MEMBERSHIP_PATH, a, b) for a, b in rest
        ]
    return Plan(
        kind=UPLOAD,
        ids=ids,
        id_type=_id_type(id_type),
        steps=steps,
        spec=spec,
        strict_ids=spec.strict_ids,
        group_type=spec.group_type,
        stats=stats,
    )


def plan_membership(
    ids: Sequence[str],
    *,
    cohort_id: str,
    operation: str,
    id_type: str = USER,
    strict_ids: bool = False,
    group_type: str | None = None,
    stats: IdFileStats | None = None,
    chunk_size: int = MAX_IDS_PER_REQUEST,
    max_size: int = MAX_COHORT_SIZE,
) -> Plan:
    """Plan adding or removing ``ids`` on an existing cohort, in chunks of ``chunk_size``."""
    operation = operation.upper()
    if operation not in OPERATIONS:
        raise InputError(f"operation must be add or remove, got {operation.lower()!r}")
    if not str(cohort_id).strip():
        raise InputError("--cohort-id must not be empty")
    _check_size(ids, max_size, operation.lower())
    call = f"{MEMBERSHIP} {operation}"
    steps = [
        PlannedRequest(call, "POST", MEMBERSHIP_PATH, a, b)
        for a, b in spans(len(ids), chunk_size)
    ]
    return Plan(
        kind=MEMBERSHIP,
        ids=ids,
        id_type=_id_type(id_type),
        steps=steps,
        cohort_id=str(cohort_id).strip(),
        operation=operation,
        strict_ids=strict_ids,
        group_type=group_type,
        stats=stats,
    )


@dataclass
class RunResult:
    """What a run did, for the summary table and ``--output json``.

    ``matched`` / ``totals`` add up every request: an upload's ``metadata``, and for a
    membership request the ids it carried (totals) less those Amplitude skipped (matched).
    """

    kind: str
    operation: str | None
    cohort_id: str | None
    name: str | None
    size: int | None
    matched: int
    totals: int
    invalid_ids_sample: list[str]
    membership_skipped_ids: int
    skipped_ids_sample: list[str]
    ids: int
    validate_only: bool
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    stats: IdFileStats | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (without Amplitude's raw answers)."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("answers", "stats")}
        data["file"] = dataclasses.asdict(self.stats) if self.stats is not None else None
        return data


def execute(
    client: AmplitudeClient,
    plan: Plan,
    *,
    on_progress: Callable[[UploadProgress], None] | None = None,
) -> RunResult:
    """Send the plan's requests one after the other and add up what Amplitude answered.

    A failure part-way keeps its error class (and exit code) and gains a hint saying how
    many ids already went through and how to finish.
    """
    spec = plan.spec
    result = RunResult(
        kind=plan.kind,
        operation=None if plan.kind == UPLOAD else plan.operation,
        cohort_id=plan.cohort_id or (spec.existing_cohort_id if spec else None),
        name=spec.name if spec else None,
        size=None,
        matched=0,
        totals=0,
        invalid_ids_sample=[],
        membership_skipped_ids=0,
        skipped_ids_sample=[],
        ids=len(plan.ids),
        validate_only=bool(spec and spec.validate_only),
        stats=plan.stats,
    )
    sent = 0
    for number, step in enumerate(plan.steps, 1):
        body = plan.body(step, result.cohort_id)
        try:
            if step.path == UPLOAD_PATH:
                _apply_upload(client, body, step, result)
            else:
                _apply_membership(client, body, step, result)
        except CohortctlError as error:
            error.hint = _join(error.hint, _partial_hint(plan, result, sent))
            raise
        sent += step.count
        if on_progress:
            on_progress(UploadProgress(number, len(plan.steps), sent, len(plan.ids), step.call))
    return result


def _apply_upload(
    client: AmplitudeClient, body: dict[str, Any], step: PlannedRequest, result: RunResult
) -> None:
    answer = client.upload(body)
    result.answers.append(answer.raw)
    result.requests.append({"call": step.call, "ids": step.count, "cohort_id": answer.cohort_id})
    if answer.cohort_id:
        result.cohort_id = answer.cohort_id
    result.matched += answer.matched if answer.matched is not None else 0
    result.totals += answer.totals if answer.totals is not None else step.count
    room = ID_SAMPLE_SIZE * 4 - len(result.invalid_ids_sample)
    result.invalid_ids_sample.extend(answer.invalid_ids_sample[: max(room, 0)])
    if answer.cohort.get("name"):
        result.name = str(answer.cohort["name"])
    if answer.size is not None:
        result.size = answer.size


def _apply_membership(
    client: AmplitudeClient, body: dict[str, Any], step: PlannedRequest, result: RunResult
) -> None:
    answer = client.membership(body)
    result.answers.append(answer.raw)
    skipped = len(answer.skipped_ids)
    result.requests.append(
        {"call": step.call, "ids": step.count, "cohort_id": answer.cohort_id, "skipped": skipped}
    )
    result.membership_skipped_ids += skipped
    room = ID_SAMPLE_SIZE * 4 - len(result.skipped_ids_sample)
    result.skipped_ids_sample.extend(answer.skipped_ids[: max(room, 0)])
    result.totals += step.count
    result.matched += step.count - skipped
    # After an upload, the cohort holds the uploaded ids; each ADD grows it by what matched.
    if result.kind == UPLOAD and result.size is not None:
        result.size += step.count - skipped


def _partial_hint(plan: Plan, result: RunResult, sent: int) -> str | None:
    if sent == 0:
        return None
    total = len(plan.ids)
    if plan.kind == UPLOAD and plan.spec and plan.spec.validate_only:
        return f"the first {sent:,} of {total:,} ids were validated before this failure"
    if plan.kind == UPLOAD:
        return (
            f"cohort {result.cohort_id} already holds the first {sent:,} of {total:,} ids; "
            f"run again with --existing-cohort-id {result.cohort_id} to replace its contents "
            "with the whole file"
        )
    return (
        f"the first {sent:,} of {total:,} ids were already applied to cohort {plan.cohort_id}; "
        "running the same command again is safe"
    )


def _join(first: str | None, second: str | None) -> str | None:
    parts = [p for p in (first, second) if p]
    return "; ".join(parts) if parts else None
