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

A case's request answered 429 is sent again after its ``Retry-After`` (at most
:data:`THROTTLE_RETRIES` times, each wait capped), as Amplitude would: a rate limit is not a
broken contract, and both attempts are in the case's requests.

Test data is recognisable: the list name and the trait key are
``[Amplitude] cohortctl-check: <run id>`` and generated users are ``cohortctl-check-<run id>-N``.
Whatever a case left behind (a case failed half-way, the burst added users, a broken endpoint
accepted what it should have refused) is removed by a cleanup step at the end, which honours
``Retry-After``. Amplitude's protocol has no "delete list" call, so the empty list remains.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from cohortctl import files
from cohortctl.errors import InputError
from cohortctl.http.outcomes import Outcome, describe_status
from cohortctl.http.text import body_excerpt
from cohortctl.partner import mock, payloads
from cohortctl.partner.conformance import reports
from cohortctl.partner.conformance.reports import CaseResult, Status
from cohortctl.partner.destination import AuthMode, Destination, is_sensitive_header, redact_url
from cohortctl.partner.destinations import REJECTS
from cohortctl.partner.judging import judge_list_create, unclassified_statuses, user_field
from cohortctl.partner.mock import FlowMode, MockSpec, PreparedRequest, Step
from cohortctl.partner.pacing import pacer_for
from cohortctl.partner.templates import Template
from cohortctl.retry import server_wait

Clock = Callable[[], float]
Sleep = Callable[[float], None]

SUITE = "cohortctl check"
COHORT_NAME = "cohortctl-check"
DEFAULT_BATCH_SIZE = mock.DEFAULT_BATCH_SIZE
MAX_BURST = 1000
BURST_CONCURRENCY = 32
BURST_BUDGET_S = 30.0  # no request of a burst starts later than this after the first
THROTTLE_RETRIES = 3  # a case's request is sent again after a 429, as Amplitude would
CLEANUP_ATTEMPTS = 3  # cleanup requests are also sent again after a 5xx or no answer
MAX_RETRY_WAIT_S = 10.0  # the longest Retry-After honoured
BODY_SHOWN = 200

LIST, PROPERTY, ENDPOINT = "list", "property", "endpoint"
ACCEPTED = "2xx (success)"


def new_run_id() -> str:
    """A short random hex id naming one run's test data."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class CheckOptions:
    """What to check: mode, test users, opt-in cases, payload templates."""

    mode: FlowMode = FlowMode.list
    run_id: str = field(default_factory=new_run_id)
    ids: tuple[str, ...] = ()  # existing users to use; empty: generate batch_size users
    batch_size: int = DEFAULT_BATCH_SIZE
    unknown_user: str | None = None
    burst: int | None = None
    expect_throttle: bool = False
    max_latency_ms: float | None = None
    templates: Mapping[str, Template] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    list_id: str | None = None  # an existing list: no list-create is sent
    rejects: Mapping[str, int | None] = field(default_factory=lambda: dict(REJECTS))

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.run_id or not self.run_id.isalnum():
            raise InputError(f"run id must be letters and digits, got {self.run_id!r}")
        if self.burst is not None and not 1 <= self.burst <= MAX_BURST:
            raise InputError(f"--burst must be between 1 and {MAX_BURST}, got {self.burst}")
        if self.expect_throttle and self.burst is None:
            raise InputError("--expect-throttle needs --burst N (how many requests to send)")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise InputError(f"--max-latency-ms must be more than 0, got {self.max_latency_ms}")
        if self.unknown_user is not None:
            if not self.unknown_user.strip():
                raise InputError("--unknown-user must not be empty")
            if self.unknown_user in self.ids:
                raise InputError("--unknown-user must not be one of the test users (--id)")
        unknown = sorted(set(self.templates) - set(payloads.CALLS))
        if unknown:
            raise InputError(f"payload templates for unknown call(s): {', '.join(unknown)}")

    @property
    def label(self) -> str:
        """The list name and trait key of this run: ``[Amplitude] cohortctl-check: <run id>``."""
        return payloads.cohort_label(COHORT_NAME, self.run_id)

    @property
    def users(self) -> tuple[str, ...]:
        """The test users: the given ids, or ``cohortctl-check-<run id>-1..batch_size``."""
        if self.ids:
            return self.ids
        return tuple(f"{COHORT_NAME}-{self.run_id}-{n}" for n in range(1, self.batch_size + 1))

    def spec(self) -> MockSpec:
        """The :class:`MockSpec` the requests are prepared from (cohort = this run)."""
        return MockSpec(
            cohort_name=COHORT_NAME,
            cohort_id=self.run_id,
            ids=self.users,
            batch_size=self.batch_size,
            templates=self.templates,
            variables=self.variables,
            list_id=self.list_id,
        )


@dataclass
class CheckRun:
    """A finished run: its cases, the list it created and what the cleanup did."""

    run_id: str
    target: str
    mode: str
    label: str
    users: int
    list_id: str | None = None
    cases: list[CaseResult] = field(default_factory=list)
    cleanup: list[dict[str, Any]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unclassified: list[int] = field(default_factory=list)  # non-2xx met without a classification
    list_given: bool = False

    @property
    def passed(self) -> bool:
        """True when no case failed (skipped cases do not fail a run)."""
        return reports.totals(self.cases).failed == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: run facts, totals, every case with its requests, the cleanup."""
        counts = reports.totals(self.cases)
        return {
            "suite": SUITE,
            "run_id": self.run_id,
            "target": self.target,
            "mode": self.mode,
            "label": self.label,
            "users": self.users,
            "list_id": self.list_id,
            "ok": self.passed,
            "totals": {
                "tests": counts.tests,
                "passed": counts.passed,
                "failed": counts.failed,
                "skipped": counts.skipped,
            },
            "cases": [case.to_dict() for case in self.cases],
            "warnings": self.warnings,
            "unclassified": self.unclassified,
            "cleanup": {"requests": self.cleanup, "leftovers": self.leftovers},
        }

    def test_data_note(self) -> str:
        """What test data remains after the run, for the reports."""
        note = f"test data: {self.label!r}"
        if self.list_id is not None and self.list_given:
            note += f"; the test users were removed from the given list {self.list_id}"
        elif self.list_id is not None:
            note += (
                f"; list {self.list_id} is left empty (Amplitude's protocol has no delete-list "
                "call)"
            )
        if self.leftovers:
            note += "; NOT cleaned up: " + "; ".join(self.leftovers)
        return note


# --- judging answers ---------------------------------------------------------------------------


def usable_retry_after(value: str | None) -> bool:
    """True for a ``Retry-After`` a client can act on: delay-seconds or an HTTP date."""
    if value is None or not value.strip():
        return False
    text = value.strip()
    if text.isdigit():
        return True
    try:
        parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def _actual(outcome: Outcome) -> str:
    if outcome.status is None:
        return outcome.error or "no answer"
    return f"{outcome.status} {outcome.meaning}"


def _why(outcome: Outcome) -> str:
    if outcome.status is None:
        return outcome.meaning
    if outcome.body.strip():
        return f"body: {body_excerpt(outcome.body, BODY_SHOWN)}"
    return "empty body"


def request_record(outcome: Outcome) -> dict[str, Any]:
    """One request of a case as the JSON report shows it (the URL already redacted)."""
    record: dict[str, Any] = {
        "call": outcome.call,
        "method": outcome.method,
        "url": outcome.url,
        "status": outcome.status,
        "latency_ms": outcome.latency_ms,
    }
    if outcome.retry_after is not None:
        record["retry_after"] = outcome.retry_after
    if outcome.error is not None:
        record["error"] = outcome.error
    return record


def _expected_status(status: int, meaning: str | None = None) -> str:
    return f"{status} {meaning or describe_status(status)}"


# --- the suite ---------------------------------------------------------------------------------


@dataclass
class _Sent:
    """A request of the run and the users whose state it changes when accepted."""

    request: PreparedRequest
    outcome: Outcome
    ids: tuple[str, ...]
    tracked: bool  # False: sent to a list that is not the run's (unknown list)
    throttled: list[Outcome] = field(default_factory=list)  # 429s before ``outcome``

    def records(self) -> list[dict[str, Any]]:
        """Every attempt, the throttled ones first."""
        return [request_record(o) for o in (*self.throttled, self.outcome)]

    def actual(self) -> str:
        """What came back in the end, and how often the endpoint throttled before."""
        text = _actual(self.outcome)
        if self.throttled:
            text += f" (after {len(self.throttled)} × 429)"
        return text


class Suite:
    """Runs the cases of one :class:`CheckOptions` against one destination, in order."""

    def __init__(
        self,
        client: httpx.Client,
        destination: Destination,
        options: CheckOptions,
        *,
        clock: Clock = time.perf_counter,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.client = client
        self.destination = destination
        self.options = options
        self.spec = options.spec()
        self.clock = clock
        self.sleep = sleep
        self.users = options.users
        self.list_id: str | None = None
        self.in_list: set[str] = set()  # users the run's list may hold
        self.trait_set: set[str] = set()  # users whose trait may be true
        self.accepted_outcomes: list[Outcome] = []
        self.met: list[Outcome] = []  # every answer, for the statuses no classification covers
        self.pacer = pacer_for(destination.rate_limit)  # not for the burst: it tests throttling
        self.run = CheckRun(
            run_id=options.run_id,
            target=destination.scrub(redact_url(destination.base_url)),
            mode=options.mode.value,
            label=options.label,
            users=len(self.users),
        )

    # --- sending --------------------------------------------------------------------------------

    def _prepare(
        self,
        call: str,
        ids: Sequence[str],
        *,
        member: bool = True,
        destination: Destination | None = None,
        list_id: str | None = None,
    ) -> list[PreparedRequest]:
        step = Step(call, tuple(ids), member)
        target_list = list_id if list_id is not None else self.list_id
        return mock.prepare(destination or self.destination, step, self.spec, target_list)

    def _send(self, request: PreparedRequest, ids: Sequence[str], *, tracked: bool = True) -> _Sent:
        """Send once, and again after a 429 as Amplitude would (Retry-After, bounded)."""
        throttled: list[Outcome] = []
        while True:
            if self.pacer is not None:
                self.sleep(self.pacer.reserve())
            outcome = mock.send(self.client, self.destination, request, clock=self.clock)
            if outcome.status != 429 or len(throttled) >= THROTTLE_RETRIES:
                break
            throttled.append(outcome)
            self.sleep(_retry_wait(outcome, len(throttled)))
        sent = _Sent(request, outcome, tuple(ids), tracked, throttled)
        self.met += [*throttled, outcome]
        self._track(sent)
        return sent

    def _track(self, sent: _Sent) -> None:
        if not sent.tracked or not sent.outcome.ok:
            return
        call, ids = sent.request.call, set(sent.ids)
        if call == payloads.LIST_ADD:
            self.in_list |= ids
        elif call == payloads.LIST_REMOVE:
            self.in_list -= ids
        elif call in (payloads.IDENTIFY, payloads.IDENTIFY_BATCH):
            if sent.request.member:
                self.trait_set |= ids
            else:
                self.trait_set -= ids

    def _add(self, case: CaseResult) -> CaseResult:
        self.run.cases.append(case)
        return case

    def _skip(self, name: str, group: str, expected: str, reason: str) -> CaseResult:
        return self._add(CaseResult(name, group, "skip", expected, "skipped", reason))

    # --- case shapes ----------------------------------------------------------------------------

    def _accepted(
        self, name: str, group: str, call: str, ids: Sequence[str], *, member: bool = True
    ) -> tuple[CaseResult, list[_Sent]]:
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
            status, actual = "fail", _actual(bad)
            detail = f"{_why(bad)}; the endpoint must accept every call Amplitude sends"
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
            result, actual = "fail", _actual(bad)
            detail = _why(bad)
            if bad.ok:
                detail = f"{why}; {detail}"
        case = CaseResult(
            name,
            group,
            result,
            _expected_status(status, meaning),
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
            shown = _expected_status(expected or 401, self._meaning(expected or 401))
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
                _expected_status(missing_status),
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
        return user_field(call, self.spec.templates.get(call))

    def _meaning(self, status: int) -> str:
        entry = next((e for e in self.destination.errors if e.status == status), None)
        return entry.reason if entry is not None else describe_status(status)

    def _unknown_user(self, call: str, group: str) -> None:
        name = f"{call} rejects an unknown user"
        unknown = self.options.unknown_user
        if unknown is None:
            expected = _expected_status(404, "invalid user id")
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
                ("list-add rejects a wrong api key", _expected_status(401)),
                ("list-add rejects missing credentials", _expected_status(401)),
                ("list-add rejects malformed JSON", _expected_status(400)),
                (f"list-add rejects a body without {field_name}", _expected_status(400)),
            ):
                self._skip(name, LIST, expected, needs)
            self._unknown_list()
            expected = _expected_status(404, "invalid user id")
            self._skip("list-add rejects an unknown user", LIST, expected, needs)
            self._skip("list-remove accepted", LIST, ACCEPTED, needs)
            return
        self._accepted("list-add accepted", LIST, payloads.LIST_ADD, users)
        self._rejections(payloads.LIST_ADD, LIST, users)
        self._unknown_list()
        self._unknown_user(payloads.LIST_ADD, LIST)
        extra = sorted(self.in_list - set(users))
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
            detail = f"{_why(outcome)}; without a list id the list cases cannot run"
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
            self._skip(name, LIST, _expected_status(expected, "unknown list"), reason)
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
        extra = sorted(self.trait_set - set(users))
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
        sent = self._burst(request, one, count)
        case = _judge_burst(sent, count, expect_throttle=self.options.expect_throttle)
        case.expected = expected
        case.duration_s = self.clock() - started
        self._add(case)

    def _burst(self, request: PreparedRequest, ids: Sequence[str], count: int) -> list[_Sent]:
        deadline = self.clock() + BURST_BUDGET_S

        def one(_: int) -> Outcome | None:
            if self.clock() > deadline:
                return None
            return mock.send(self.client, self.destination, request, clock=self.clock)

        with ThreadPoolExecutor(min(count, BURST_CONCURRENCY), "cohortctl-burst") as pool:
            outcomes = list(pool.map(one, range(count)))
        sent = [_Sent(request, o, tuple(ids), True) for o in outcomes if o is not None]
        self.met += [s.outcome for s in sent]
        for item in sent:
            self._track(item)
        return sent

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

    # --- cleanup --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove whatever test data the run may have left (honouring Retry-After)."""
        if self.in_list and self.list_id is not None:
            ids = sorted(self.in_list)
            ok = self._patiently(payloads.LIST_REMOVE, ids, member=True)
            if not ok:
                self.run.leftovers.append(f"{len(ids)} user(s) in list {self.list_id}")
        if self.trait_set:
            ids = sorted(self.trait_set)
            call = (
                payloads.IDENTIFY_BATCH
                if self.destination.has_call(payloads.IDENTIFY_BATCH)
                else payloads.IDENTIFY
            )
            ok = self._patiently(call, ids, member=False)
            if not ok:
                self.run.leftovers.append(f"trait {self.run.label!r} true on {len(ids)} user(s)")

    def _patiently(self, call: str, ids: Sequence[str], *, member: bool) -> bool:
        requests = self._prepare(call, ids, member=member)
        all_ok = True
        for request in requests:
            for attempt in range(1, CLEANUP_ATTEMPTS + 1):
                sent = self._send(request, request.user_ids)
                self.run.cleanup += sent.records()
                if sent.outcome.ok:
                    break
                retryable = sent.outcome.status is None or sent.outcome.status >= 500
                if not retryable or attempt == CLEANUP_ATTEMPTS:
                    all_ok = False
                    break
                self.sleep(_retry_wait(sent.outcome, attempt))
        return all_ok

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
            self.cleanup()
        if self.destination.errors:
            self.run.unclassified = unclassified_statuses(self.destination, self.met)
        return self.run


def _retry_wait(outcome: Outcome, attempt: int) -> float:
    """Seconds to wait before retry ``attempt``: Retry-After or X-Ratelimit-Reset (capped),
    else 1, 2, 4 s."""
    asked = server_wait(outcome.retry_after, outcome.extra.get("x_ratelimit_reset"))
    if asked is not None:
        return min(asked, MAX_RETRY_WAIT_S)
    return min(float(2 ** (attempt - 1)), MAX_RETRY_WAIT_S)


def usable_throttle(outcome: Outcome) -> bool:
    """True when a 429 says when to come back: Retry-After or X-Ratelimit-Reset."""
    if usable_retry_after(outcome.retry_after):
        return True
    reset = outcome.extra.get("x_ratelimit_reset")
    return isinstance(reset, str) and reset.strip().isdigit()


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


def _judge_burst(sent: Sequence[_Sent], count: int, *, expect_throttle: bool) -> CaseResult:
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
            f"{len(other)} answer(s) neither 2xx nor 429 (first: {_actual(first)}); "
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
    return Suite(client, destination, options, clock=clock, sleep=sleep).execute()


# --- reports -----------------------------------------------------------------------------------


def junit_report(run: CheckRun) -> str:
    """The run as JUnit XML: one test case per case, run id and target as properties."""
    properties = {
        "run_id": run.run_id,
        "target": run.target,
        "mode": run.mode,
        "label": run.label,
        "test_data": run.test_data_note(),
    }
    if run.list_id is not None:
        properties["list_id"] = run.list_id
    return reports.junit_xml(SUITE, run.cases, properties=properties)


def markdown_report(run: CheckRun) -> str:
    """The run as a GitHub step summary: verdict, one row per case, the test-data note."""
    text = reports.markdown_summary(
        f"{SUITE} · run {run.run_id} · mode {run.mode}", run.cases, target=run.target
    )
    return text + f"\n{run.test_data_note()}\n"


def check_writable(path: Path, what: str) -> None:
    """InputError before anything is sent when a report file cannot be written there."""
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: the directory {parent} does not exist")


def write_text(path: Path, text: str, *, append: bool = False, what: str = "report") -> None:
    """Write (or append) a report whole or not at all; FileWriteError naming the file."""
    if append:
        files.append_text(path, text, what=what)
    else:
        files.write_text_atomically(path, text, what=what)


def case_rows(cases: Iterable[CaseResult]) -> list[tuple[str, str, str, str]]:
    """Table rows for people: case, result, expected, actual (with why)."""
    rows: list[tuple[str, str, str, str]] = []
    for case in cases:
        actual = case.actual if not case.detail else f"{case.actual} — {case.detail}"
        rows.append((case.name, case.status, case.expected, actual))
    return rows
