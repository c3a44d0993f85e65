"""Send one request once, timed, and describe it as an :class:`Outcome` row.

The one timed send behind ``mock`` (list and property calls), ``check`` and webhook messages:
what came back (or why nothing did), its latency, the scrubbed answer excerpt and the row's
verdict against ``--expect``. What an answer means is the request kind's to say
(:meth:`Sendable.read_answer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import httpx

from cohortctl.http.client import answer_excerpt, send_held
from cohortctl.http.har import redact_url
from cohortctl.http.outcomes import Outcome

Clock = Callable[[], float]
BODY_KEEP = 2000  # characters of each answer kept in an Outcome


class Target(Protocol):
    """Where a request goes: its deadline, its success statuses, how its secrets are hidden."""

    @property
    def timeout(self) -> float: ...

    def is_success(self, status: int) -> bool: ...

    def scrub(self, text: str) -> str: ...


T = TypeVar("T", bound=Target, contravariant=True)


class Sendable(Protocol[T]):
    """A request exactly as it goes on the wire (headers may hold secrets), and how its row
    reads an answer from a target of type ``T``."""

    @property
    def call(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    def row_extra(self) -> dict[str, Any]:
        """The facts of the request its row keeps (``ids``...)."""
        ...

    def read_answer(self, target: T, response: httpx.Response) -> tuple[str, dict[str, Any]]:
        """What an answer means, and the facts of it the row keeps besides the status."""
        ...


Kind = TypeVar("Kind", bound=Target)


def send_once(
    client: httpx.Client,
    target: Kind,
    request: Sendable[Kind],
    *,
    expect: int | None = None,
    clock: Clock = time.perf_counter,
) -> tuple[Outcome, str]:
    """Send ``request`` once: its row and the answer's text (empty without an answer).

    The row's ``extra`` holds the request's facts, ``expected``, ``passed`` (the ``expect``
    status came back, else a success of the target) and the answer's facts.
    """
    shown_url = target.scrub(redact_url(request.url))
    extra = request.row_extra()
    if expect is not None:
        extra["expected"] = expect
    started = clock()
    try:
        response = send_held(
            client,
            request.method,
            request.url,
            headers=request.headers,
            content=request.content,
            timeout=target.timeout,
        )
    except httpx.TransportError as exc:
        failed = Outcome.unanswered(
            exc,
            call=request.call,
            method=request.method,
            url=shown_url,
            latency_ms=(clock() - started) * 1000,
            scrub=target.scrub,
            extra=extra,
        )
        return failed, ""
    latency = (clock() - started) * 1000
    status = response.status_code
    passed = status == expect if expect is not None else target.is_success(status)
    extra["passed"] = passed
    meaning, facts = request.read_answer(target, response)
    extra.update(facts)
    if expect is not None and not passed:
        meaning += f" (expected {expect})"
    answered = Outcome(
        call=request.call,
        method=request.method,
        url=shown_url,
        status=status,
        meaning=meaning,
        latency_ms=round(latency, 1),
        body=answer_excerpt(response, target.scrub, BODY_KEEP),
        retry_after=response.headers.get("Retry-After"),
        extra=extra,
    )
    return answered, response.text
