"""``cohortctl check``: a conformance suite for a partner endpoint, with reports CI can read.

One run sends Amplitude's cohort-sync calls (spec part B) to the endpoint, plus the calls it
must refuse, and judges every answer. Each case ends as a
:class:`~cohortctl.partner.conformance.reports.CaseResult`
(pass, fail or skip) saying what was expected and what came back.

Cases, in the order they run (``--mode list``, ``property`` or ``both``)::

    list       list-create accepted (list id captured), list-add accepted,
               list-add rejects: wrong api key 401, missing credentials 401, malformed JSON 400,
               a body without userIds 400, an unknown list 404, an unknown user 404 (opt-in),
               list-remove accepted (removes every test user the run added)
    property   identify true / false accepted, identify-batch true accepted,
               identify rejects: wrong api key 401, missing credentials 401, malformed JSON 400,
               a body without userId 400, an unknown user 404 (opt-in),
               identify-batch false accepted (un-sets every trait the run set)
    endpoint   throttling (opt-in, ``burst``), latency budget (opt-in, ``max_latency_ms``)

See :mod:`~cohortctl.partner.conformance.traffic` for how requests are sent (a 429 is sent
again after its ``Retry-After``) and how the test data is cleaned up, and
:mod:`~cohortctl.partner.conformance.run` for the options, the result and its reports.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx

from cohortctl.errors import InputError
from cohortctl.http.har import redact_url
from cohortctl.http.outcomes import Outcome, describe_status
from cohortctl.http.redact import is_sensitive_header
from cohortctl.partner import mock, payloads
from cohortctl.partner.conformance.answers import (
    ACCEPTED,
    answer_detail,
    describe_answer,
    expected_status,
    request_record,
    usable_throttle,
)
from cohortctl.partner.conformance.reports import CaseResult, Status
from cohortctl.partner.conformance.run import COHORT_NAME, CheckOptions, CheckRun
from cohortctl.partner.conformance.traffic import (
    BURST_BUDGET_S,
    THROTTLE_RETRIES,
    CheckTraffic,
    Clock,
    Sent,
    Sleep,
)
from cohortctl.partner.destination import AuthMode, Destination
from cohortctl.partner.destination_files import REJECTS
from cohortctl.partner.judging import judge_list_create, unclassified_statuses, user_field
from cohortctl.partner.mock import FlowMode, PreparedRequest

LIST, PROPERTY, ENDPOINT = "list", "property", "endpoint"


class Suite:
    """Runs the cases of one :class:`CheckOptions` in order, sending through ``traffic``."""

    def __init__(self, traffic: CheckTraffic, options: CheckOptions) -> None:
        self.traffic = traffic
        self.destination = traffic.destination
        self.options = options
        self.clock = traffic.clock
        self.users = options.users
        self.list_id: str | None = None
        self.accepted_outcomes: list[Outcome] = []
        destination = traffic.destination
        self.run = CheckRun(
            run_id=options.run_id,
            target=destination.scrub(redact_url(destination.base_url)),
            mode=options.mode.value,
            label=options.label,
            users=len(self.users),
        )

    def _prepare(
        self,
        call: str,
        ids: Sequence[str],
        *,
        member: bool = True,
        destination: Destination | None = None,
        list_id: str | None = None,
    ) -> list[PreparedRequest]:
        target_list = list_id if list_id is not None else self.list_id
        return self.traffic.prepare(call, ids, target_list, member=member, destination=destination)

    def _send(self, request: PreparedRequest, ids: Sequence[str], *, tracked: bool = True) -> Sent:
        return self.traffic.send(request, ids, tracked=tracked)

    def _add(self, case: CaseResult) -> CaseResult:
        self.run.cases.append(case)
        return case

    def _skip(self, name: str, group: str, expected: str, reason: str) -> CaseResult:
        return self._add(CaseResult(name, group, "skip", expected, "skipped", reason))

    # --- case shapes ----------------------------------------------------------------------------

    def _accepted(
        self, name: str, group: str, call: str, ids: Sequence[str], *, member: bool = True
    ) -> tuple[CaseResult, list[Sent]]:
        """Every request of the case must get a 2xx."""
        started = self.clock()
        requests = self._prepare(call, ids, member=member)
        sent = []
        for request in requests:
            sent.append(self._send(request, request.user_ids))
        self.accepted_outcomes += [s.outcome for s in sent]
        bad = next((s.outcome for s in sent if not s.outcome.ok), None)
        if bad is None:
            status: Status = "pass"
            actual = sent[0].actual()
            if len(sent) > 1:
                actual += f" ({len(sent)} requests)"
            detail = ""
        else:
            status, actual = "fail", describe_answer(bad)
            detail = f"{answer_detail(bad)}; the endpoint must accept every call Amplitude sends"
            if bad.status == 429:
                detail += f" (still 429 after {THROTTLE_RETRIES} retries)"
        case = CaseResult(
            name,
            group,
            status,
            ACCEPTED,
            actual,
            detail,
            self.clock() - started,
            [r for s in sent for r in s.records()],
        )
        return self._add(case), sent

    def _rejected(
        self,
        name: str,
        group: str,
        requests: Sequence[tuple[PreparedRequest, Sequence[str]]],
        *,
        status: int,
        why: str,
        meaning: str | None = None,
        tracked: bool = True,
    ) -> CaseResult:
        """Every request must get exactly ``status``; ``why`` says what accepting means."""
        started = self.clock()
        sent = [self._send(request, ids, tracked=tracked) for request, ids in requests]
        bad = next((s.outcome for s in sent if s.outcome.status != status), None)
        if bad is None:
            result: Status = "pass"
            actual, detail = sent[0].actual(), ""
        else:
            result, actual = "fail", describe_answer(bad)
            detail = answer_detail(bad)
            if bad.ok:
                detail = f"{why}; {detail}"
        case = CaseResult(
            name,
            group,
            result,
            expected_status(status, meaning),
            actual,
            detail,
            self.clock() - started,
            [r for s in sent for r in s.records()],
        )
        return self._add(case)

    # --- rejected requests, shared by both modes ------------------------------------------------

    def _expects(self, key: str) -> int | None:
        return self.options.rejects.get(key, REJECTS[key])

    def _rejections(self, call: str, group: str, ids: Sequence[str]) -> None:
        one = list(ids[:1])
        field_name = self.field_name(call)
        not_expected = "the destination file says the receiver has no such answer (rejects:)"
        credential_cases = (
            ("wrong_key", "rejects a wrong api key", _wrong_key, "with a wrong api key"),
            ("no_credentials", "rejects missing credentials", _no_credentials,
             "without credentials"),
        )  # fmt: skip
        for key, label, change, how in credential_cases:
            expected = self._expects(key)
            shown = expected_status(expected or 401, self._meaning(expected or 401))
            if not self.destination.sends_credentials:
                reason = "--auth none: the endpoint takes no credentials"
                self._skip(f"{call} {label}", group, shown, reason)
            elif expected is None:
                self._skip(f"{call} {label}", group, shown, not_expected)
            else:
                requests = self._prepare(call, one, destination=change(self.destination))
                self._rejected(
                    f"{call} {label}",
                    group,
                    [(r, one) for r in requests],
                    status=expected,
                    why=f"the endpoint accepted a request {how}",
                    meaning=self._meaning(expected),
                )
        valid = self._prepare(call, one)[0]
        malformed_status = self._expects("malformed")
        malformed = replace(valid, content=valid.content[: max(1, len(valid.content) // 2)])
        if malformed_status is None:
            self._skip(f"{call} rejects malformed JSON", group, "-", not_expected)
        else:
            self._rejected(
                f"{call} rejects malformed JSON",
                group,
                [(malformed, ())],
                status=malformed_status,
                why="the endpoint accepted a body that is not JSON",
                meaning=self._meaning(malformed_status),
            )
        name = f"{call} rejects a body without {field_name}"
        missing_status = self._expects("missing_field")
        target: Any = valid.body.get(field_name) if isinstance(valid.body, dict) else None
        if target is None:
            target = list(one) if call != payloads.IDENTIFY else one[0]
        stripped = _drop_field(valid.body, target)
        if missing_status is None:
            self._skip(name, group, "-", not_expected)
        elif stripped is None:
            self._skip(
                name,
                group,
                expected_status(missing_status),
                f"cannot tell which field of the {call} payload template carries the user ids",
            )
        else:
            content = json.dumps(stripped, ensure_ascii=False).encode()
            self._rejected(
                name,
                group,
                [(replace(valid, body=stripped, content=content), ())],
                status=missing_status,
                why=f"the endpoint accepted a body without {field_name}",
                meaning=self._meaning(missing_status),
            )

    def field_name(self, call: str) -> str:
        """The body field carrying the users, as the call's template names it."""
        return user_field(call, self.traffic.spec.templates.get(call))

    def _meaning(self, status: int) -> str:
        entry = next((e for e in self.destination.errors if e.status == status), None)
        return entry.reason if entry is not None else describe_status(status)

    def _unknown_user(self, call: str, group: str) -> None:
        name = f"{call} rejects an unknown user"
        unknown = self.options.unknown_user
        if unknown is None:
            expected = expected_status(404, "invalid user id")
            self._skip(name, group, expected, "pass --unknown-user ID to run")
            return
        requests = self._prepare(call, [unknown])
        self._rejected(
            name,
            group,
            [(r, [unknown]) for r in requests],
            status=404,
            why=f"the endpoint accepted the unknown user {unknown!r}",
            meaning="invalid user id",
        )

    # --- the modes ------------------------------------------------------------------------------

    def list_cases(self) -> None:
        """List-based sync: create, add, the rejections, remove."""
        self._list_create()
        users = self.users
        if self.list_id is None and not self.destination.no_list_id:
            needs = "needs the list id from list-create"
            field_name = self.field_name(payloads.LIST_ADD)
            for name, expected in (
                ("list-add accepted", ACCEPTED),
                ("list-add rejects a wrong api key", expected_status(401)),
                ("list-add rejects missing credentials", expected_status(401)),
                ("list-add rejects malformed JSON", expected_status(400)),
                (f"list-add rejects a body without {field_name}", expected_status(400)),
            ):
                self._skip(name, LIST, expected, needs)
            self._unknown_list()
            expected = expected_status(404, "invalid user id")
            self._skip("list-add rejects an unknown user", LIST, expected, needs)
            self._skip("list-remove accepted", LIST, ACCEPTED, needs)
            return
        self._accepted("list-add accepted", LIST, payloads.LIST_ADD, users)
        self._rejections(payloads.LIST_ADD, LIST, users)
        self._unknown_list()
        self._unknown_user(payloads.LIST_ADD, LIST)
        extra = sorted(self.traffic.in_list - set(users))
        self._accepted("list-remove accepted", LIST, payloads.LIST_REMOVE, [*users, *extra])

    def _list_create(self) -> None:
        name = "list-create accepted"
        if self.options.list_id is not None:
            self.list_id = self.run.list_id = self.options.list_id
            self.run.list_given = True
            self._skip(name, LIST, ACCEPTED, f"the list {self.list_id!r} is given (--list-id)")
            return
        if self.destination.no_list_id:
            self._accepted(name, LIST, payloads.LIST_CREATE, ())
            return
        path = self.destination.configured_list_id_path
        expected = f"2xx with a list id at {path}"
        started = self.clock()
        request = self._prepare(payloads.LIST_CREATE, ())[0]
        sent = self._send(request, ())
        outcome = sent.outcome
        self.accepted_outcomes.append(outcome)
        status: Status = "fail"
        actual, detail = sent.actual(), ""
        if not outcome.ok:
            detail = f"{answer_detail(outcome)}; without a list id the list cases cannot run"
        else:
            verdict = judge_list_create(self.destination, outcome.body)
            # An id under a fallback name still lets the run go on (and clean up).
            self.list_id = self.run.list_id = verdict.list_id
            if verdict.list_id is not None:
                actual += f", list id {verdict.list_id}"
            detail = verdict.detail
            if verdict.passed:
                status = "pass"
            for warning in verdict.warnings:
                self.run.warnings.append(f"{name}: {warning}")
                detail = f"warning: {warning}"
        records = sent.records()
        if self.list_id is not None:
            records[-1]["list_id"] = self.list_id
        self._add(
            CaseResult(
                name, LIST, status, expected, actual, detail, self.clock() - started, records
            )
        )

    def _unknown_list(self) -> None:
        name = "list-add rejects an unknown list"
        expected = self._expects("unknown_list")
        if expected is None:
            reason = "the destination file says the receiver has no such answer (rejects:)"
            self._skip(name, LIST, "-", reason)
            return
        if self.destination.no_list_id or not self.destination.needs_list_id(payloads.LIST_ADD):
            reason = "list-add names no list ($listId) at this destination"
            self._skip(name, LIST, expected_status(expected, "unknown list"), reason)
            return
        missing = f"{COHORT_NAME}-{self.options.run_id}-no-such-list"
        one = list(self.users[:1])
        requests = self._prepare(payloads.LIST_ADD, one, list_id=missing)
        self._rejected(
            name,
            LIST,
            [(r, one) for r in requests],
            status=expected,
            why=f"the endpoint accepted an add to the list {missing!r}, which does not exist",
            meaning="unknown list",
            tracked=False,
        )

    def property_cases(self) -> None:
        """Property-based sync: identify true/false, batch true, the rejections, batch false.

        A destination without identify (one batch endpoint) has its rejections checked on
        identify-batch; one without identify-batch is sent identify calls throughout.
        """
        users = self.users
        first = list(users[:1])
        single = self.destination.has_call(payloads.IDENTIFY)
        batch_call = (
            payloads.IDENTIFY_BATCH
            if self.destination.has_call(payloads.IDENTIFY_BATCH)
            else payloads.IDENTIFY
        )
        if single:
            self._accepted("identify true accepted", PROPERTY, payloads.IDENTIFY, first)
            self._accepted(
                "identify false accepted", PROPERTY, payloads.IDENTIFY, first, member=False
            )
        self._accepted(
            f"{batch_call} true accepted ({len(users)} users)",
            PROPERTY,
            batch_call,
            users,
            member=True,
        )
        rejected = payloads.IDENTIFY if single else batch_call
        self._rejections(rejected, PROPERTY, users)
        self._unknown_user(rejected, PROPERTY)
        extra = sorted(self.traffic.trait_set - set(users))
        self._accepted(
            f"{batch_call} false accepted",
            PROPERTY,
            batch_call,
            [*users, *extra],
            member=False,
        )

    # --- endpoint-wide cases --------------------------------------------------------------------

    def throttling(self) -> None:
        """``burst`` requests at once: 429s must carry a usable Retry-After (or must come)."""
        name = "throttling"
        if self.options.expect_throttle:
            expected = "at least one 429 with a usable Retry-After"
        else:
            expected = "2xx, or 429 with a usable Retry-After"
        count = self.options.burst
        if count is None:
            self._skip(name, ENDPOINT, expected, "pass --burst N to run")
            return
        one = list(self.users[:1])
        if self.list_id is not None:
            request = self._prepare(payloads.LIST_ADD, one)[0]
        elif self.options.mode is FlowMode.list:
            self._skip(name, ENDPOINT, expected, "list-add needs the list id from list-create")
            return
        else:
            call = (
                payloads.IDENTIFY
                if self.destination.has_call(payloads.IDENTIFY)
                else payloads.IDENTIFY_BATCH
            )
            request = self._prepare(call, one, member=True)[0]
        started = self.clock()
        sent = self.traffic.burst(request, one, count)
        case = judge_burst(sent, count, expect_throttle=self.options.expect_throttle)
        case.expected = expected
        case.duration_s = self.clock() - started
        self._add(case)

    def latency(self) -> None:
        """Every request of the accepted cases answered within ``max_latency_ms``."""
        budget = self.options.max_latency_ms
        name = "latency budget"
        if budget is None:
            self._skip(
                name,
                ENDPOINT,
                "each accepted call within a budget",
                "pass --max-latency-ms MS to run",
            )
            return
        expected = f"each accepted call answered within {budget:g} ms"
        answered = [o for o in self.accepted_outcomes if o.status is not None]
        if not answered:
            self._add(CaseResult(name, ENDPOINT, "fail", expected, "no accepted call was answered"))
            return
        slowest = max(answered, key=lambda o: o.latency_ms)
        over = [o for o in answered if o.latency_ms > budget]
        actual = f"slowest: {slowest.call} {slowest.latency_ms:.0f} ms"
        detail = ""
        if over:
            shown = ", ".join(f"{o.call} {o.latency_ms:.0f} ms" for o in over[:5])
            more = f" and {len(over) - 5} more" if len(over) > 5 else ""
            detail = f"{len(over)} of {len(answered)} over budget: {shown}{more}"
        status: Status = "fail" if over else "pass"
        self._add(
            CaseResult(
                name, ENDPOINT, status, expected, actual, detail, 0.0,
                [request_record(o) for o in answered],
            )
        )  # fmt: skip

    # --- the whole run --------------------------------------------------------------------------

    def execute(self) -> CheckRun:
        """Run every case of the mode, the endpoint cases, then the cleanup."""
        mode = self.options.mode
        try:
            if mode in (FlowMode.list, FlowMode.both):
                self.list_cases()
            if mode in (FlowMode.property, FlowMode.both):
                self.property_cases()
            self.latency()
            self.throttling()
        finally:
            self.traffic.clean_up(self.run)
        if self.destination.errors:
            self.run.unclassified = unclassified_statuses(self.destination, self.traffic.met)
        return self.run


def _wrong_key(destination: Destination) -> Destination:
    """``destination`` with every credential replaced by a wrong one."""
    wrong = f"cohortctl-check-wrong-key-{secrets.token_hex(4)}"
    headers = tuple(
        (name, wrong if is_sensitive_header(name) else value) for name, value in destination.headers
    )
    return replace(destination, api_key=wrong, headers=headers)


def _no_credentials(destination: Destination) -> Destination:
    """``destination`` sending no credentials at all."""
    headers = tuple(
        (name, value) for name, value in destination.headers if not is_sensitive_header(name)
    )
    return replace(destination, auth=AuthMode.none, api_key=None, secret=None, headers=headers)


def _drop_field(body: Any, value: Any) -> dict[str, Any] | None:
    """``body`` without its top-level field holding ``value`` (the users); None if none does."""
    if not isinstance(body, dict):
        return None
    for key, held in body.items():
        if held == value:
            return {k: v for k, v in body.items() if k != key}
    return None


def judge_burst(sent: Sequence[Sent], count: int, *, expect_throttle: bool) -> CaseResult:
    """The throttling case of a burst of ``count``: every 429 must say when to come back."""
    outcomes = [s.outcome for s in sent]
    statuses = Counter(
        o.status if o.status is not None else (o.error or "no answer") for o in outcomes
    )
    parts = [f"{n} × {key}" for key, n in sorted(statuses.items(), key=lambda kv: str(kv[0]))]
    actual = f"{len(outcomes)} sent: " + ", ".join(parts)
    if len(outcomes) < count:
        actual += f"; {count - len(outcomes)} not sent (time budget {BURST_BUDGET_S:g}s)"
    throttled = [o for o in outcomes if o.status == 429]
    unusable = [o for o in throttled if not usable_throttle(o)]
    other = [o for o in outcomes if not o.ok and o.status != 429]
    problems = []
    if other:
        first = other[0]
        problems.append(
            f"{len(other)} answer(s) neither 2xx nor 429 (first: {describe_answer(first)}); "
            "an endpoint under load must throttle with 429, not fail"
        )
    if unusable:
        shown = sorted({repr(o.retry_after) if o.retry_after else "none" for o in unusable})
        problems.append(
            f"{len(unusable)} 429(s) without a usable Retry-After or X-Ratelimit-Reset (got "
            f"{', '.join(shown[:3])}); a sender needs delay-seconds, an HTTP date or an epoch "
            "time to know when to retry"
        )
    if expect_throttle and not throttled:
        problems.append(f"no 429 in {len(outcomes)} requests: the endpoint did not throttle")
    if throttled and not unusable:
        retry = sorted({o.retry_after or "" for o in throttled if o.retry_after})
        resets = sorted({str(o.extra.get("x_ratelimit_reset")) for o in throttled
                         if not o.retry_after})  # fmt: skip
        if retry:
            actual += f"; Retry-After: {', '.join(retry[:3])}"
        if resets:
            actual += f"; X-Ratelimit-Reset: {', '.join(resets[:3])}"
    return CaseResult(
        "throttling",
        ENDPOINT,
        "fail" if problems else "pass",
        "",
        actual,
        "; ".join(problems),
        0.0,
        [request_record(o) for o in outcomes],
    )


def run_check(
    client: httpx.Client,
    destination: Destination,
    options: CheckOptions,
    *,
    clock: Clock = time.perf_counter,
    sleep: Sleep = time.sleep,
) -> CheckRun:
    """Run the suite against ``destination``; every template is checked before anything is sent.

    Never raises for what the endpoint answers (or fails to answer): that is a failed case.
    """
    spec = options.spec()
    if (
        options.mode in (FlowMode.list, FlowMode.both)
        and options.list_id is None
        and not destination.has_call(payloads.LIST_CREATE)
    ):
        raise InputError(
            f"destination {destination.name or destination.base_url!r} has no list-create "
            "call: give the id of an existing list with --list-id"
        )
    mock.plan(destination, mock.flow_steps(options.mode, spec, destination), spec)
    traffic = CheckTraffic(client, destination, spec, clock=clock, sleep=sleep)
    return Suite(traffic, options).execute()
