"""Fire Amplitude's exact cohort-sync calls at a partner destination and report each answer.

``mock`` shows what an endpoint answers, so every request is sent once (no retries), and an
answer of any kind, including no answer at all, is a result row (:class:`Outcome`), not an
error. The bodies come from :mod:`cohortctl.partner.payloads` unless a payload template is given.

A flow is a list of :class:`Step` s; :func:`flow_steps` builds them:

- ``list``: list-create, list-add (every id), list-remove (the first id);
- ``property``: identify true then false (the first id), identify-batch true (every id) then
  false (the first id);
- ``both``: list, then property.

Either way every id ends in the cohort except the first, which entered and left. A flow stops
after a list-create that yields no list id and marks the remaining requests skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx

from cohortctl.errors import CheckFailed, InputError
from cohortctl.http.har import redact_url
from cohortctl.http.once import BODY_KEEP, Clock, send_once
from cohortctl.http.outcomes import (
    Outcome,
    describe_status,
    names_unknown_list,
)
from cohortctl.http.redirects import redirect_note
from cohortctl.ids import chunked
from cohortctl.partner import payloads, templates
from cohortctl.partner.classify import Reply
from cohortctl.partner.destination import Destination
from cohortctl.partner.pacing import pacer_for
from cohortctl.partner.templates import Template

DEFAULT_COHORT_NAME = "cohortctl mock cohort"
DEFAULT_COHORT_ID = "cohortctl_mock_1"
MOCK_USERS = ("mock-user-1", "mock-user-2", "mock-user-3")
DEFAULT_BATCH_SIZE = 1000  # Amplitude's default (seed 002)
SKIPPED = "skipped"


class FlowMode(str, Enum):
    """``mock flow --mode``: list-based sync, property-based sync, or both."""

    list = "list"
    property = "property"
    both = "both"
    webhook = "webhook"


@dataclass(frozen=True)
class MockSpec:
    """What to send: the cohort, the users, the trait value, templates and expectations."""

    cohort_name: str = DEFAULT_COHORT_NAME
    cohort_id: str = DEFAULT_COHORT_ID
    ids: tuple[str, ...] = MOCK_USERS
    batch_size: int = DEFAULT_BATCH_SIZE
    member: bool = True
    list_id: str | None = None
    templates: Mapping[str, Template] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    expect: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.ids:
            raise InputError("no user ids to send: give --id or --ids FILE")
        if not self.cohort_name.strip() or not self.cohort_id.strip():
            raise InputError("--cohort-name and --cohort-id must not be empty")
        if self.expect is not None and not 100 <= self.expect <= 599:
            raise InputError(f"--expect must be an HTTP status (100-599), got {self.expect}")
        unknown = sorted(set(self.templates) - set(payloads.CALLS))
        if unknown:
            raise InputError(f"payload templates for unknown call(s): {', '.join(unknown)}")


@dataclass(frozen=True)
class Step:
    """One call of a flow: which users it carries and the trait value for identify calls."""

    call: str
    ids: tuple[str, ...] = ()
    member: bool = True


@dataclass(frozen=True)
class PreparedRequest:
    """One request, exactly as it goes on the wire (headers still holding credentials)."""

    call: str
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    content: bytes
    body: Any
    ids: int
    member: bool | None = None
    user_ids: tuple[str, ...] = ()

    def shown(self, destination: Destination, *, abbreviate: int | None = None) -> dict[str, Any]:
        """The request as it may be printed: credentials redacted, big id arrays abbreviated."""
        body = self.body if abbreviate is None else abbreviate_json(self.body, abbreviate)
        return {
            "call": self.call,
            "method": self.method,
            "url": destination.scrub(redact_url(self.url)),
            "headers": destination.redacted_headers(self.headers),
            "body": json.loads(destination.scrub(json.dumps(body, ensure_ascii=False))),
            "ids": self.ids,
        }

    def row_extra(self) -> dict[str, Any]:
        """The facts its :class:`Outcome` row keeps: how many ids, and which way (identify)."""
        extra: dict[str, Any] = {"ids": self.ids}
        if self.member is not None:
            extra["member"] = self.member
        return extra

    def read_answer(
        self, destination: Destination, response: httpx.Response
    ) -> tuple[str, dict[str, Any]]:
        """What ``destination``'s answer means (:func:`answer_meaning`, a redirect's target),
        with its ``X-Ratelimit-Reset`` (when no Retry-After came) and ``success``."""
        status = response.status_code
        meaning = answer_meaning(destination, self, response)
        if 300 <= status < 400:
            meaning += "; " + destination.scrub(
                redirect_note(response.headers.get("Location"), self.url)
            )
        facts: dict[str, Any] = {}
        reset = response.headers.get("X-Ratelimit-Reset")
        if response.headers.get("Retry-After") is None and reset is not None:
            facts["x_ratelimit_reset"] = reset
        facts["success"] = destination.is_success(status)
        return meaning, facts


def abbreviate_json(data: Any, keep: int) -> Any:
    """``data`` with every array longer than ``keep`` cut, ending in a ``"… N more"`` marker."""
    if isinstance(data, list):
        items = [abbreviate_json(v, keep) for v in data[:keep]]
        if len(data) > keep:
            items.append(f"… {len(data) - keep} more (of {len(data)})")
        return items
    if isinstance(data, dict):
        return {k: abbreviate_json(v, keep) for k, v in data.items()}
    return data


def call_steps(call: str, spec: MockSpec) -> list[Step]:
    """The single step of ``mock CALL``: every id, the ``--member`` value."""
    if call not in payloads.CALLS:
        raise InputError(f"unknown call {call!r}: use {', '.join(payloads.CALLS)} or flow")
    ids = () if call == payloads.LIST_CREATE else spec.ids
    return [Step(call, ids, spec.member)]


def flow_steps(
    mode: FlowMode, spec: MockSpec, destination: Destination | None = None
) -> list[Step]:
    """The steps of ``mock flow`` (see the module docstring).

    With a given list id (``--list-id``) or a destination without list-create, no list is
    created; the calls a destination does not have are left out.
    """
    first = spec.ids[:1]
    steps: list[Step] = []
    if mode in (FlowMode.list, FlowMode.both):
        steps += [
            Step(payloads.LIST_CREATE),
            Step(payloads.LIST_ADD, spec.ids),
            Step(payloads.LIST_REMOVE, first),
        ]
        if spec.list_id is not None:
            steps = steps[1:]
    if mode in (FlowMode.property, FlowMode.both):
        steps += [
            Step(payloads.IDENTIFY, first, True),
            Step(payloads.IDENTIFY, first, False),
            Step(payloads.IDENTIFY_BATCH, spec.ids, True),
            Step(payloads.IDENTIFY_BATCH, first, False),
        ]
    if destination is not None:
        steps = [step for step in steps if destination.has_call(step.call)]
        if not steps:
            raise InputError(
                f"destination {destination.name or destination.base_url!r} has none of the "
                f"calls of --mode {mode.value}"
            )
    return steps


def _builder_body(call: str, ids: tuple[str, ...], spec: MockSpec, member: bool) -> Any:
    if call == payloads.LIST_CREATE:
        return payloads.list_create(spec.cohort_name, spec.cohort_id)
    if call in (payloads.LIST_ADD, payloads.LIST_REMOVE):
        return payloads.list_members(ids)
    if call == payloads.IDENTIFY:
        return payloads.identify(ids[0], spec.cohort_name, spec.cohort_id, member=member)
    return payloads.identify_batch(ids, spec.cohort_name, spec.cohort_id, member=member)


def prepare(
    destination: Destination, step: Step, spec: MockSpec, list_id: str | None
) -> list[PreparedRequest]:
    """The requests of one step: one per id for identify, batches of ids for the others."""
    if step.call == payloads.LIST_CREATE:
        groups: list[tuple[str, ...]] = [()]
    elif step.call == payloads.IDENTIFY:
        groups = [(uid,) for uid in step.ids]
    else:
        groups = [tuple(batch) for batch in chunked(step.ids, spec.batch_size)]
    requests: list[PreparedRequest] = []
    for ids in groups:
        requests += _fitted(destination, step, spec, list_id, ids)
    return requests


def _fitted(
    destination: Destination,
    step: Step,
    spec: MockSpec,
    list_id: str | None,
    ids: tuple[str, ...],
) -> list[PreparedRequest]:
    """One request for ``ids``, or halves of them until each body fits max_body_bytes."""
    request = _request(destination, step, spec, list_id, ids)
    limit = destination.max_body_bytes
    if limit is None or len(request.content) <= limit or len(ids) < 2:
        return [request]
    half = len(ids) // 2
    return [
        *_fitted(destination, step, spec, list_id, ids[:half]),
        *_fitted(destination, step, spec, list_id, ids[half:]),
    ]


def _request(
    destination: Destination,
    step: Step,
    spec: MockSpec,
    list_id: str | None,
    ids: tuple[str, ...],
) -> PreparedRequest:
    is_identify = step.call in (payloads.IDENTIFY, payloads.IDENTIFY_BATCH)
    template = spec.templates.get(step.call)
    values = templates.variables(
        ids=ids,
        cohort_name=spec.cohort_name,
        cohort_id=spec.cohort_id,
        list_id=list_id,
        member=step.member,
        custom=spec.variables,
    )
    if template is not None:
        text, body = template.render(values)
        content = text.encode("utf-8")
    else:
        body = _builder_body(step.call, ids, spec, step.member)
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return PreparedRequest(
        call=step.call,
        method=destination.method_for(step.call),
        url=destination.url(step.call, values=values),
        headers=destination.request_headers(),
        content=content,
        body=body,
        ids=len(ids),
        member=step.member if is_identify else None,
        user_ids=ids,
    )


def plan(destination: Destination, steps: Sequence[Step], spec: MockSpec) -> list[PreparedRequest]:
    """Every request of ``steps`` without sending anything (``--dry-run``; checks templates).

    A list id not known yet (a flow's, before list-create answers) shows as ``{listId}``.
    """
    _check_list_id(destination, steps, spec)
    return [req for step in steps for req in prepare(destination, step, spec, spec.list_id)]


def _check_list_id(destination: Destination, steps: Sequence[Step], spec: MockSpec) -> None:
    creates = any(step.call == payloads.LIST_CREATE for step in steps)
    if creates and destination.no_list_id:
        return
    for step in steps:
        if not destination.has_call(step.call):
            raise InputError(
                f"destination {destination.name!r} has no {step.call} call"
                if destination.name
                else f"the destination has no {step.call} call"
            )
    if creates or spec.list_id is not None:
        return
    for step in steps:
        uses = destination.needs_list_id(step.call) or (
            step.call in spec.templates
            and templates.VAR_LIST_ID in spec.templates[step.call].names()
        )
        if uses:
            hint = (
                "`cohortctl mock flow`"
                if destination.has_call(payloads.LIST_CREATE)
                else "the id of an existing list"
            )
            raise InputError(f"{step.call} needs a list id: give --list-id ({hint})")


def answer_meaning(
    destination: Destination, request: PreparedRequest, response: httpx.Response
) -> str:
    """The label of an answer: the destination's classification, a named shape, or the
    spec's status table (with the throttling header the receiver sent)."""
    status = response.status_code
    retry_after = response.headers.get("Retry-After")
    reset = response.headers.get("X-Ratelimit-Reset")
    if destination.is_success(status):
        return describe_status(status) if 200 <= status < 300 else "success (by the destination)"
    if 200 <= status < 300:
        shown = ", ".join(str(s) for s in destination.success)
        return f"{status} is not a success status of this destination (success: {shown})"
    reply = Reply(
        status,
        call=request.call,
        url=request.url,
        body=response.text[:BODY_KEEP],
        location=response.headers.get("Location"),
        content_type=response.headers.get("Content-Type"),
    )
    special = destination.meaning(reply)
    if special is None:
        if names_unknown_list(status, response.text[:BODY_KEEP]):
            return "unknown list: the partner does not know this list id"
        return describe_status(status, retry_after, reset)
    if status == 429 and (retry_after or reset):
        header = "Retry-After" if retry_after else "X-Ratelimit-Reset"
        special += f", {header}: {retry_after or reset}"
    return special


def skipped(destination: Destination, request: PreparedRequest, reason: str) -> Outcome:
    """The row of a request a flow did not send."""
    return Outcome(
        call=request.call,
        method=request.method,
        url=destination.scrub(redact_url(request.url)),
        status=None,
        meaning=f"{SKIPPED}: {reason}",
        latency_ms=0.0,
        error=SKIPPED,
        extra={"ids": request.ids, "passed": None, "skipped": True},
    )


def _capture_list_id(destination: Destination, outcome: Outcome, body: str) -> str | None:
    try:
        list_id = destination.find_list_id(body)
    except CheckFailed as exc:
        outcome.meaning = f"{outcome.meaning}; {exc.message}"
        outcome.extra["passed"] = False
        return None
    outcome.extra["list_id"] = list_id
    outcome.meaning = f"{outcome.meaning}; list id {list_id}"
    warning = destination.list_id_warning(body)
    if warning is not None:
        outcome.extra["warning"] = warning
        outcome.meaning += f" (warning: {warning})"
    return list_id


def run(
    client: httpx.Client,
    destination: Destination,
    steps: Sequence[Step],
    spec: MockSpec,
    *,
    clock: Clock = time.perf_counter,
) -> list[Outcome]:
    """Send every request of ``steps`` once, in order; one :class:`Outcome` per request.

    Every request is prepared first, so a bad template fails (exit 2) before anything is sent.
    """
    plan(destination, steps, spec)
    list_id = spec.list_id
    results: list[Outcome] = []
    stop_reason: str | None = None
    pacer = pacer_for(destination.rate_limit)
    for step in steps:
        for request in prepare(destination, step, spec, list_id):
            if stop_reason is not None:
                results.append(skipped(destination, request, stop_reason))
                continue
            if pacer is not None:
                time.sleep(pacer.reserve())
            outcome, text = send_once(client, destination, request, expect=spec.expect, clock=clock)
            results.append(outcome)
            if step.call != payloads.LIST_CREATE or destination.no_list_id:
                continue
            captured = None
            if outcome.extra.get("success"):
                captured = _capture_list_id(destination, outcome, text)
            if captured is None:
                stop_reason = "list-create gave no list id"
            list_id = captured
    return results


def passed(results: Sequence[Outcome]) -> bool:
    """True when every request sent got a success (or the ``--expect`` status) and was usable."""
    sent = [o for o in results if not o.extra.get("skipped")]
    return bool(sent) and all(o.extra.get("passed", o.ok) for o in sent)
