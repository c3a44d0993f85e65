"""The requests of a conformance run: pacing, sending again after a 429 as Amplitude would,
the burst, and the test data each accepted request leaves behind (removed by the cleanup).

A case's request answered 429 is sent again after its ``Retry-After`` (at most
:data:`THROTTLE_RETRIES` times, each wait capped): a rate limit is not a broken contract, and
every attempt is in the case's requests. The cleanup also sends again after a 5xx or no answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from cohortctl.http.once import send_once
from cohortctl.http.outcomes import Outcome
from cohortctl.partner import mock, payloads
from cohortctl.partner.conformance.answers import describe_answer, request_record
from cohortctl.partner.conformance.run import CheckRun
from cohortctl.partner.destination import Destination
from cohortctl.partner.mock import MockSpec, PreparedRequest, Step
from cohortctl.partner.pacing import pacer_for
from cohortctl.retry import server_wait

Clock = Callable[[], float]
Sleep = Callable[[float], None]

BURST_CONCURRENCY = 32
BURST_BUDGET_S = 30.0  # no request of a burst starts later than this after the first
THROTTLE_RETRIES = 3  # a case's request is sent again after a 429, as Amplitude would
CLEANUP_ATTEMPTS = 3  # cleanup requests are also sent again after a 5xx or no answer
MAX_RETRY_WAIT_S = 10.0  # the longest Retry-After honoured


@dataclass
class Sent:
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
        text = describe_answer(self.outcome)
        if self.throttled:
            text += f" (after {len(self.throttled)} × 429)"
        return text


def retry_wait(outcome: Outcome, attempt: int) -> float:
    """Seconds to wait before retry ``attempt``: Retry-After or X-Ratelimit-Reset (capped),
    else 1, 2, 4 s."""
    asked = server_wait(outcome.retry_after, outcome.extra.get("x_ratelimit_reset"))
    if asked is not None:
        return min(asked, MAX_RETRY_WAIT_S)
    return min(float(2 ** (attempt - 1)), MAX_RETRY_WAIT_S)


@dataclass
class CheckTraffic:
    """Sends one run's requests to one destination and tracks the test data they leave."""

    client: httpx.Client
    destination: Destination
    spec: MockSpec
    clock: Clock = time.perf_counter
    sleep: Sleep = time.sleep
    in_list: set[str] = field(default_factory=set)  # users the run's list may hold
    trait_set: set[str] = field(default_factory=set)  # users whose trait may be true
    met: list[Outcome] = field(default_factory=list)  # every answer (for unclassified statuses)

    def __post_init__(self) -> None:
        # Not for the burst: it tests throttling.
        self.pacer = pacer_for(self.destination.rate_limit)

    def prepare(
        self,
        call: str,
        ids: Sequence[str],
        list_id: str | None,
        *,
        member: bool = True,
        destination: Destination | None = None,
    ) -> list[PreparedRequest]:
        """The requests of one call for ``ids`` (to ``destination``, default the run's)."""
        step = Step(call, tuple(ids), member)
        return mock.prepare(destination or self.destination, step, self.spec, list_id)

    def send(self, request: PreparedRequest, ids: Sequence[str], *, tracked: bool = True) -> Sent:
        """Send once, and again after a 429 as Amplitude would (Retry-After, bounded)."""
        throttled: list[Outcome] = []
        while True:
            if self.pacer is not None:
                self.sleep(self.pacer.reserve())
            outcome, _ = send_once(self.client, self.destination, request, clock=self.clock)
            if outcome.status != 429 or len(throttled) >= THROTTLE_RETRIES:
                break
            throttled.append(outcome)
            self.sleep(retry_wait(outcome, len(throttled)))
        sent = Sent(request, outcome, tuple(ids), tracked, throttled)
        self.met += [*throttled, outcome]
        self._track(sent)
        return sent

    def _track(self, sent: Sent) -> None:
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

    def burst(self, request: PreparedRequest, ids: Sequence[str], count: int) -> list[Sent]:
        """``count`` copies of ``request`` at once, unpaced, within :data:`BURST_BUDGET_S`."""
        deadline = self.clock() + BURST_BUDGET_S

        def one(_: int) -> Outcome | None:
            if self.clock() > deadline:
                return None
            return send_once(self.client, self.destination, request, clock=self.clock)[0]

        with ThreadPoolExecutor(min(count, BURST_CONCURRENCY), "cohortctl-burst") as pool:
            outcomes = list(pool.map(one, range(count)))
        sent = [Sent(request, o, tuple(ids), True) for o in outcomes if o is not None]
        self.met += [s.outcome for s in sent]
        for item in sent:
            self._track(item)
        return sent

    def clean_up(self, run: CheckRun) -> None:
        """Remove whatever test data the run may have left (honouring Retry-After); the
        requests go to ``run.cleanup``, what could not be removed to ``run.leftovers``."""
        if self.in_list and run.list_id is not None:
            ids = sorted(self.in_list)
            ok = self._patiently(run, payloads.LIST_REMOVE, ids, member=True)
            if not ok:
                run.leftovers.append(f"{len(ids)} user(s) in list {run.list_id}")
        if self.trait_set:
            ids = sorted(self.trait_set)
            call = (
                payloads.IDENTIFY_BATCH
                if self.destination.has_call(payloads.IDENTIFY_BATCH)
                else payloads.IDENTIFY
            )
            ok = self._patiently(run, call, ids, member=False)
            if not ok:
                run.leftovers.append(f"trait {run.label!r} true on {len(ids)} user(s)")

    def _patiently(self, run: CheckRun, call: str, ids: Sequence[str], *, member: bool) -> bool:
        requests = self.prepare(call, ids, run.list_id, member=member)
        all_ok = True
        for request in requests:
            for attempt in range(1, CLEANUP_ATTEMPTS + 1):
                sent = self.send(request, request.user_ids)
                run.cleanup += sent.records()
                if sent.outcome.ok:
                    break
                retryable = sent.outcome.status is None or sent.outcome.status >= 500
                if not retryable or attempt == CLEANUP_ATTEMPTS:
                    all_ok = False
                    break
                self.sleep(retry_wait(sent.outcome, attempt))
        return all_ok
