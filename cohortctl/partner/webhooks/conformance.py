"""``check --mode webhook``: the conformance cases of a Cohort Webhook endpoint (spec part C).

Cases, in the order they run::

    webhook    an entering batch accepted (2xx), the same message sent again accepted again
               (a retry; the endpoint de-duplicates by message_id), a body that is not JSON
               (same headers) rejected with a 4xx, a message without each --require-header
               rejected with 401/403, a leaving batch accepted (removes the test users),
               every accepted message answered within the latency budget (default 2000 ms,
               Amplitude's guidance: slower answers time out and are retried)

Test data is recognisable: the cohort is ``cohortctl-check`` with id
``cohortctl-check-<run id>`` and generated users are ``cohortctl-check-<run id>-N``; the
leaving batch removes them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from cohortctl.http.har import redact_url
from cohortctl.http.once import send_once
from cohortctl.http.outcomes import Outcome
from cohortctl.partner.conformance.answers import answer_detail, describe_answer, request_record
from cohortctl.partner.conformance.reports import CaseResult
from cohortctl.partner.conformance.run import COHORT_NAME, CheckOptions, CheckRun
from cohortctl.partner.webhooks.messages import WebhookRequest, plan_messages
from cohortctl.partner.webhooks.payload import WebhookDestination, WebhookRun

Clock = Callable[[], float]

WEBHOOK = "webhook"
DEFAULT_MAX_LATENCY_MS = 2000.0  # Amplitude: answer within 1 to 2 seconds
ACCEPTED = "2xx (success)"
NOT_JSON = b"this is not JSON {"


@dataclass(frozen=True)
class WebhookCheckOptions:
    """What webhook mode adds to the suite options: the headers a message must carry."""

    require_headers: tuple[str, ...] = ()
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS
    properties: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)


@dataclass
class _WebhookSuite:
    """One run of the webhook cases: what was sent, the cases and the accepted answers."""

    client: httpx.Client
    destination: WebhookDestination
    options: CheckOptions
    webhook: WebhookCheckOptions
    clock: Clock
    cases: list[CaseResult] = field(default_factory=list)
    accepted: list[Outcome] = field(default_factory=list)

    @property
    def cohort_id(self) -> str:
        return f"{COHORT_NAME}-{self.options.run_id}"

    def messages(self, *, entering: bool, run: WebhookRun) -> list[WebhookRequest]:
        users = [(uid, self.webhook.properties.get(uid)) for uid in self.options.users]
        return plan_messages(
            self.destination,
            COHORT_NAME,
            self.cohort_id,
            users,
            in_cohort=entering,
            batch_size=len(users),
            run=run,
        )

    def send(
        self,
        request: WebhookRequest,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Outcome:
        if headers is not None:
            request = replace(request, headers=dict(headers))
        if content is not None:
            request = replace(request, content=content)
        outcome, _ = send_once(self.client, self.destination, request, clock=self.clock)
        if outcome.ok:
            self.accepted.append(outcome)
        return outcome

    def case(
        self,
        name: str,
        expected: str,
        outcomes: Sequence[Outcome],
        passed: bool,
        started: float,
    ) -> None:
        last = outcomes[-1]
        self.cases.append(
            CaseResult(
                name=name,
                group=WEBHOOK,
                status="pass" if passed else "fail",
                expected=expected,
                actual=describe_answer(last),
                detail="" if passed else answer_detail(last),
                duration_s=round(self.clock() - started, 3),
                requests=[request_record(o) for o in outcomes],
            )
        )

    def execute(self) -> list[CaseResult]:
        run = WebhookRun()
        entering = self.messages(entering=True, run=run)[0]
        started = self.clock()
        first = self.send(entering)
        self.case("webhook: entering batch accepted", ACCEPTED, [first], first.ok, started)

        started = self.clock()
        again = self.send(entering)
        self.case(
            "webhook: the same message twice accepted both times",
            f"{ACCEPTED} twice",
            [first, again],
            first.ok and again.ok,
            started,
        )

        started = self.clock()
        bad = self.send(entering, content=NOT_JSON)
        rejected = bad.status is not None and 400 <= bad.status < 500
        self.case(
            "webhook: a body that is not JSON rejected",
            "4xx (client error)",
            [bad],
            rejected,
            started,
        )

        for name in self.webhook.require_headers:
            started = self.clock()
            headers = {k: v for k, v in entering.headers.items() if k.lower() != name.lower()}
            missing = self.send(entering, headers=headers)
            self.case(
                f"webhook: a message without {name} rejected",
                "401 or 403 (unauthorized / forbidden)",
                [missing],
                missing.status in (401, 403),
                started,
            )

        leaving = self.messages(entering=False, run=run)[0]
        started = self.clock()
        left = self.send(leaving)
        self.case("webhook: leaving batch accepted", ACCEPTED, [left], left.ok, started)
        self.latency_case()
        return self.cases

    def latency_case(self) -> None:
        budget = self.webhook.max_latency_ms
        expected = f"every accepted message answered within {budget:g} ms"
        if not self.accepted:
            self.cases.append(
                CaseResult(
                    f"webhook: answers within {budget:g} ms",
                    WEBHOOK,
                    "skip",
                    expected,
                    "no message was accepted",
                )
            )
            return
        slowest = max(self.accepted, key=lambda o: o.latency_ms)
        passed = slowest.latency_ms <= budget
        self.cases.append(
            CaseResult(
                name=f"webhook: answers within {budget:g} ms",
                group=WEBHOOK,
                status="pass" if passed else "fail",
                expected=expected,
                actual=f"slowest {slowest.latency_ms:.0f} ms",
                detail=""
                if passed
                else "Amplitude times out slow answers and retries them, "
                "which can deliver a message twice",
                requests=[request_record(slowest)],
            )
        )


def run_webhook_check(
    client: httpx.Client,
    destination: WebhookDestination,
    options: CheckOptions,
    webhook: WebhookCheckOptions,
    *,
    clock: Clock = time.perf_counter,
) -> CheckRun:
    """Run the webhook cases against ``destination``; never raises for what it answers."""
    suite = _WebhookSuite(client, destination, options, webhook, clock)
    cases = suite.execute()
    return CheckRun(
        run_id=options.run_id,
        target=destination.scrub(redact_url(destination.url)),
        mode=WEBHOOK,
        label=f"{COHORT_NAME} ({suite.cohort_id})",
        users=len(options.users),
        cases=cases,
    )
